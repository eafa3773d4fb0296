"""Text-to-image: caption → CLIP text encoding → prior → z_i → decoder (64 px) → upsampler(s) → image (§2).

``UnCLIPPipeline.from_pretrained(DIR)`` loads a model folder holding every stage (``pipeline.json`` names the
sub-folders and the default sampling settings); calling the pipeline returns images in the shape users know
from diffusers. Sample i depends only on its own seed: each image's generator drives its prior, decoder and
upsampler noise in turn, so a batch never changes an image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from unclip.atomic import atomic_write_text, refuse_to_replace
from unclip.clip.interface import prepare_images
from unclip.clip.noised import NoisedImageEncoder, check_noised_clip
from unclip.diffusion import (
    clamp_x0,
    generators_from_seeds,
    get_sampler,
    randn,
    sampling_stage,
)
from unclip.diffusion.gradient_guidance import (
    embedding_objective,
    noised_embedding_objective,
    noised_gradient_guidance,
    x0_gradient_guidance,
)
from unclip.image_modes import to_rgb
from unclip.model_folder import config_from_dict
from unclip.models.decoder import Decoder, guided_denoiser
from unclip.models.upsampler import Upsampler, upsampler_denoiser
from unclip.pipeline.index import FORMAT, FORMAT_VERSION, INDEX_FILE, read_index
from unclip.pipeline.settings import SamplingSettings

# set_precision: the autocast dtype of each precision (None: no autocast).
AUTOCAST: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def to_pil(images: Tensor) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] → RGB PIL images."""
    arr = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def rgb_image(item: Image.Image | np.ndarray | str | Path) -> Image.Image:
    """An image file, PIL image or uint8 array as an RGB PIL image; anything else, or an unreadable file, is a
    ValueError naming it."""
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as im:
                return to_rgb(im)
        except (OSError, ValueError) as err:
            raise ValueError(f"cannot read image {str(item)!r}: {err}") from err
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3):
            raise ValueError(f"image arrays must be uint8 (H, W[, C]), got {item.dtype} {item.shape}")
        item = Image.fromarray(item)
    if not isinstance(item, Image.Image):
        raise ValueError(f"expected an image file, PIL image or uint8 array, got {type(item).__name__}")
    return to_rgb(item)


def from_pil(images: Sequence[Image.Image | np.ndarray | str | Path], size: int) -> Tensor:
    """Images of any size and mode (files, PIL images or uint8 arrays) → (B, 3, size, size) in [-1, 1].

    Converted to RGB, resized on the short side and centre-cropped; an unreadable file is a ValueError naming it.
    """
    out = []
    for item in images:
        # CLIP's own preprocessing: resize the short side, crop the centre (one implementation for both).
        out.append(prepare_images(np.array(rgb_image(item))[None], size)[0])
    if not out:
        raise ValueError("no images given")
    return torch.stack(out)


def check_prompts(prompt: str | Sequence[str]) -> list[str]:
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompts given")
    bad = [p for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"prompts must be strings, got {type(bad[0]).__name__}: {bad[0]!r}")
    return prompts


@dataclass
class PipelineOutput:
    images: list[Image.Image]  # final resolution
    tensors: Tensor  # (N, 3, H, W) in [-1, 1]
    z_i: Tensor  # (N, D) the image embeddings decoded
    prompts: list[str]
    seeds: list[int]
    settings: dict[str, Any] = field(default_factory=dict)


