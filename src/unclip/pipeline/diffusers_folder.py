"""Pretrained unCLIP stacks stored in diffusers' folder layout (Karlo, ``kakaobrain/karlo-v1-alpha``), run by
this package's pipeline: its samplers, best-of-N prior sampling, separate decoder guidance scales, and the §3
manipulations that need DDIM inversion of the decoder (which neither Karlo nor diffusers implement).

A diffusers unCLIP folder holds ``model_index.json`` (``UnCLIPPipeline`` or ``UnCLIPImageVariationPipeline``)
and one sub-folder per part: ``text_encoder`` + ``tokenizer`` (CLIP ViT-L/14's text tower), ``image_encoder`` +
``feature_extractor`` (its image tower; variation folders only), ``prior`` (a ``PriorTransformer``; text-to-image
folders only), ``text_proj`` (``UnCLIPTextProjModel``), ``decoder`` (a 64 px ``UNet2DConditionModel``),
``super_res_first`` / ``super_res_last`` (the 64 → 256 ``UNet2DModel`` pair: Karlo runs the second one for the
last step only) and the schedulers' configs. The networks are diffusers' own modules, wrapped here so that they
speak this package's interfaces (``DiffusionPrior``, ``Decoder``, ``Upsampler``); CLIP loads through
:mod:`unclip.clip.hf`. Every convention is Karlo's, as diffusers' ``UnCLIPPipeline`` implements it:

- CLIP embeddings are **not** normalized: z_t is ``text_embeds``, z_i ``image_embeds``, token states
  ``last_hidden_state`` (Karlo's prior and decoder were trained on them).
- The unconditional branch of the prior and the decoder's dropped caption are the encodings of the empty prompt
  ``""``; the decoder's dropped z_i is ``text_proj``'s learned embedding. The decoder also adds z_t to its
  timestep embedding, so its condition carries ``text_embedding``.
- The prior predicts x0 in its standardized space (``clip_mean`` / ``clip_std``), clipped to ±5 while sampling.
- The upsampler sees the decoder's image upsampled bicubically (with antialiasing) to 256 px.

With Karlo's settings (DDPM: prior 25 steps at guidance 4, decoder 25 at 8, upsampler 7; one prior sample) the
pipeline reproduces diffusers' ``UnCLIPPipeline`` image for image from the same seed (tested on a tiny random
folder); every other setting of :class:`unclip.pipeline.SamplingSettings` applies as to our own stacks.
Needs the ``diffusers`` package (``pip install "unclip[pretrained]"``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.model_folder import CheckpointError
from unclip.prior.diffusion_prior import DiffusionPriorConfig
from unclip.prior.normalize import EmbeddingNorm

MODEL_INDEX = "model_index.json"
PIPELINE_CLASSES = ("UnCLIPPipeline", "UnCLIPImageVariationPipeline")
# UnCLIPScheduler's clip_sample_range for Karlo's prior (its x0 lives in standardized units).
PRIOR_CLIP_RANGE = 5.0

# Karlo's sampling defaults (diffusers' UnCLIPPipeline.__call__): DDPM on the scheduler's linspace grid.
KARLO_SETTINGS: dict[str, Any] = {
    "prior_steps": 25, "prior_sampler": "ddpm", "prior_guidance": 4.0, "prior_best_of": 1,
    "decoder_steps": 25, "decoder_sampler": "ddpm", "decoder_guidance_image": 8.0, "decoder_guidance_text": 8.0,
    "upsampler_steps": 7, "upsampler_sampler": "ddpm", "upsampler_condition": "clean",
}  # fmt: skip


def read_model_index(folder: Path) -> dict[str, Any] | None:
    """``model_index.json`` of a diffusers unCLIP folder, or None if ``folder`` is not one."""
    path = Path(folder) / MODEL_INDEX
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err
    if not isinstance(index, dict) or index.get("_class_name") not in PIPELINE_CLASSES:
        got = index.get("_class_name") if isinstance(index, dict) else None
        raise CheckpointError(
            f"{path} describes a {got!r} pipeline; unclip runs diffusers' {' and '.join(PIPELINE_CLASSES)} folders"
        )
    return index


class EmptyPrompt(nn.Module):
    """The encodings of ``""`` (z_t, token states, mask): Karlo's unconditional caption, computed once at load."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        tok = clip.tokenizer  # refuses "" (our captions must say something): frame nothing by BOS and EOT here
        if tok is None:
            raise CheckpointError("the folder has no tokenizer/ (vocab.json and merges.txt, or tokenizer.json)")
        ids = torch.full((1, tok.context_length), tok.pad_id, dtype=torch.long)
        ids[0, :2] = torch.tensor([tok.bos_id, tok.eos_id])
        mask = torch.zeros(tok.context_length, dtype=torch.bool)
        mask[:2] = True
        with torch.no_grad():
            z_t, states = clip.text_features(ids.to(clip.device), normalize=False)
        self.register_buffer("z_t", z_t[0].float().clone())
        self.register_buffer("tokens", states[0].float().clone())
        self.register_buffer("mask", mask.to(clip.device))

    def fill(self, drop: Tensor, z_t: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``z_t``, ``tokens`` and ``mask`` with the rows where ``drop`` is True replaced by the empty prompt's."""
        if tokens.shape[1] != self.tokens.shape[0]:
            raise ValueError(f"token states must have the text encoder's {self.tokens.shape[0]} positions, "
                             f"got {tokens.shape[1]}")  # fmt: skip
        d = drop[:, None]
        return (
            torch.where(d, self.z_t.to(z_t.dtype), z_t),
            torch.where(d[..., None], self.tokens.to(tokens.dtype), tokens),
            torch.where(d, self.mask, mask),
        )


class RawEmbeddingCLIP(nn.Module):
    """A CLIP whose ``encode_text`` / ``encode_image`` return un-normalized embeddings, as Karlo's parts expect.

    ``image_tower=False`` (a folder without ``image_encoder/``): encoding images is refused with the fix."""

    def __init__(self, clip: nn.Module, image_tower: bool = True, folder: Path | None = None) -> None:
        super().__init__()
        self.clip, self.has_image_tower, self.folder = clip, image_tower, folder
        self.embed_dim, self.image_size, self.tokenizer = clip.embed_dim, clip.image_size, clip.tokenizer

    def encode_text(self, captions: list[str], normalize: bool = False):
        return self.clip.encode_text(captions, normalize=normalize)

    def encode_image(self, images: Tensor, normalize: bool = False) -> Tensor:
        if not self.has_image_tower:
            raise ValueError(
                f"{self.folder} has no image_encoder/, so it cannot encode images (variations, interpolations, text "
                "diffs, evaluations). Karlo's text-to-image folder lacks it: copy image_encoder/ and "
                "feature_extractor/ from karlo-v1-alpha-image-variations (the same ViT-L/14) into it"
            )
        return self.clip.encode_image(images, normalize=normalize)

    def forward(self, *args: Any, **kwargs: Any):
        return self.clip(*args, **kwargs)


class DiffusersPrior(nn.Module):
    """diffusers' ``PriorTransformer`` as a :class:`unclip.prior.DiffusionPrior` (x0 in standardized units)."""

    def __init__(self, transformer: nn.Module, empty: EmptyPrompt) -> None:
        super().__init__()
        cfg = transformer.config
        self.transformer, self.empty = transformer, empty
        dim = int(cfg.embedding_dim)
        self.config = DiffusionPriorConfig(
            embed_dim=dim, text_width=int(empty.tokens.shape[1]), text_len=int(empty.tokens.shape[0]), width=8,
            depth=1, heads=1,
            train_steps=1000, sample_steps=25, best_of=1, sample_clamp=PRIOR_CLIP_RANGE, rank_by="cosine",
        )  # fmt: skip
        self.norm = EmbeddingNorm(dim)
        mean, std = getattr(transformer, "clip_mean", None), getattr(transformer, "clip_std", None)
        if mean is None or std is None:
            raise CheckpointError("the prior has no clip_mean / clip_std (its embedding statistics)")
        with torch.no_grad():
            self.norm.mean.copy_(mean.reshape(-1))
            self.norm.std.copy_(std.reshape(-1))
            self.norm.fitted.fill_(1)

    def forward(
        self, x: Tensor, t: Tensor, *, z_t: Tensor, tokens: Tensor, mask: Tensor, keep: Tensor | None = None
    ) -> Tensor:
        if keep is not None:
            z_t, tokens, mask = self.empty.fill(~keep, z_t, tokens, mask)
        return self.transformer(
            x, timestep=t, proj_embedding=z_t, encoder_hidden_states=tokens, attention_mask=mask
        ).predicted_image_embedding

    def schedule(self):
        from unclip.diffusion import NoiseSchedule

        return NoiseSchedule.named("cosine", 1000)  # UnCLIPScheduler: squaredcos_cap_v2, 1000 steps

    @staticmethod
    def parameterization():
        from unclip.diffusion import Parameterization

        return Parameterization("x0")


@dataclass
class DiffusersDecoderConfig:
    """What the pipeline reads of a decoder's config (see :class:`unclip.models.decoder.DecoderConfig`)."""

    resolution: int
    clip_dim: int
    text_dim: int
    learned_variance: bool
    schedule: str = "cosine"
    p_drop_z_i: float = 0.1


class DiffusersDecoder(nn.Module):
    """diffusers' ``UnCLIPTextProjModel`` + ``UNet2DConditionModel`` as a :class:`unclip.models.Decoder`.

    z_i is projected into the timestep embedding and four context tokens (§2.1), z_t into the timestep embedding
    too; a dropped z_i is the learned guidance embedding, a dropped caption the empty prompt's encodings.
    """

    uses_text_embedding = True
    caption_only = False

    def __init__(self, unet: nn.Module, text_proj: nn.Module, empty: EmptyPrompt) -> None:
        super().__init__()
        self.unet, self.text_proj, self.empty = unet, text_proj, empty
        self.config = DiffusersDecoderConfig(
            resolution=int(unet.config.sample_size), clip_dim=int(text_proj.config.clip_embeddings_dim),
            text_dim=int(empty.tokens.shape[1]), learned_variance=int(unet.config.out_channels) == 6,
        )  # fmt: skip

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        z_i: Tensor,
        text: Tensor | None = None,
        text_mask: Tensor | None = None,
        drop_z_i: Tensor | None = None,
        drop_text: Tensor | None = None,
        text_embedding: Tensor | None = None,
    ) -> Tensor:
        b = x.shape[0]
        if z_i.shape != (b, self.config.clip_dim):
            raise ValueError(f"z_i must have shape ({b}, {self.config.clip_dim}), got {tuple(z_i.shape)}")
        if drop_z_i is not None:
            null = self.text_proj.learned_classifier_free_guidance_embeddings.to(z_i.dtype)
            z_i = torch.where(drop_z_i[:, None], null, z_i)
        # As unclip's Decoder: drop_text None keeps every caption; no caption at all is the empty prompt in every row.
        drop = torch.zeros(b, dtype=torch.bool, device=x.device) if drop_text is None else drop_text
        e = self.empty
        if text is not None and text_embedding is None and not bool(drop.all()):
            raise ValueError("Karlo's decoder adds the caption's z_t to its timestep embedding: pass text_embedding "
                             "with the token states, or drop the caption")  # fmt: skip
        if text is None or text_embedding is None:
            z_t, tokens, mask = e.z_t.expand(b, -1), e.tokens.expand(b, -1, -1), e.mask.expand(b, -1)
        else:
            mask = text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=torch.bool, device=x.device)
            z_t, tokens, mask = e.fill(drop, text_embedding, text, mask)
        context, time_emb = self.text_proj(
            image_embeddings=z_i, prompt_embeds=z_t, text_encoder_hidden_states=tokens,
            do_classifier_free_guidance=False,
        )  # fmt: skip
        mask = F.pad(mask, (self.text_proj.clip_extra_context_tokens, 0), value=True)
        return self.unet(x, t, encoder_hidden_states=context, class_labels=time_emb, attention_mask=mask).sample


