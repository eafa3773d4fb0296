import json

import pytest

from unclip.eval.evaluate_all import flatten


def test_flatten_keeps_numbers_under_dotted_keys_and_drops_the_rest():
    result = {
        "overall": 0.5, "ok": True, "name": "x", "items": [1, 2],
        "categories": {"single": {"accuracy": 1.0, "n": 4}, "deep": {"a": {"b": {"c": 1}}}},
        "reference_dalle2_geneval": {"overall": 0.52},
    }  # fmt: skip
    assert flatten(result) == {
        "overall": 0.5, "categories.single.accuracy": 1.0, "categories.single.n": 4,
    }  # fmt: skip


def test_eval_all_writes_one_report_ready_file_per_metric(tmp_path, capsys):
    import dataclasses

    from tiny_stack import FAST, tiny_pipeline

    from unclip.cli.main import main
    from unclip.eval.report import read_run

    fast = dataclasses.replace(FAST, inversion_steps=3, inversion_refine=0, decoder_steps=3)
    tiny_pipeline(settings=fast).save_pretrained(tmp_path / "m")
    out = tmp_path / "run"
    args = ["eval", "all", "--model", str(tmp_path / "m"), "--out", str(out), "--only", "decoder", "upsampler"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == ["decoder.json", "upsampler.json"]
    decoder = json.loads((out / "decoder.json").read_text())
    assert decoder["metric"] == "decoder" and decoder["faithful"] == decoder["details"]["faithful"]
    assert decoder["details"]["n"] == 24 and "categories.single_object.accuracy" in decoder
    run = read_run(out)  # what unclip report reads: the headline numbers are its table columns
    assert {m.metric for m in run.metrics} == {"decoder", "upsampler"}
    assert dict(next(m for m in run.metrics if m.metric == "upsampler").values)["psnr"] == pytest.approx(
        json.loads((out / "upsampler.json").read_text())["details"]["psnr"]
    )
    assert main([*args[:-2], "inpainting"]) == 0  # the quick size: 4 scenes
    inpainting = json.loads((out / "inpainting.json").read_text())
    assert inpainting["edit.rate"] == inpainting["details"]["edit"]["rate"] and inpainting["n"] == 4
    assert inpainting["max_change_outside"] == 0.0 and "text_to_image.categories.colour_attribution" in inpainting
    assert main([*args[:-2], "nonsense"]) == 2
    assert "unknown evaluation" in capsys.readouterr().err
