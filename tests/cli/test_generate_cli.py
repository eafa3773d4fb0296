"""unclip generate / vary / interpolate / textdiff on a tiny saved model folder."""

import json

import pytest
from PIL import Image

from unclip.cli.main import main


def test_generate_writes_images_sidecars_and_a_contact_sheet(model, tmp_path):
    from unclip.data.shapes import PROMPT_SUITE

    prompt = PROMPT_SUITE[0].text
    out = tmp_path / "gen"
    assert main(["generate", prompt, "--n", "2", "--seed", "5", "--model", str(model), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["contact_sheet.png", "image_000.json", "image_000.png", "image_001.json", "image_001.png"]
    side = json.loads((out / "image_001.json").read_text())
    assert side["prompt"] == prompt and side["seed"] == 6 and side["category"] == PROMPT_SUITE[0].category
    assert side["requirement"] == PROMPT_SUITE[0].requirement.to_json()
    assert Image.open(out / "image_000.png").size == (32, 32)


def test_manipulation_commands(model, tmp_path):
    src = tmp_path / "src"
    assert main(["generate", "a red circle", "--n", "2", "--model", str(model), "--out", str(src)]) == 0
    a, b = str(src / "image_000.png"), str(src / "image_001.png")
    vary = [
        "vary",
        a,
        "--n",
        "3",
        "--set",
        "variation_structure=4",
        "--model",
        str(model),
        "--out",
        str(tmp_path / "v"),
    ]
    assert main(vary) == 0
    assert len(list((tmp_path / "v").glob("variation_*.png"))) == 3
    side = json.loads((tmp_path / "v" / "variation_002.json").read_text())  # the settings the run used, as generate's
    assert (
        side["seed"] == 2 and side["settings"]["variation_structure"] == 4 and "inversion_strength" in side["settings"]
    )
    assert main(["interpolate", a, b, "--frames", "3", "--model", str(model), "--out", str(tmp_path / "i")]) == 0
    frames = [json.loads((tmp_path / "i" / f"frame_{k:03d}.json").read_text())["theta"] for k in range(3)]
    assert frames == [0.0, 0.5, 1.0]
    args = ["textdiff", a, "--from", "a red circle", "--to", "a blue circle", "--frames", "2"]
    assert main([*args, "--model", str(model), "--out", str(tmp_path / "t")]) == 0
    side = json.loads((tmp_path / "t" / "frame_001.json").read_text())
    assert side["theta"] == 0.5 and side["settings"]["decoder_guidance_image"] == 3.0


def test_user_mistakes_get_one_line_and_leave_nothing_behind(model, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    out = tmp_path / "v"
    assert main(["vary", str(bad), "--model", str(model), "--out", str(out)]) == 2
    assert "cannot read image" in capsys.readouterr().err and not out.exists()
    assert list(tmp_path.iterdir()) == [bad]  # no temporary folder either
    assert main(["generate", "a star", "--model", str(tmp_path), "--out", str(out)]) == 2
    assert "no pipeline.json" in capsys.readouterr().err
    assert main(["generate", "a star", "--n", "0", "--model", str(model), "--out", str(out)]) == 2
    assert main(["generate", "a star", "--decoder-steps", "0", "--model", str(model), "--out", str(out)]) == 2
    assert "decoder_steps must be an integer" in capsys.readouterr().err


def test_set_changes_a_sampling_setting_for_one_run_and_is_validated(model, tmp_path, capsys):
    out = tmp_path / "g"
    args = ["generate", "a red circle", "--model", str(model), "--out", str(out)]
    assert main([*args, "--set", "z_source=text", "--set", "decoder_guidance=2.5"]) == 0
    settings = json.loads((out / "image_000.json").read_text())["settings"]
    assert settings["z_source"] == "text"
    assert settings["decoder_guidance_image"] == settings["decoder_guidance_text"] == 2.5
    assert json.loads((model / "pipeline.json").read_text())["settings"].get("z_source", "prior") == "prior"
    mistakes = [("decoder_steps=many", "is not an integer"), ("nonsense=1", "unknown setting"),
                ("upsampler_strength=0", "upsampler_strength must be"), ("z_source", "KEY=VALUE")]  # fmt: skip
    for bad, message in mistakes:
        assert main([*args, "--set", bad]) == 2
        assert message in capsys.readouterr().err


def test_inpaint_command_keeps_the_unmasked_pixels_and_refuses_bad_masks(model, tmp_path):
    import numpy as np

    src = tmp_path / "src.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "inp"
    args = ["inpaint", str(src), "--box", "0.5,0,1,0.5", "--prompt", "a red circle", "--n", "2", "--resample", "2",
            "--model", str(model), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    side = json.loads((out / "inpainting_001.json").read_text())
    assert side["seed"] == 1 and side["resample"] == 2 and side["box"] == "0.5,0,1,0.5"
    got, source = np.asarray(Image.open(out / "inpainting_000.png")), np.asarray(Image.open(src))
    assert np.array_equal(got[16:], source[16:]) and np.array_equal(got[:, :16], source[:, :16])
    assert not np.array_equal(got[:16, 16:], source[:16, 16:])
    Image.new("L", (20, 20), 255).save(tmp_path / "small_mask.png")
    bad = tmp_path / "bad"
    assert main(["inpaint", str(src), "--mask", str(tmp_path / "small_mask.png"), "--model", str(model),
                 "--out", str(bad)]) == 2  # fmt: skip
    assert not bad.exists()
    diff = tmp_path / "diff"
    assert main(["inpaint", str(src), "--box", "0,0,0.5,0.5", "--prompt", "a blue circle", "--from", "a red circle",
                 "--n", "1", "--model", str(model), "--out", str(diff)]) == 0  # fmt: skip
    side = json.loads((diff / "inpainting_000.json").read_text())
    assert side["from"] == "a red circle" and side["theta"] == 0.5
    zoom = tmp_path / "zoom"
    assert main(["inpaint", str(src), "--zoom-out", "0.5", "--anchor", "left", "--n", "1", "--model", str(model),
                 "--out", str(zoom)]) == 0  # fmt: skip
    assert json.loads((zoom / "inpainting_000.json").read_text())["zoom_out"] == {"scale": 0.5, "anchor": "left"}
    shrunk = np.asarray(Image.open(src).resize((16, 16), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(Image.open(zoom / "inpainting_000.png"))[8:24, :16], shrunk)
    with pytest.raises(SystemExit):  # --mask and --box exclude each other
        main(["inpaint", str(src), "--mask", "m.png", "--box", "0,0,1,1"])
