"""Evaluations of a model stack: checked with stubs whose answers are known, and once on a tiny real stack."""

from types import SimpleNamespace

import pytest
import torch

from unclip.data.shapes.batch import render_batch
from unclip.eval import generation
from unclip.eval.generation import to_uint8


class StubStack:
    """Enough of UnCLIPPipeline for the evaluations: decode/upsample return chosen images."""

    def __init__(self, resolution=64, answer="truth", up_resolution=None):
        self.decoder = SimpleNamespace(config=SimpleNamespace(resolution=resolution))
        self.clip = SimpleNamespace(encode_image=lambda x: torch.zeros(x.shape[0], 4))
        self.device = torch.device("cpu")
        self.answer = answer
        self.upsamplers = [object()] if up_resolution else []
        self.resolution = up_resolution or resolution
        self._truth = None

    def decode(self, z_i, generators):
        n = z_i.shape[0]
        if self.answer == "blank":
            return torch.zeros(n, 3, self.decoder.config.resolution, self.decoder.config.resolution)
        start = self._served
        self._served += n
        return self._truth[start : start + n]

    def upsample(self, low, generators):
        start = self._served
        self._served += low.shape[0]
        return self._truth[start : start + low.shape[0]]


def test_decoder_reconstruction_scores_truth_as_faithful_and_blanks_as_not(monkeypatch):
    stack = StubStack()
    _, stack._truth = render_batch(12, 64)
    stack._served = 0
    perfect = generation.decoder_reconstruction(stack, n=12, batch_size=5)
    assert perfect["faithful"] == 1.0 and perfect["n"] == 12
    assert set(perfect["categories"]) >= {"single_object", "colours"}
    blank = generation.decoder_reconstruction(StubStack(answer="blank"), n=12, batch_size=5)
    assert blank["faithful"] == 0.0 and blank["overall"] == 0.0
    # Per-scene verdicts, in scene order: they reproduce every accuracy (over the scenes a category applies to).
    for result, mark in ((perfect, "1"), (blank, "0")):
        verdicts = result["verdicts"]
        assert verdicts["faithful"] == mark * 12
        for cat, summary in result["categories"].items():
            shown = verdicts[cat].replace("-", "")
            assert len(shown) == summary["n"] and shown == mark * summary["n"]


def test_upsampler_fidelity_of_a_perfect_upsampler_beats_bicubic():
    stack = StubStack(resolution=32, up_resolution=128)
    _, stack._truth = render_batch(6, 128)
    stack._served = 0
    scores = generation.upsampler_fidelity(stack, n=6, batch_size=4)
    assert scores["psnr"] > 60 and scores["ssim"] == pytest.approx(1.0, abs=1e-4)
    assert 15 < scores["bicubic_psnr"] < scores["psnr"] and scores["bicubic_ssim"] < 0.999
    with pytest.raises(ValueError, match="no upsampler"):
        generation.upsampler_fidelity(StubStack(), n=2)


class ChannelStats:
    """Per-channel means and standard deviations of uint8 NHWC images: a cheap stand-in for Inception features."""

    def __call__(self, images):
        x = torch.as_tensor(images).float().permute(0, 3, 1, 2) / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], dim=1).double().numpy()


def test_upsampler_fid_of_a_perfect_upsampler_is_zero_and_below_bicubic():
    scores = generation.upsampler_fidelity(_fresh_stack(), n=12, batch_size=4, features=ChannelStats())
    assert scores["fid"] == pytest.approx(0.0, abs=1e-8) and scores["bicubic_fid"] > 1e-6
    assert {"kid", "kid_std", "bicubic_kid", "bicubic_kid_std"} <= set(scores)
    assert "fid" not in generation.upsampler_fidelity(_fresh_stack(), n=12, batch_size=4)  # no features, no FID


def _fresh_stack():
    stack = StubStack(resolution=32, up_resolution=128)
    _, stack._truth = render_batch(12, 128)
    stack._served = 0
    return stack


def test_decoder_fid_is_zero_for_exact_reconstructions_and_positive_for_blanks():
    exact = StubStack()
    _, exact._truth = render_batch(6, 64)
    exact._served = 0
    assert generation.decoder_reconstruction(exact, n=6, features=ChannelStats())["fid"] == pytest.approx(0, abs=1e-8)
    blank = StubStack(answer="blank")
    scores = generation.decoder_reconstruction(blank, n=6, features=ChannelStats())
    assert scores["fid"] > 0.01
    # KID: the unbiased MMD² of the same features, over 50 half-size subsets (3 of 6) of each side
    from unclip.eval.kid import kid

    _, real = render_batch(6, 64)
    expected = kid(ChannelStats()(to_uint8(real)), ChannelStats()(to_uint8(torch.zeros_like(real))), subsets=50,
                   subset_size=3)  # fmt: skip
    assert (scores["kid"], scores["kid_std"]) == pytest.approx(expected, rel=1e-9)


def test_compositional_on_a_tiny_stack_counts_every_category():
    from tiny_stack import tiny_pipeline

    from unclip.data.shapes import CATEGORIES

    result = generation.compositional(tiny_pipeline(), per_category=1, images_per_prompt=2, batch_size=5)
    assert result["images"] == 12 and set(result["categories"]) == set(CATEGORIES)
    assert all(v["n"] == 2 and 0.0 <= v["accuracy"] <= 1.0 for v in result["categories"].values())
    mean = sum(v["accuracy"] for v in result["categories"].values()) / 6
    assert result["overall"] == pytest.approx(mean)
    assert result["reference_dalle2_geneval"]["overall"] == 0.52
    table = result["verdicts"]  # one character per image, in the suite's order: a category's images show only in it
    assert len(table["faithful"]) == 12
    for cat, v in result["categories"].items():
        shown = [c for c in table[cat] if c != "-"]
        assert len(shown) == 2 and shown.count("1") / 2 == v["accuracy"]


def test_eval_commands_run_on_a_model_folder(tmp_path, capsys):
    import json

    from tiny_stack import tiny_pipeline

    from unclip.cli.main import main

    tiny_pipeline().save_pretrained(tmp_path / "m")
    assert main(["eval", "decoder", "--model", str(tmp_path / "m"), "--n", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 2 and 0.0 <= out["faithful"] <= 1.0
    assert "fid" in out  # Inception features by default (--no-fid skips them)
    assert out["settings"]["upsampler_condition"] == "trained"  # the JSON records the sampling settings used
    args = ["eval", "upsampler", "--model", str(tmp_path / "m"), "--n", "2", "--no-fid", "--json"]
    assert main([*args, "--set", "upsampler_condition=clean"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "bicubic_psnr" in out and "fid" not in out and out["settings"]["upsampler_condition"] == "clean"
    assert main(args[:-1]) == 0
    assert "settings" not in capsys.readouterr().out  # the text output lists the figures only
