"""Corruptions of the upsamplers' low-resolution conditioning (§2.1, App. C).

Training an upsampler on clean downsampled images teaches it to trust artefacts it will never see at
inference, where its input is a *generated* image. The paper corrupts the conditioning: Gaussian blur (kernel
3, σ 0.6) for 64→256, and the more diverse BSR degradation (Zhang et al. 2021, "Designing a practical
degradation model for deep blind image super-resolution") for 256→1024: blurs, resizes, noise and JPEG in a
random order. Every random choice comes from the sample's own generator, so a degradation is reproducible
from its seed and independent of the batch it is in.

Images are float tensors (B, 3, H, W) in [-1, 1].
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

DEGRADATIONS = ("none", "blur", "bsr")


def gaussian_kernel2d(sigma_x: float, sigma_y: float, theta: float, size: int) -> Tensor:
    """A normalized anisotropic Gaussian kernel of odd ``size``, rotated by ``theta`` radians."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    y, x = torch.meshgrid(r, r, indexing="ij")
    c, s = math.cos(theta), math.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = torch.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).float()


def blur(images: Tensor, kernel: Tensor) -> Tensor:
    """Convolve every channel with one 2-D kernel, reflecting at the borders."""
    k = kernel.to(images.dtype).to(images.device)
    pad = k.shape[-1] // 2
    c = images.shape[1]
    x = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(x, k.expand(c, 1, *k.shape), groups=c)


def downsample(images: Tensor, factor: int) -> Tensor:
    """Antialiased bicubic downsampling by an integer factor (the clean low-resolution view)."""
    h, w = images.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"image size {(h, w)} is not divisible by the factor {factor}")
    return F.interpolate(images, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)


def blur_corrupt(low_res: Tensor) -> Tensor:
    """App. C, first upsampler: Gaussian blur with kernel size 3 and σ 0.6 (deterministic)."""
    return blur(low_res, gaussian_kernel2d(0.6, 0.6, 0.0, 3))


def jpeg(image: Tensor, quality: int) -> Tensor:
    """JPEG round trip of one (3, H, W) image in [-1, 1] through Pillow."""
    arr = ((image.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return torch.from_numpy(out.copy()).permute(2, 0, 1).to(image.dtype).to(image.device) / 127.5 - 1


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _random_blur(x: Tensor, g: torch.Generator) -> Tensor:
    size = 2 * int(torch.randint(1, 6, (), generator=g)) + 1  # 3 … 11
    if float(torch.rand((), generator=g)) < 0.5:
        s = _uniform(g, 0.1, 2.8)
        k = gaussian_kernel2d(s, s, 0.0, size)
    else:
        k = gaussian_kernel2d(_uniform(g, 0.5, 4.0), _uniform(g, 0.5, 4.0), _uniform(g, 0.0, math.pi), size)
    return blur(x, k)


def _random_resize(x: Tensor, g: torch.Generator) -> Tensor:
    h, w = x.shape[-2:]
    scale = _uniform(g, 0.5, 1.5)
    mode = ("bilinear", "bicubic", "area")[int(torch.randint(0, 3, (), generator=g))]
    size = (max(4, round(h * scale)), max(4, round(w * scale)))
    y = F.interpolate(x, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return F.interpolate(y, size=(h, w), mode="bicubic", align_corners=False)


def _random_noise(x: Tensor, g: torch.Generator) -> Tensor:
    sigma = _uniform(g, 1 / 255, 25 / 255) * 2  # on the [0, 255] scale as BSR states, here in [-1, 1]
    noise = torch.randn(x.shape, generator=g).to(x.dtype).to(x.device)
    if float(torch.rand((), generator=g)) < 0.4:  # grey (luminance) noise, same for every channel
        noise = noise[:, :1].expand_as(noise)
    return x + sigma * noise


def _random_jpeg(x: Tensor, g: torch.Generator) -> Tensor:
    return jpeg(x[0], int(torch.randint(30, 96, (), generator=g)))[None]


def bsr_degrade(images: Tensor, factor: int, generators: Sequence[torch.Generator]) -> Tensor:
    """BSR: the high-resolution image → a degraded low-resolution one, ``factor`` times smaller.

    Per sample: two random blurs, a random resize, noise and JPEG in a random order, then the downsampling to
    the target size, then a last JPEG (the camera's), as in Zhang et al. (2021) §3.
    """
    if len(generators) != images.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {images.shape[0]}")
    out = []
    for img, g in zip(images, generators, strict=True):
        x = img[None]
        ops = [_random_blur, _random_blur, _random_resize, _random_noise, _random_jpeg]
        for i in torch.randperm(len(ops), generator=g).tolist():
            x = ops[i](x, g).clamp(-1, 1)
        x = downsample(x, factor)
        out.append(_random_jpeg(x.clamp(-1, 1), g)[0])
    return torch.stack(out)


def fixed_corruption(low_res: Tensor, kind: str) -> Tensor:
    """The deterministic part of degradation ``kind`` applied to an already downsampled image: App. C's blur for
    ``"blur"``, nothing for ``"none"``, and nothing for ``"bsr"``, whose corruption is random from end to end. Training
    (:func:`corrupt`) and inference (``unclip.models.upsampler.inference_condition``) both go through it."""
    if kind not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
    return blur_corrupt(low_res) if kind == "blur" else low_res


def corrupt(high_res: Tensor, factor: int, kind: str, generators: Sequence[torch.Generator] | None = None) -> Tensor:
    """The low-resolution conditioning an upsampler trains on: ``high_res`` downsampled and corrupted."""
    if kind in ("none", "blur"):
        return fixed_corruption(downsample(high_res, factor), kind)
    if kind == "bsr":
        if generators is None:
            raise ValueError("BSR degradation is random: pass one generator per sample")
        return bsr_degrade(high_res, factor, generators)
    raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(DEGRADATIONS)}")