@dataclass
class DiffusersUpsamplerConfig:
    """What the pipeline reads of an upsampler's config (see :class:`unclip.models.upsampler.UpsamplerConfig`)."""

    resolution: int
    low_resolution: int
    learned_variance: bool
    schedule: str = "cosine"
    degradation: str = "none"  # diffusers conditions on the plain bicubic upsample
    noise_aug: bool = False


class DiffusersUpsampler(nn.Module):
    """Karlo's 64 → 256 super-resolution pair as one :class:`unclip.models.Upsampler`: ``last`` for the step from
    t = 0, ``first`` for every other (as diffusers' ``UnCLIPPipeline`` runs them). Every grid of this package ends
    at t = 0 except ``trailing`` spacing, which may skip it and then never runs ``last``; one step is t = 999 only."""

    def __init__(self, first: nn.Module, last: nn.Module, low_resolution: int) -> None:
        super().__init__()
        self.first, self.last = first, last
        out = int(first.config.out_channels)
        self.config = DiffusersUpsamplerConfig(int(first.config.sample_size), low_resolution, out == 6)

    def forward(self, x: Tensor, t: Tensor, low_res: Tensor) -> Tensor:
        res = self.config.resolution
        up = F.interpolate(low_res.to(x.dtype), size=(res, res), mode="bicubic", align_corners=False, antialias=True)
        net = self.last if bool((t == 0).all()) else self.first
        out = net(torch.cat([x, up], dim=1), t).sample
        # Karlo's upsamplers have fixed variances; a six-channel output's second half is unused there.
        return out if self.config.learned_variance else out[:, :3]


