"""The manipulation rates, checked with stand-in decoders whose answers are known, and once on a tiny stack."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from unclip.data.shapes.batch import render_batch
from unclip.data.shapes.render import render
from unclip.data.shapes.scene import SceneGraph
from unclip.eval import manipulations as m
from unclip.pipeline import SamplingSettings
from unclip.pipeline import manipulations as pm

RES = 64
STACK = SimpleNamespace(
    decoder=SimpleNamespace(config=SimpleNamespace(resolution=32)), resolution=RES, settings=SamplingSettings()
)


def _serve(monkeypatch, images: torch.Tensor) -> None:
    """invert/decode stand-ins: decoding returns ``images`` in order, whatever the latents."""
    served = [0]

    def invert(pipe, x):
        return torch.ones(len(x), 4), torch.zeros(len(x), 3, 32, 32)

    def decode(pipe, z_i, x_T, seeds, eta, structure=None):
        start, served[0] = served[0], served[0] + len(z_i)
        return images[start : served[0]]

    monkeypatch.setattr(pm, "invert", invert)
    monkeypatch.setattr(pm, "decode_latents", decode)
    monkeypatch.setattr(pm, "text_diff_direction", lambda pipe, z, s, t: torch.ones(len(z), 4))


def test_a_faithful_variation_counts_only_when_it_differs_in_pixels(monkeypatch):
    _, truth = render_batch(6, RES)
    truth = truth.repeat_interleave(2, 0)
    noise = 0.04 * torch.sign(torch.randn(truth.shape, generator=torch.Generator().manual_seed(0)))
    _serve(monkeypatch, (truth + noise).clamp(-1, 1))
    varied = m.variation_rate(STACK, n=6, per_image=2, batch_size=4, min_change=0.01)
    assert varied["keeps_scene"] == 1.0 and varied["differs"] == 1.0 and varied["rate"] == 1.0
    # mean |change| in [0, 1] units: the ±0.04 noise in [-1, 1] units is 0.02 (a little less where clamped)
    expected = float(((truth + noise).clamp(-1, 1) - truth).abs().mean() / 2)
    assert varied["mean_change"] == pytest.approx(expected, rel=1e-4) and expected == pytest.approx(0.02, abs=1e-3)
    _serve(monkeypatch, truth)  # exact copies keep the scene but are not variations
    copies = m.variation_rate(STACK, n=6, per_image=2, batch_size=4, min_change=0.01)
    assert copies["keeps_scene"] == 1.0 and copies["differs"] == 0.0 and copies["rate"] == 0.0
    assert copies["mean_change"] == 0.0
    mixed = (truth + noise).clamp(-1, 1)
    mixed[6:] = truth[6:]  # the last three sources' variations are copies
    _serve(monkeypatch, mixed)
    table = m.variation_rate(STACK, n=6, per_image=2, batch_size=4, min_change=0.01)["verdicts"]
    assert table["faithful"] == "1" * 12 and table["variation"] == "1" * 6 + "0" * 6  # per variation, in order


def test_variations_of_other_scenes_lose_the_scene_graph(monkeypatch):
    _, others = render_batch(12, RES, split="test", seed=99)
    _serve(monkeypatch, others)
    wrong = m.variation_rate(STACK, n=6, per_image=2, batch_size=4)
    assert wrong["differs"] == 1.0 and wrong["keeps_scene"] < 0.5 and wrong["rate"] == wrong["keeps_scene"]


def _edited_images(n: int, seed: int, apply_edit: bool) -> tuple[torch.Tensor, list]:
    samples, _ = m._one_object_scenes(n, RES, "test", seed)
    edits = m._edits(samples, seed)
    images = []
    for s, (_, _, shape, colour) in zip(samples, edits, strict=True):
        obj = s.scene.objects[0]
        if apply_edit:
            obj = dataclasses.replace(obj, shape=shape, colour=colour)
        image = render(SceneGraph((obj,), s.scene.background), RES)
        images.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(images), edits


def test_edits_alternate_colour_and_shape_and_change_exactly_one():
    samples, _ = m._one_object_scenes(8, RES, "test", 0)
    for k, (s, (source, target, shape, colour)) in enumerate(zip(samples, m._edits(samples, 0), strict=True)):
        obj = s.scene.objects[0]
        assert source == f"a {obj.colour} {obj.shape}" and target == f"a {colour} {shape}"
        assert (colour != obj.colour, shape != obj.shape) == ((True, False) if k % 2 == 0 else (False, True))


def test_text_diff_rate_is_high_when_the_edit_shows_and_zero_when_nothing_changes(monkeypatch):
    edited, _ = _edited_images(10, 0, apply_edit=True)
    _serve(monkeypatch, edited)
    good = m.text_diff_rate(STACK, n=10, batch_size=4)
    assert good["rate"] >= 0.9 and good["colour"] >= 0.8 and good["shape"] >= 0.8
    table = good["verdicts"]  # per edit: colour edits at even positions, shape edits at odd ones
    assert set(table["colour"][1::2]) == {"-"} and set(table["shape"][::2]) == {"-"}
    assert table["edit"].count("1") / 10 == good["rate"] and table["colour"].count("1") / 5 == good["colour"]
    unchanged, _ = _edited_images(10, 0, apply_edit=False)
    _serve(monkeypatch, unchanged)
    bad = m.text_diff_rate(STACK, n=10, batch_size=4)
    assert bad["rate"] == 0.0 and bad["verdicts"]["edit"] == "0" * 10


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="max_theta"):
        m.text_diff_rate(STACK, n=2, max_theta=0.0)
    with pytest.raises(ValueError, match="per_image"):
        m.variation_rate(STACK, n=2, per_image=0)
    with pytest.raises(ValueError, match="eta must be in"):
        m.manipulations(STACK, n=2, eta=1.5)


def test_eval_manipulations_command_on_a_tiny_stack(tmp_path, capsys):
    import json

    from tiny_stack import FAST, tiny_pipeline

    from unclip.cli.main import main

    fast = dataclasses.replace(FAST, inversion_steps=3, inversion_refine=0, decoder_steps=3)
    tiny_pipeline(settings=fast).save_pretrained(tmp_path / "m")
    assert (
        main(["eval", "manipulations", "--model", str(tmp_path / "m"), "--n", "2", "--per-image", "1", "--eta", "0.5",
              "--min-change", "0.1", "--json"]) == 0
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert out["variations"]["eta"] == 0.5 and out["variations"]["min_change"] == 0.1
    assert out["variations"]["n_images"] == 2 and 0.0 <= out["variations"]["rate"] <= 1.0
    assert out["text_diffs"]["n"] == 2 and out["targets"] == {"variations": 0.9, "text_diffs": 0.7}
