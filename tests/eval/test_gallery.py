import json

from tiny_stack import tiny_pipeline

from unclip.cli.main import main


def test_demo_gallery_on_a_tiny_stack(tmp_path, capsys):
    tiny_pipeline().save_pretrained(tmp_path / "m")
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tmp_path / "m"), "--out", str(out), "--per-category", "1"]) == 0
    page = (out / "index.html").read_text()
    for title in (
        "Text to image",
        "Variations (§3.1)",
        "Interpolation (§3.2)",
        "Text diff (§3.3)",
        "Inpainting (RePaint)",
        "Probing (§4)",
    ):
        assert title in page
    for name in (
        "prompt_05.png",
        "variation_3.png",
        "interpolation_4.png",
        "textdiff_3.png",
        "inpaint_2.png",
        "probe_3.png",
    ):
        assert (out / name).is_file() and name in page
    report = json.loads((out / "scores.json").read_text())
    assert report["images"] == 6 and set(report["scores"]) >= {"single_object", "overall"}
    assert "judge scores:" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left