class UnCLIPPipeline:
    """CLIP, a prior (diffusion or autoregressive), the decoder and optional upsamplers, with their settings.

    ``prior`` may be None for a stack that only decodes image embeddings (diffusers' image-variation folders):
    the manipulations and ``z_source="text"`` work, sampling z_i from a caption is refused. ``noised_clip`` (optional,
    ``unclip.clip.noised``) is the noise-aware CLIP tower that ``decoder_embedding_guidance_gradient="noised"`` uses.
    """

    def __init__(
        self,
        clip: nn.Module,
        prior: nn.Module | None,
        decoder: Decoder,
        upsamplers: Sequence[Upsampler] = (),
        settings: SamplingSettings | None = None,
        noised_clip: nn.Module | None = None,
    ) -> None:
        self.clip, self.prior, self.decoder = clip, prior, decoder
        self.upsamplers = list(upsamplers)
        self.settings = settings or SamplingSettings()
        self.precision = "fp32"  # see set_precision
        if clip.embed_dim != decoder.config.clip_dim:
            raise ValueError(f"CLIP embeds in {clip.embed_dim} dims but the decoder expects {decoder.config.clip_dim}")
        self.noised_clip = noised_clip
        if noised_clip is not None:
            check_noised_clip(noised_clip, decoder)
        size = decoder.config.resolution
        for up in self.upsamplers:
            if up.config.low_resolution != size:
                raise ValueError(f"an upsampler expects {up.config.low_resolution} px input but gets {size} px")
            size = up.config.resolution

    # ---- speed switches ----------------------------------------------------------------------------------
    def set_precision(self, precision: str) -> UnCLIPPipeline:
        """Run the networks under autocast in ``bf16`` or ``fp16`` (``fp32``: off). Weights stay fp32, and the
        samplers' arithmetic stays fp32 (autocast lowers only matmuls and convolutions), so schedules, guidance and
        inversion keep their precision; only the network forwards get the tensor cores' speed."""
        if precision not in AUTOCAST:
            raise ValueError(f"precision must be one of {', '.join(AUTOCAST)}, got {precision!r}")
        self.precision = precision
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = AUTOCAST[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def compile(self, **options: Any) -> UnCLIPPipeline:
        """``torch.compile`` the forward of every network (options go to torch.compile, e.g. ``mode=...``).

        The forwards are compiled in place, so the modules keep their configs and state dicts; the first call of
        each shape pays the compilation. Worth it on a GPU for many images; on a CPU compilation usually costs
        more than it saves."""
        for net in (self.clip, self.prior, self.decoder, *self.upsamplers):
            if net is None:
                continue
            net.forward = torch.compile(net.forward, **options)
        return self

    def set_memory_format(self, channels_last: bool) -> UnCLIPPipeline:
        """Run the decoder and upsamplers in channels-last (NHWC) memory format, or back in the default (NCHW).

        Only strides change: weights are converted in place, images are converted where they enter each network and
        come out in the default layout, so outputs equal the default's to float rounding. It is meant for GPUs, whose
        tensor-core convolutions are NHWC-native; CLIP and the prior have no 2-D convolutions and stay as they are."""
        from unclip.models.memory_format import set_channels_last

        if not isinstance(channels_last, bool):
            raise ValueError(f"channels_last must be True or False, got {channels_last!r}")
        for net in (self.decoder, *self.upsamplers):
            set_channels_last(net, channels_last)
        return self

    # ---- persistence -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> UnCLIPPipeline:
        from unclip.clip import load_clip
        from unclip.models.checkpoint import from_pretrained as load_image_model
        from unclip.pipeline.diffusers_folder import load_diffusers_unclip, read_model_index
        from unclip.prior import from_pretrained as load_prior

        folder = Path(folder)
        if not (folder / INDEX_FILE).is_file() and read_model_index(folder) is not None:
            return load_diffusers_unclip(folder, device)  # Karlo and other diffusers-layout unCLIP folders
        meta = read_index(folder)
        parts = meta["components"]
        settings = config_from_dict(SamplingSettings, meta.get("settings", {}), f"{folder / INDEX_FILE}: settings")
        noised = parts.get("noised_clip")
        return cls(
            load_clip(folder / parts["clip"], device),
            load_prior(folder / parts["prior"], device),
            load_image_model(folder / parts["decoder"], "decoder", device),  # type: ignore[arg-type]
            [load_image_model(folder / p, "upsampler", device) for p in parts.get("upsamplers", [])],  # type: ignore[misc]
            settings,
            None if noised is None else NoisedImageEncoder.from_pretrained(folder / noised, device),
        )

    def save_pretrained(self, folder: str | Path, half: bool = False) -> Path:
        """Every component's folder and the index; ``half`` stores the parameters in float16 (half the size, the
        bundled model's format; they load back into float32 networks)."""
        from unclip.models.checkpoint import save_pretrained as save_image_model
        from unclip.prior import save_pretrained as save_prior

        if not isinstance(self.decoder, Decoder) or self.prior is None:
            raise ValueError("only stacks of unclip's own networks are saved in its format; a diffusers folder "
                             "(Karlo) is already on disk in its own")  # fmt: skip
        folder = Path(folder)
        # An earlier pipeline folder is written over part by part; any other non-empty path is refused.
        refuse_to_replace(folder, lambda f: (f / INDEX_FILE).is_file(), "pipeline folder")
        self.clip.save_pretrained(folder / "clip", half)
        save_prior(self.prior, folder / "prior", half)
        save_image_model(self.decoder, folder / "decoder", half)
        ups = [f"upsampler{i}" for i in range(len(self.upsamplers))]
        for name, up in zip(ups, self.upsamplers, strict=True):
            save_image_model(up, folder / name, half)
        components: dict[str, Any] = {"clip": "clip", "prior": "prior", "decoder": "decoder", "upsamplers": ups}
        if self.noised_clip is not None:
            components["noised_clip"] = "noised_clip"
            self.noised_clip.save_pretrained(folder / "noised_clip", half)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "components": components,
            "settings": dataclasses.asdict(self.settings),
        }
        atomic_write_text(folder / INDEX_FILE, json.dumps(meta, indent=2) + "\n")  # last: an index means complete
        return folder

    @property
    def device(self) -> torch.device:
        return next(self.decoder.parameters()).device

    @property
    def resolution(self) -> int:
        return self.upsamplers[-1].config.resolution if self.upsamplers else self.decoder.config.resolution

    # ---- stages ------------------------------------------------------------------------------------------
    def encode_text(self, prompts: list[str]):
        """CLIP text encodings; an empty prompt asks for an unconditional sample (its caption is dropped)."""
        empty = torch.tensor([not p.strip() for p in prompts], device=self.device)
        enc = self.clip.encode_text([p if p.strip() else "a" for p in prompts])
        return enc, empty

    def sample_z_i(self, enc, empty: Tensor, generators: list[torch.Generator], s: SamplingSettings) -> Tensor:
        """z_i for encoded captions (``enc``, ``empty`` from :meth:`encode_text`), one generator per caption.

        A caption-only decoder (trained with z_i always dropped, the GLIDE-like baseline of §5.1) ignores z_i, so
        no prior is run for it; ``s.z_source == "text"`` feeds z_t in place of z_i (§5.1's no-prior ablation).
        """
        from unclip.prior import ARPrior, sample_ar_prior, sample_diffusion_prior
        from unclip.prior.caption_tokens import fit_tokens

        if self.decoder.caption_only:
            return torch.zeros_like(enc.embedding)
        if s.z_source == "text" and not bool(empty.any()):
            return enc.embedding
        if self.prior is None:
            raise ValueError(
                "this model has no prior (an image-variation folder): it decodes images' embeddings "
                "(vary, interpolate, textdiff) and captions' z_t (z_source=text, non-empty prompts)"
            )
        tokens, mask = fit_tokens(enc.token_states, enc.mask, self.prior.config.text_len)
        if isinstance(self.prior, ARPrior):
            return sample_ar_prior(self.prior, enc.embedding, tokens, mask, generator=generators).z_i
        with sampling_stage("prior"):
            out = sample_diffusion_prior(
                self.prior, enc.embedding, tokens, mask, keep=~empty, guidance_scale=s.prior_guidance,
                steps=s.prior_steps, sampler=s.prior_sampler, best_of=s.prior_best_of, combine=s.prior_combine,
                generator=generators,
            )  # fmt: skip
        if s.z_source == "text":  # an empty prompt has no z_t: its sample stays the prior's unconditional one
            return torch.where(empty[:, None], out.z_i.to(enc.embedding.dtype), enc.embedding)
        return out.z_i

    def decoder_denoiser(
        self, z_i: Tensor, text=None, drop_text: Tensor | None = None, s: SamplingSettings | None = None,
        embedding_guidance: bool = True,
    ):  # fmt: skip
        """The guided, clamped decoder denoiser for these embeddings (and captions, unless ``text`` is None).

        With ``decoder_embedding_guidance`` s > 0 (and ``embedding_guidance``; DDIM inversion turns it off, so that
        eta = 0 still retraces the inverted path), each x̂0 also moves by s × the gradient of cos(CLIP(x̂0), z_i)
        (:mod:`unclip.diffusion.gradient_guidance`), then is clamped again."""
        s = s or self.settings
        tokens, mask = (None, None) if text is None else (text.token_states, text.mask)
        scales = (s.decoder_guidance_image, s.decoder_guidance_text)
        z_t = None if text is None else text.embedding
        den, schedule = guided_denoiser(self.decoder, z_i, tokens, mask, drop_text, scales, text_embedding=z_t)
        if embedding_guidance and s.decoder_embedding_guidance > 0:
            interval = (s.decoder_embedding_guidance_stop, s.decoder_embedding_guidance_start)
            if s.decoder_embedding_guidance_gradient == "noised":
                if self.noised_clip is None:
                    raise ValueError(
                        "decoder_embedding_guidance_gradient=noised needs a noise-aware CLIP tower in the model "
                        "folder: train one with `unclip train noised_clip` and add it with "
                        "`unclip assemble --noised-clip DIR` (docs/pipeline.md)"
                    )
                objective = noised_embedding_objective(self.noised_clip, z_i)
                den = noised_gradient_guidance(den, schedule, objective, s.decoder_embedding_guidance, interval)
            else:
                objective = embedding_objective(self.clip.encode_image, z_i)
                den = x0_gradient_guidance(
                    den, schedule, objective, s.decoder_embedding_guidance,
                    gradient=s.decoder_embedding_guidance_gradient, interval=interval,
                )  # fmt: skip
            den = clamp_x0(den, schedule)
        return den, schedule

    def decode(
        self, z_i: Tensor, generators: list[torch.Generator], *, text=None, drop_text: Tensor | None = None,
        x_T: Tensor | None = None, s: SamplingSettings | None = None, progress: bool = False, strength: float = 1.0,
        sampler: Callable[..., Tensor] | None = None,
    ) -> Tensor:  # fmt: skip
        """Decoder samples from z_i; ``x_T`` (default: noise from ``generators``) sits at ``strength`` × T, the
        first timestep of the grid (below 1 for latents from :func:`unclip.pipeline.manipulations.invert`).
        ``sampler`` (the samplers' shared signature) replaces ``s.decoder_sampler``: inpainting passes RePaint."""
        s = s or self.settings
        res = self.decoder.config.resolution
        den, schedule = self.decoder_denoiser(z_i, text, drop_text, s)
        if x_T is None:
            x_T = randn((z_i.shape[0], 3, res, res), generators, device=self.device)
        options = {"eta": s.decoder_eta} if s.decoder_sampler == "ddim" and sampler is None else {}
        sampler = sampler or get_sampler(s.decoder_sampler)
        grid = schedule.grid_below(s.decoder_steps, strength)  # strength 1: schedule.grid(steps)
        with sampling_stage("decoder"):
            return sampler(den, x_T, grid, generator=generators, progress=progress, **options)

    def upsample(
        self, images: Tensor, generators: list[torch.Generator], s: SamplingSettings | None = None,
        sampler_at: Callable[[int], Callable[..., Tensor]] | None = None,
    ) -> Tensor:  # fmt: skip
        """Every upsampler in turn. ``sampler_at(resolution)``, when given, supplies each stage's sampler in place of
        ``s.upsampler_sampler`` (inpainting: RePaint with the known image at that resolution)."""
        s = s or self.settings
        for up in self.upsamplers:
            res = up.config.resolution
            den, schedule = upsampler_denoiser(up, images, s.upsampler_condition)
            x_T = randn((images.shape[0], 3, res, res), generators, device=images.device)
            grid = schedule.grid_below(s.upsampler_steps, s.upsampler_strength)  # strength 1: the full grid
            if s.upsampler_strength < 1.0:  # SDEdit: the bicubic upsample, noised to the grid's first timestep
                start = torch.nn.functional.interpolate(images, size=(res, res), mode="bicubic").clamp(-1, 1)
                ab = grid.alpha_bar[0].item()
                x_T = ab**0.5 * start + (1 - ab) ** 0.5 * x_T
            with sampling_stage("upsampler"):
                sample = get_sampler(s.upsampler_sampler) if sampler_at is None else sampler_at(res)
                images = sample(den, x_T, grid, generator=generators)
        return images

    # ---- text to image -----------------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        num_images: int = 1,
        seed: int | Sequence[int] = 0,
        batch_size: int | None = None,
        progress: bool = False,
        **overrides: Any,
    ) -> PipelineOutput:
        """``num_images`` images per prompt; image k of the whole call uses seed ``seed + k`` (or ``seed[k]``).

        ``batch_size`` bounds the images sampled at once (memory); every image has its own generator, so the
        images do not depend on it. ``overrides`` are any :class:`SamplingSettings` fields (``decoder_steps=25``,
        ``prior_guidance=2.0``…).
        """
        prompts = check_prompts(prompt)
        for name, value in (("num_images", num_images), ("batch_size", 1 if batch_size is None else batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        s = dataclasses.replace(self.settings, **overrides)
        prompts = [p for p in prompts for _ in range(num_images)]
        seeds = [seed + k for k in range(len(prompts))] if isinstance(seed, int) else [int(x) for x in seed]
        if len(seeds) != len(prompts):
            raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} images")
        step = batch_size or len(prompts)
        parts = [
            self._text_to_image(prompts[i : i + step], seeds[i : i + step], s, progress)
            for i in range(0, len(prompts), step)
        ]
        images, z_i = (torch.cat(t) for t in zip(*parts, strict=True))
        return PipelineOutput(to_pil(images), images, z_i, prompts, seeds, dataclasses.asdict(s))

    def _text_to_image(self, prompts: list[str], seeds: list[int], s: SamplingSettings, progress: bool):
        """One batch of the two stages: z_i from the prior, then the decoder and upsamplers. (images, z_i)"""
        gens = generators_from_seeds(seeds)
        with self.autocast():
            enc, empty = self.encode_text(prompts)
            z_i = self.sample_z_i(enc, empty, gens, s).float()
            images = self.decode(z_i, gens, text=enc, drop_text=empty, s=s, progress=progress).float()
            return self.upsample(images, gens, s).float(), z_i
