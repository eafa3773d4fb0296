"""Inpainting with unCLIP: fill a masked region of an image so it fits the rest and a caption (or the image).

Not in the paper, whose decoder was not trained for it (GLIDE's inpainting model was); RePaint (Lugmayr et al.,
2022; ``unclip.diffusion.inpainting``) makes any trained decoder and upsampler inpaint as they are. Each stage
runs RePaint at its own resolution with the image resized to it, so the last stage returns the unmasked pixels
exactly. The decoder's z_i comes from the prior given the caption (an edit: "a red circle and a green square"
with the square masked), or, with no caption, from CLIP's embedding of the image itself (a repair: the hole is
filled with what CLIP saw there).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from unclip.diffusion import generators_from_seeds
from unclip.diffusion.inpainting import sample_repaint
from unclip.pipeline.pipeline import UnCLIPPipeline, from_pil, rgb_image

ImageLike = Image.Image | np.ndarray | str | Path


def mask_image(mask: ImageLike) -> Image.Image:
    """A mask file, PIL image or array as a mode-L image, 255 where the image is to be filled.

    Bright pixels are filled (diffusers' convention). A mask with transparency is read by its alpha instead:
    transparent pixels are filled (the convention of OpenAI's image-edit API, where the mask is the image with
    the region erased). Arrays: nonzero is filled.
    """
    if isinstance(mask, (str, Path)):
        try:
            with Image.open(mask) as im:
                im.load()
                mask = im.copy()
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read mask {str(mask)!r}: {err}") from err
    if isinstance(mask, np.ndarray):
        if mask.ndim != 2:
            raise ValueError(f"a mask array must be (H, W), got shape {mask.shape}")
        return Image.fromarray(np.where(mask != 0, 255, 0).astype(np.uint8), "L")
    if not isinstance(mask, Image.Image):
        raise ValueError(f"expected a mask file, PIL image or array, got {type(mask).__name__}")
    if mask.mode == "P" and "transparency" in mask.info:
        mask = mask.convert("RGBA")
    if mask.mode in ("RGBA", "LA", "PA"):
        alpha = np.asarray(mask.getchannel("A"))
        if (alpha < 255).any():
            return Image.fromarray(np.where(alpha < 128, 255, 0).astype(np.uint8), "L")
    grey = np.asarray(mask.convert("L"))
    return Image.fromarray(np.where(grey >= 128, 255, 0).astype(np.uint8), "L")


def box_mask(size: tuple[int, int], box: Sequence[float]) -> Image.Image:
    """A mask of ``size`` (width, height) filling the box ``(x0, y0, x1, y1)`` given as fractions of the image."""
    if len(box) != 4:
        raise ValueError(f"a box is x0,y0,x1,y1, got {len(box)} numbers")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise ValueError(f"a box needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (fractions), got {tuple(box)}")
    w, h = size
    top, left = round(y0 * h), round(x0 * w)
    arr = np.zeros((h, w), np.uint8)
    arr[top : max(round(y1 * h), top + 1), left : max(round(x1 * w), left + 1)] = 255  # at least one pixel
    return Image.fromarray(arr, "L")


ANCHORS = ("center", "left", "right", "top", "bottom")


def outpaint_canvas(image: ImageLike, scale: float, anchor: str = "center") -> tuple[Image.Image, Image.Image]:
    """Outpainting as inpainting: the image shrunk by ``scale`` onto a square canvas, and the mask of the rest.

    The models draw square images, so extending a picture means zooming out: the image (centre-cropped to a square,
    as every input is) keeps ``scale`` of the canvas side, placed at ``anchor`` ("left" leaves room on the right),
    and everything around it is filled. Returns (canvas, mask), both the cropped image's size.
    """
    if not 0 < scale < 1:
        raise ValueError(f"the outpainting scale must be in (0, 1), got {scale!r}")
    if anchor not in ANCHORS:
        raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    image = rgb_image(image)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    inner = max(1, round(side * scale))
    room = side - inner
    x = {"left": 0, "right": room}.get(anchor, room // 2)
    y = {"top": 0, "bottom": room}.get(anchor, room // 2)
    # The border starts as the image's mean colour: RePaint replaces it, but a neutral start keeps CLIP's view of
    # the canvas (the repair's z_i) close to the picture's.
    mean = tuple(int(v) for v in np.asarray(square).reshape(-1, 3).mean(0).round())
    canvas = Image.new("RGB", (side, side), mean)
    canvas.paste(square.resize((inner, inner), Image.Resampling.LANCZOS), (x, y))
    mask = np.full((side, side), 255, np.uint8)
    mask[y : y + inner, x : x + inner] = 0
    return canvas, Image.fromarray(mask, "L")


def fill_at(fill: Tensor, res: int) -> Tensor:
    """A (B, 1, R, R) fill mask (1: fill) at resolution ``res``. Going down, a pixel is filled when any part of it
    is (so a low-resolution stage never holds a pixel that is partly masked fixed); going up, nearest."""
    if fill.shape[-1] == res:
        return fill
    if res < fill.shape[-1]:
        return (F.interpolate(fill, size=(res, res), mode="area") > 0).to(fill.dtype)
    return F.interpolate(fill, size=(res, res), mode="nearest")


@torch.no_grad()
def inpaint_batch(
    pipe: UnCLIPPipeline, images: Tensor, fill: Tensor, prompts: Sequence[str] | None, seeds: Sequence[int], *,
    eta: float = 1.0, progress: bool = False, z_i: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """Inpaint a batch: ``images`` (B, 3, R, R) in [-1, 1] at the pipeline's output size R, ``fill`` (B, 1, R, R)
    with 1 where to generate, one caption per image (None or "" for the image's own z_i) and one seed each.
    ``z_i`` (B, D), when given, is decoded instead of the prior's sample (the captions still condition the
    decoder): :func:`text_diff_embeddings` makes one that edits the image's own.

    Returns (B, 3, R, R), equal to ``images`` where ``fill`` is 0. ``pipe.settings.inpaint_resample`` and
    ``inpaint_jump`` shape RePaint's path; ``eta`` is its DDIM noise (1: DDPM steps, as RePaint).
    """
    res = pipe.resolution
    b = images.shape[0]
    if images.shape != (b, 3, res, res) or fill.shape != (b, 1, res, res):
        raise ValueError(f"images must be (B, 3, {res}, {res}) and fill (B, 1, {res}, {res}); got "
                         f"{tuple(images.shape)} and {tuple(fill.shape)}")  # fmt: skip
    if len(seeds) != b or (prompts is not None and len(prompts) != b):
        raise ValueError(f"need one seed (and caption) per image: {b} images, {len(seeds)} seeds")
    s = pipe.settings
    images, fill = images.to(pipe.device).float(), (fill.to(pipe.device) > 0.5).float()
    gens = generators_from_seeds(seeds)

    def repaint(at: int):
        known = images if at == res else F.interpolate(images, size=(at, at), mode="bicubic", antialias=True)
        return functools.partial(sample_repaint, known=known.clamp(-1, 1), keep=1 - fill_at(fill, at), eta=eta,
                                 resample=s.inpaint_resample, jump=s.inpaint_jump, progress=progress)  # fmt: skip

    captions = [p or "" for p in (prompts or [""] * b)]
    with pipe.autocast():
        text = drop = None
        if any(c.strip() for c in captions):
            if not all(c.strip() for c in captions):
                raise ValueError("give every image a caption, or none (the images' own z_i)")
            text, drop = pipe.encode_text(captions)
        if z_i is None:  # without captions CLIP sees the whole image at its own size, the masked region included
            z_i = pipe.clip.encode_image(images) if text is None else pipe.sample_z_i(text, drop, gens, s)
        z_i = z_i.to(pipe.device).float()
        dec_res = pipe.decoder.config.resolution
        low = pipe.decode(z_i, gens, text=text, drop_text=drop, s=s, sampler=repaint(dec_res)).float()
        return pipe.upsample(low, gens, s, sampler_at=repaint).float()


@torch.no_grad()
def text_diff_embeddings(
    pipe: UnCLIPPipeline, images: Tensor, sources: Sequence[str], targets: Sequence[str], theta: float = 0.5
) -> Tensor:
    """The images' own z_i turned toward their caption's change, §3.3's slerp(z_i, z_d, θ) with
    z_d = norm(z_t(target) − z_t(source)): what an edit asks, in CLIP space, starting from what the image is.
    Inpainting from it keeps what the masked region held (the shape) and changes what the captions change."""
    from unclip.pipeline.manipulations import slerp, text_diff_direction

    if not 0 < theta <= 1:
        raise ValueError(f"theta must be in (0, 1], got {theta}")
    if any(not t.strip() for t in [*sources, *targets]):
        raise ValueError("a text-diff edit needs a non-empty source and target caption")
    with pipe.autocast():
        z_img = pipe.clip.encode_image(images.to(pipe.device)).float()
        return slerp(z_img, text_diff_direction(pipe, z_img, list(sources), list(targets)).float(), theta)


@torch.no_grad()
def inpaint(
    pipe: UnCLIPPipeline, image: ImageLike, mask: ImageLike, prompt: str = "", n: int = 4, *, eta: float = 1.0,
    seed: int = 0, progress: bool = False, source: str | None = None, theta: float = 0.5,
) -> Tensor:  # fmt: skip
    """``n`` fills of the masked region of one image, (n, 3, R, R) in [-1, 1] at the pipeline's output size.

    ``mask`` is white (or transparent) where to fill (:func:`mask_image`) and must have the image's size: both are
    resized and centre-cropped alike. ``prompt`` describes the whole image wanted; empty uses the image's own z_i.
    With ``source``, a caption of the image as it is, z_i is the image's own moved toward ``prompt`` by
    :func:`text_diff_embeddings` instead of the prior's sample (on the bundled model: 0.79 of edits against 0.50).
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    mask_l, image = mask_image(mask), rgb_image(image)  # each file read once
    if image.size != mask_l.size:
        (mw, mh), (w, h) = mask_l.size, image.size
        raise ValueError(f"the mask is {mw}x{mh} but the image is {w}x{h}")
    res = pipe.resolution
    x = from_pil([image], res)
    fill = (from_pil([mask_l.convert("RGB")], res)[:, :1] > 0).float()
    if not bool(fill.any()):
        raise ValueError("the mask selects nothing to fill (white or transparent pixels are filled)")
    seeds = [seed + k for k in range(n)]
    z_i = None
    if source is not None:
        if not prompt.strip():
            raise ValueError("a text-diff edit (source) needs the target caption as the prompt")
        z_i = text_diff_embeddings(pipe, x, [source], [prompt], theta).expand(n, -1)
    return inpaint_batch(pipe, x.expand(n, -1, -1, -1), fill.expand(n, -1, -1, -1), [prompt] * n, seeds, eta=eta,
                         progress=progress, z_i=z_i)  # fmt: skip


__all__ = [
    "box_mask", "fill_at", "inpaint", "inpaint_batch", "mask_image", "outpaint_canvas",
    "text_diff_embeddings",
]  # fmt: skip
