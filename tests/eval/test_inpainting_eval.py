"""The inpainting evaluation, checked with stand-in inpainters whose answers are known, and once on a tiny stack."""

import dataclasses
from types import SimpleNamespace

import pytest

from unclip.data.shapes.batch import scenes_tensor
from unclip.data.shapes.scene import SIZES
from unclip.eval import inpainting as ev
from unclip.pipeline import SamplingSettings
from unclip.pipeline import inpainting as ip

RES = 64


def test_cases_mask_the_second_object_only_and_recolour_it():
    cases = ev.edit_cases(12, RES)
    for c in cases:
        a, b = c["scene"].objects
        ea, eb = c["edited"].objects
        assert ea == a and dataclasses.replace(eb, colour=b.colour) == b and eb.colour not in (a.colour, b.colour)
        article = "an" if eb.colour == "orange" else "a"
        assert c["caption"].endswith(f" {a.shape} and {article} {eb.colour} {b.shape}")
        was = "an" if b.colour == "orange" else "a"
        assert c["source_caption"].endswith(f" {a.shape} and {was} {b.colour} {b.shape}")
        fill = c["fill"][0]

        def frame(o):
            h = SIZES[o.size] / 2
            return slice(round((o.y - h) * RES), round((o.y + h) * RES)), slice(round((o.x - h) * RES),
                                                                                 round((o.x + h) * RES))  # fmt: skip

        assert fill[frame(b)].all() and not fill[frame(a)].any()


class _Stand:
    """A pipeline stand-in: inpainting answers with ``answer(images, fill, captions)``; text-to-image with renders
    of the edited scenes (a perfect generator)."""

    resolution = RES

    def __init__(self, cases):
        self.settings = SamplingSettings()
        self.cases = {c["caption"]: c for c in cases}

    def __call__(self, captions, seed):
        return SimpleNamespace(tensors=scenes_tensor([self.cases[c]["edited"] for c in captions], RES))


@pytest.mark.parametrize("oracle", ["edit", "copy"])
def test_rates_follow_what_the_inpainter_draws(monkeypatch, oracle):
    n = 8
    cases = ev.edit_cases(n, RES)
    by_image = {c["caption"]: c for c in cases}
    resamples = []

    def answer(pipe, images, fill, captions, seeds, z_i=None):
        resamples.append(pipe.settings.inpaint_resample)
        if oracle == "copy" or captions is None:  # a repair by copying the source back is perfect
            return images
        edited = scenes_tensor([by_image[c]["edited"] for c in captions], RES)
        return images * (1 - fill) + edited * fill  # the edited object drawn into the hole, nothing else

    monkeypatch.setattr(ip, "inpaint_batch", answer)
    sources_seen = []
    monkeypatch.setattr(ip, "text_diff_embeddings", lambda pipe, im, src, dst, theta: sources_seen.extend(src))
    out = ev.inpainting_rates(_Stand(cases), n=n, batch_size=3, resample=6)
    assert out["repair"]["rate"] == 1.0 and out["max_change_outside"] == 0.0
    assert out["edit"]["rate"] == (1.0 if oracle == "edit" else 0.0)
    assert out["edit"]["categories"]["colour_attribution"] == (1.0 if oracle == "edit" else 0.0)
    assert out["text_to_image"]["rate"] == 1.0
    assert out["edit_textdiff"]["rate"] == out["edit"]["rate"]  # the stand-in ignores z_i
    assert sources_seen == [c["source_caption"] for c in cases]  # the text diff starts from the scene as it is
    assert sorted(set(resamples)) == [1, 6]  # RePaint as asked, and the plain-replacement baseline


def test_a_change_outside_the_mask_is_reported(monkeypatch):
    monkeypatch.setattr(ip, "inpaint_batch", lambda pipe, images, fill, captions, seeds, z_i=None: images + 0.25)
    out = ev.inpainting_rates(_Stand(ev.edit_cases(2, RES)), n=2, runs=("edit", "repair"))
    assert out["max_change_outside"] == pytest.approx(0.25) and set(out) & set(ev.RUNS) == {"edit", "repair"}
    with pytest.raises(ValueError, match="runs must be some of"):
        ev.inpainting_rates(_Stand([]), n=2, runs=("edits",))


def test_on_a_tiny_stack_the_source_pixels_survive():
    from tiny_stack import tiny_pipeline

    pipe = tiny_pipeline()
    pipe.settings = dataclasses.replace(pipe.settings, inpaint_resample=2, inpaint_jump=1)
    out = ev.inpainting_rates(pipe, n=2, runs=("edit", "repair"))
    assert out["max_change_outside"] == 0.0 and out["resample"] == 2 and out["jump"] == 1
    assert set(out) >= {"edit", "repair"} and pipe.settings.inpaint_resample == 2  # settings restored
