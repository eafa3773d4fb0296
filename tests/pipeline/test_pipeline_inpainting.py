"""Inpainting through the whole stack (tiny random models): masks in their conventions, unmasked pixels returned
exactly at the output size, seeds, and where z_i comes from."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_stack import tiny_pipeline

from unclip.pipeline import inpainting as ip


@pytest.fixture(scope="module")
def pipe():
    p = tiny_pipeline()
    p.settings = dataclasses.replace(p.settings, inpaint_resample=2, inpaint_jump=2)
    return p


def _image(size: int = 32, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_unmasked_pixels_come_back_exactly_and_the_hole_is_generated(pipe):
    image, mask = _image(), ip.box_mask((32, 32), (0.25, 0.25, 0.75, 0.5))
    out = ip.inpaint(pipe, image, mask, "a red circle", n=2, seed=3)
    assert out.shape == (2, 3, 32, 32)  # the upsampler's output size
    src = torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1
    hole = torch.zeros(32, 32, dtype=torch.bool)
    hole[8:16, 8:24] = True
    assert torch.equal(out[:, :, ~hole], src[:, ~hole].expand(2, -1, -1))
    assert (out[:, :, hole] - src[:, hole]).abs().mean() > 0.05  # the hole is not a copy of the source
    assert not torch.allclose(out[0, :, hole], out[1, :, hole])  # two seeds, two fills


def test_images_depend_on_their_seed_not_on_the_batch(pipe):
    x = ip.from_pil([_image()], 32)
    fill = torch.zeros(1, 1, 32, 32)
    fill[..., 4:20, 10:30] = 1
    pair = ip.inpaint_batch(pipe, x.expand(2, -1, -1, -1), fill.expand(2, -1, -1, -1), ["a", "a blue star"], [1, 2])
    alone = ip.inpaint_batch(pipe, x, fill, ["a blue star"], [2])
    assert torch.allclose(pair[1], alone[0], atol=1e-5)


def test_a_caption_samples_z_i_from_the_prior_and_none_takes_the_images_own(pipe, monkeypatch):
    x, fill = ip.from_pil([_image()], 32), torch.ones(1, 1, 32, 32)
    seen = {}
    real_decode = pipe.decode

    def decode(z_i, gens, **kw):
        seen["z_i"], seen["text"] = z_i, kw.get("text")
        return real_decode(z_i, gens, **kw)

    monkeypatch.setattr(pipe, "decode", decode)
    ip.inpaint_batch(pipe, x, fill, None, [0])
    assert torch.allclose(seen["z_i"], pipe.clip.encode_image(x)) and seen["text"] is None
    monkeypatch.setattr(pipe, "sample_z_i", lambda enc, empty, gens, s: torch.full_like(enc.embedding, 0.5))
    ip.inpaint_batch(pipe, x, fill, ["a red circle"], [0])
    assert torch.equal(seen["z_i"], torch.full_like(seen["z_i"], 0.5)) and seen["text"] is not None
    with pytest.raises(ValueError, match="every image a caption, or none"):
        ip.inpaint_batch(pipe, x.expand(2, -1, -1, -1), fill.expand(2, -1, -1, -1), ["a red circle", ""], [0, 1])


def test_mask_conventions():
    white = np.zeros((4, 6), np.uint8)
    white[1:3, 2:5] = 200
    assert np.array_equal(np.asarray(ip.mask_image(Image.fromarray(white))) > 0, white >= 128)
    rgba = np.full((4, 6, 4), 255, np.uint8)
    rgba[0, :, 3] = 0  # erased: to be filled, whatever the colour underneath
    filled = np.asarray(ip.mask_image(Image.fromarray(rgba, "RGBA"))) > 0
    assert filled[0].all() and not filled[1:].any()
    assert np.array_equal(np.asarray(ip.mask_image(np.eye(3))) > 0, np.eye(3) > 0)
    box = np.asarray(ip.box_mask((10, 20), (0.2, 0.5, 0.6, 1.0))) > 0
    assert box.sum() == 4 * 10 and box[10:, 2:6].all()


def test_low_resolution_stages_fill_every_pixel_the_hole_touches():
    fill = torch.zeros(1, 1, 8, 8)
    fill[..., 3, 3] = 1  # one pixel: its 2x2 block at half size
    low = ip.fill_at(fill, 4)
    assert low.sum() == 1 and low[0, 0, 1, 1] == 1
    assert torch.equal(ip.fill_at(low, 8)[0, 0, 2:4, 2:4], torch.ones(2, 2))


def test_bad_masks_are_refused(pipe, tmp_path):
    image = _image()
    with pytest.raises(ValueError, match="mask is 16x16 but the image is 32x32"):
        ip.inpaint(pipe, image, Image.new("L", (16, 16), 255))
    with pytest.raises(ValueError, match="selects nothing"):
        ip.inpaint(pipe, image, Image.new("L", (32, 32), 0))
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read mask"):
        ip.inpaint(pipe, image, tmp_path / "bad.png")
    for box in ((0.5, 0.1, 0.4, 0.9), (0, 0, 1, 1.5), (0.1, 0.2, 0.3)):
        with pytest.raises(ValueError, match="box"):
            ip.box_mask((32, 32), box)


@pytest.mark.parametrize(("anchor", "x", "y"), [("center", 15, 15), ("left", 0, 15), ("bottom", 15, 30)])
def test_outpainting_shrinks_the_image_onto_the_canvas_and_fills_the_rest(anchor, x, y):
    image = _image(size=60)
    wide = Image.new("RGB", (80, 60), "white")
    wide.paste(image, (10, 0))  # a non-square image is centre-cropped first, like every input
    canvas, mask = ip.outpaint_canvas(wide, 0.5, anchor)
    assert canvas.size == mask.size == (60, 60)
    kept = np.asarray(mask) == 0
    assert kept.sum() == 30 * 30 and kept[y : y + 30, x : x + 30].all()
    shrunk = np.asarray(image.resize((30, 30), Image.Resampling.LANCZOS))
    assert np.array_equal(np.asarray(canvas)[y : y + 30, x : x + 30], shrunk)
    border = np.asarray(canvas)[~kept]
    assert (border == border[0]).all()  # one neutral colour, replaced by the fill


def test_outpainting_refuses_bad_scales_and_anchors():
    for scale in (0, 1, 1.5, -0.2):
        with pytest.raises(ValueError, match="scale"):
            ip.outpaint_canvas(_image(), scale)
    with pytest.raises(ValueError, match="anchor"):
        ip.outpaint_canvas(_image(), 0.5, "middle")


def test_a_text_diff_edit_turns_the_images_own_z_i_toward_the_new_caption(pipe, monkeypatch):
    from unclip.pipeline.manipulations import slerp, text_diff_direction

    x = ip.from_pil([_image()], 32)
    z = ip.text_diff_embeddings(pipe, x, ["a red circle"], ["a blue circle"], 0.5)
    z_img = pipe.clip.encode_image(x)
    expected = slerp(z_img, text_diff_direction(pipe, z_img, ["a red circle"], ["a blue circle"]), 0.5)
    torch.testing.assert_close(z, expected)
    assert 0.5 < torch.nn.functional.cosine_similarity(z, z_img).item() < 0.9999  # turned, not replaced
    seen = {}
    real_decode = pipe.decode

    def decode(z_i, gens, **kw):
        seen["z_i"] = z_i
        return real_decode(z_i, gens, **kw)

    monkeypatch.setattr(pipe, "decode", decode)
    monkeypatch.setattr(pipe, "sample_z_i", lambda *a: pytest.fail("the prior must not run for a text-diff edit"))
    ip.inpaint(pipe, _image(), ip.box_mask((32, 32), (0, 0, 0.5, 0.5)), "a blue circle", n=2, source="a red circle")
    torch.testing.assert_close(seen["z_i"], expected.expand(2, -1))
    with pytest.raises(ValueError, match="target caption as the prompt"):
        ip.inpaint(pipe, _image(), ip.box_mask((32, 32), (0, 0, 0.5, 0.5)), "", source="a red circle")
    with pytest.raises(ValueError, match="theta"):
        ip.text_diff_embeddings(pipe, x, ["a"], ["b"], 0.0)