def _load(module_cls: Any, folder: Path, device: torch.device | str) -> nn.Module:
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is missing: a diffusers unCLIP folder needs it")
    # float32 whatever the folder stores (Karlo ships fp16 variants): speed comes from set_precision's autocast,
    # and the samplers' arithmetic stays in float32 / float64 as for every other model.
    return module_cls.from_pretrained(str(folder), torch_dtype=torch.float32).to(device).eval()


def load_diffusers_unclip(folder: str | Path, device: torch.device | str = "cpu"):
    """A diffusers ``UnCLIPPipeline`` / ``UnCLIPImageVariationPipeline`` folder as an :class:`UnCLIPPipeline`.

    A variation folder has no prior: it decodes images' embeddings (variations, interpolations, text diffs) and
    captions' z_t (``z_source="text"``), and refuses to sample z_i. Karlo's text-to-image folder has no CLIP image
    tower (``image_encoder/``): it generates from captions, and refuses what needs images until the tower of its
    variation folder (the same ViT-L/14) is copied in.
    """
    try:
        from diffusers import PriorTransformer, UNet2DConditionModel, UNet2DModel
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    except ImportError as err:  # pragma: no cover - diffusers is a test dependency
        raise CheckpointError(
            f"{folder} is a diffusers unCLIP folder; loading it needs the diffusers package "
            '(pip install "unclip[pretrained]")'
        ) from err
    from unclip.clip.hf import has_image_tower, load_hf_clip
    from unclip.pipeline.pipeline import UnCLIPPipeline
    from unclip.pipeline.settings import SamplingSettings

    folder = Path(folder)
    index = read_model_index(folder)
    if index is None:
        raise CheckpointError(f"{folder} has no {MODEL_INDEX}: not a diffusers pipeline folder")
    image_tower = has_image_tower(folder)
    clip = RawEmbeddingCLIP(load_hf_clip(folder, device, text_only=True), image_tower, folder)
    empty = EmptyPrompt(clip.clip).to(device)
    prior = None
    if "prior" in index:
        prior = DiffusersPrior(_load(PriorTransformer, folder / "prior", device), empty).to(device)
    unet = _load(UNet2DConditionModel, folder / "decoder", device)
    decoder = DiffusersDecoder(unet, _load(UnCLIPTextProjModel, folder / "text_proj", device), empty)
    upsamplers = []
    if "super_res_first" in index:
        first, last = (_load(UNet2DModel, folder / name, device) for name in ("super_res_first", "super_res_last"))
        upsamplers.append(DiffusersUpsampler(first, last, decoder.config.resolution))
    return UnCLIPPipeline(clip, prior, decoder, upsamplers, SamplingSettings(**KARLO_SETTINGS))  # type: ignore[arg-type]


__all__ = [
    "KARLO_SETTINGS",
    "DiffusersDecoder",
    "DiffusersPrior",
    "DiffusersUpsampler",
    "EmptyPrompt",
    "RawEmbeddingCLIP",
    "load_diffusers_unclip",
    "read_model_index",
]
