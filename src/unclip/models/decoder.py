"""The unCLIP decoder P(x | z_i, y): a U-Net at 64×64 conditioned on the CLIP image embedding (§2.1).

As the paper (following GLIDE): z_i is projected and added to the timestep embedding, and projected into
``clip_tokens`` (4) extra context tokens concatenated with the caption's token states, which every attention
layer sees alongside the pixels. Learned null embeddings stand in for a dropped z_i or caption, so one
network serves the conditional and unconditional branches of classifier-free guidance; training drops z_i
10% and the caption 50% of the time (App. C). The network predicts eps and, optionally, the learned-range
variance (output channels doubled).

Beyond the paper, ``z_whitening`` feeds the projections a PCA-whitened z_i (``unclip.models.whitening``), fitted
on the training set's embeddings, so the faint directions that carry attribute binding are not learned last.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from unclip.models.unet import UNet, UNetConfig


@dataclass
class DecoderConfig:
    resolution: int = 64
    clip_dim: int = 512  # size of z_i
    text_dim: int | None = 512  # width of the caption token states; None for a decoder without captions
    clip_tokens: int = 4  # §2.1: z_i becomes 4 extra context tokens
    context_dim: int = 512
    learned_variance: bool = True
    p_drop_z_i: float = 0.1
    p_drop_text: float = 0.5
    schedule: str = "cosine"
    # Whiten z_i before its projections (buffers z_mean, z_whiten, fitted by the training stage); the floor, relative
    # to the largest eigenvalue, bounds the gain of directions the CLIP hardly uses.
    z_whitening: bool = False
    z_whitening_floor: float = 1e-3
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self) -> None:
        if self.resolution < 8 or self.resolution % self.unet.downsample_factor:
            raise ValueError(
                f"resolution {self.resolution} must be >= 8 and divisible by {self.unet.downsample_factor}"
            )
        for name in ("clip_dim", "context_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.clip_tokens < 0:
            raise ValueError(f"clip_tokens must be >= 0, got {self.clip_tokens}")
        if not self.z_whitening_floor > 0:
            raise ValueError(f"z_whitening_floor must be > 0, got {self.z_whitening_floor}")
        for name in ("p_drop_z_i", "p_drop_text"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability, got {getattr(self, name)}")
        expected = {"in_channels": 3, "out_channels": 6 if self.learned_variance else 3}
        expected["context_dim"] = self.context_dim if (self.clip_tokens or self.text_dim) else None
        wrong = {k: (getattr(self.unet, k), v) for k, v in expected.items() if getattr(self.unet, k) != v}
        if wrong:
            detail = ", ".join(f"unet.{k}={got} (expected {want})" for k, (got, want) in wrong.items())
            raise ValueError(f"decoder config is inconsistent: {detail}; build it with decoder_config()")


def decoder_config(
    *,
    clip_dim: int,
    text_dim: int | None,
    resolution: int = 64,
    context_dim: int | None = None,
    learned_variance: bool = True,
    **unet: object,
) -> DecoderConfig:
    """A consistent DecoderConfig: the U-Net's channels and context width follow the conditioning."""
    base = UNetConfig(**unet)  # type: ignore[arg-type]
    context_dim = context_dim or base.model_channels * base.channel_mult[-1]
    unet_cfg = replace(base, in_channels=3, out_channels=6 if learned_variance else 3, context_dim=context_dim)
    return DecoderConfig(
        resolution=resolution,
        clip_dim=clip_dim,
        text_dim=text_dim,
        context_dim=context_dim,
        learned_variance=learned_variance,
        unet=unet_cfg,
    )


class Decoder(nn.Module):
    """``forward(x_t, t, z_i, text, text_mask, drop_z_i, drop_text) -> raw output`` (eps [+ variance])."""

    # Whether forward also takes the caption's z_t (``text_embedding``): Karlo's decoder adds it to the timestep
    # embedding (unclip.pipeline.diffusers_folder); this one pools the caption's token states instead.
    uses_text_embedding = False

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = cfg = config
        emb_dim = cfg.unet.emb_dim
        self.unet = UNet(cfg.unet)
        self.null_z_i = nn.Parameter(torch.zeros(cfg.clip_dim))
        self.z_i_emb = nn.Linear(cfg.clip_dim, emb_dim)
        self.z_i_tokens = nn.Linear(cfg.clip_dim, cfg.clip_tokens * cfg.context_dim) if cfg.clip_tokens else None
        if cfg.text_dim:
            self.text_proj = nn.Sequential(nn.LayerNorm(cfg.text_dim), nn.Linear(cfg.text_dim, cfg.context_dim))
            # GLIDE also adds a pooled caption to the timestep embedding; a caption-only decoder needs it.
            self.text_emb = nn.Linear(cfg.context_dim, emb_dim)
            self.null_text = nn.Parameter(torch.zeros(emb_dim))
        if cfg.z_whitening:  # identity until fitted (fit_z_whitening); saved with the weights
            self.register_buffer("z_mean", torch.zeros(cfg.clip_dim))
            self.register_buffer("z_whiten", torch.eye(cfg.clip_dim))

    def _z_projections(self) -> list[nn.Linear]:
        return [layer for layer in (self.z_i_emb, self.z_i_tokens) if layer is not None]

    def fit_z_whitening(self, z_i: Tensor, preserve_function: bool = False) -> None:
        """Fit the whitening to training embeddings ``z_i`` (rows). With ``preserve_function``, the projections
        are rewritten so the decoder computes exactly what it did before (a fine-tune's start)."""
        from unclip.models.whitening import pca_whitening

        if not self.config.z_whitening:
            raise ValueError("this decoder was built without z_whitening (set decoder.z_whitening=true)")
        if z_i.ndim != 2 or z_i.shape[1] != self.config.clip_dim:
            raise ValueError(f"z_i must have shape (rows, {self.config.clip_dim}), got {tuple(z_i.shape)}")
        old = (self.z_mean.clone(), self.z_whiten.clone())
        mean, matrix = pca_whitening(z_i, self.config.z_whitening_floor)
        self.z_mean.copy_(mean)
        self.z_whiten.copy_(matrix)
        if preserve_function:
            self.rebase_z_projections(*old)

    def rebase_z_projections(self, old_mean: Tensor, old_matrix: Tensor) -> None:
        """The projections were trained on ``(z − old_mean) @ old_matrix`` (raw z_i: zeros and the identity);
        rewrite them to compute the same on the current whitening, so nothing the decoder does changes."""
        from unclip.models.whitening import fold_into_linear, unfold_from_linear

        for layer in self._z_projections():
            unfold_from_linear(layer, old_mean, old_matrix)
            fold_into_linear(layer, self.z_mean, self.z_whiten)

    @property
    def caption_only(self) -> bool:
        """Trained with z_i dropped every time (``p_drop_z_i = 1``): the GLIDE-like baseline of §5.1, which
        generates from the caption alone; samplers then give it the null z_i in every guidance branch."""
        return self.config.p_drop_z_i >= 1.0 and bool(self.config.text_dim)

    def z_i_conditioning(self, z_i: Tensor) -> tuple[Tensor, Tensor | None]:
        """What the U-Net gets from z_i: the vector added to the timestep embedding and the ``clip_tokens``
        context tokens (None without them), after the whitening if the decoder has one."""
        cfg = self.config
        if cfg.z_whitening:  # applied after the null is put in: the null lives in raw z_i space, like the embeddings
            z_i = (z_i - self.z_mean.to(z_i.dtype)) @ self.z_whiten.to(z_i.dtype)
        tokens = (
            self.z_i_tokens(z_i).reshape(-1, cfg.clip_tokens, cfg.context_dim) if self.z_i_tokens is not None else None
        )
        return self.z_i_emb(z_i), tokens

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        z_i: Tensor,
        text: Tensor | None = None,
        text_mask: Tensor | None = None,
        drop_z_i: Tensor | None = None,
        drop_text: Tensor | None = None,
    ) -> Tensor:
        cfg = self.config
        b = x.shape[0]
        if z_i.shape != (b, cfg.clip_dim):
            raise ValueError(f"z_i must have shape ({b}, {cfg.clip_dim}), got {tuple(z_i.shape)}")
        if drop_z_i is not None:
            z_i = torch.where(drop_z_i[:, None], self.null_z_i.to(z_i.dtype).expand_as(z_i), z_i)
        emb, z_tokens = self.z_i_conditioning(z_i)
        tokens, masks = [], []
        if z_tokens is not None:
            tokens.append(z_tokens)
            masks.append(torch.ones(b, cfg.clip_tokens, dtype=torch.bool, device=x.device))
        if cfg.text_dim:
            if text is None or text.ndim != 3 or text.shape[0] != b or text.shape[2] != cfg.text_dim:
                got = None if text is None else tuple(text.shape)
                raise ValueError(f"text must have shape ({b}, L, {cfg.text_dim}), got {got}")
            mask = torch.ones(text.shape[:2], dtype=torch.bool, device=x.device) if text_mask is None else text_mask
            if mask.shape != text.shape[:2]:
                raise ValueError(f"text_mask must have shape {tuple(text.shape[:2])}, got {tuple(mask.shape)}")
            if drop_text is not None:
                mask = mask & ~drop_text[:, None]
            ctx = self.text_proj(text)
            weights = mask.to(ctx.dtype)[..., None]
            pooled = (ctx * weights).sum(1) / weights.sum(1).clamp_min(1.0)
            kept = mask.any(dim=1, keepdim=True)
            emb = emb + torch.where(kept, self.text_emb(pooled), self.null_text.to(ctx.dtype).expand(b, -1))
            tokens.append(ctx)
            masks.append(mask)
        elif text is not None:
            raise ValueError("this decoder has no caption conditioning (text_dim is None) but text was given")
        context = torch.cat(tokens, dim=1) if tokens else None
        context_mask = torch.cat(masks, dim=1) if masks else None
        return self.unet(x, t, extra_emb=emb, context=context, context_mask=context_mask)


def guidance_conditions(z_i: Tensor, text: Tensor | None = None, text_mask: Tensor | None = None) -> list[dict]:
    """The nested branches [nothing, z_i, z_i + caption] for ``unclip.diffusion.guided`` with scales
    ``[s_image, s_text]``: separate guidance for the image embedding and the caption (DESIGN.md §1)."""
    b = z_i.shape[0]
    yes = torch.ones(b, dtype=torch.bool, device=z_i.device)

    def branch(drop_z: bool, drop_t: bool) -> dict:
        cond = {"z_i": z_i, "drop_z_i": yes if drop_z else ~yes, "drop_text": yes if drop_t else ~yes}
        if text is not None:
            cond["text"] = text
            cond["text_mask"] = (
                text_mask if text_mask is not None else torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
            )
        return cond

    return [branch(True, True), branch(False, True), branch(False, False)]


def guided_denoiser(
    decoder: Decoder,
    z_i: Tensor,
    tokens: Tensor | None = None,
    mask: Tensor | None = None,
    drop_text: Tensor | None = None,
    scales: tuple[float, float] = (1.0, 1.0),
    text_embedding: Tensor | None = None,
):  # -> tuple[Denoiser, NoiseSchedule]
    """The (x, t) denoiser samplers drive: eps-parameterized, guided with separate (image, caption) scales, and
    with x0 clamped to the image range. Without caption states (variations), every branch drops the caption;
    ``drop_text`` drops it for chosen samples (empty prompts). ``text_embedding`` (the caption's z_t) reaches
    decoders that take it (``uses_text_embedding``) with the caption."""
    from unclip.diffusion import ModelDenoiser, NoiseSchedule, Parameterization, clamp_x0, guided

    dc = decoder.config
    schedule = NoiseSchedule.named(dc.schedule)
    den = ModelDenoiser(decoder, schedule, Parameterization("eps", dc.learned_variance))
    if dc.text_dim and tokens is None:
        b = z_i.shape[0]
        tokens = torch.zeros(b, 1, dc.text_dim, device=z_i.device)
        mask = torch.ones(b, 1, dtype=torch.bool, device=z_i.device)
        drop_text = torch.ones(b, dtype=torch.bool, device=z_i.device)
    conds = guidance_conditions(z_i, tokens if dc.text_dim else None, mask if dc.text_dim else None)
    if decoder.caption_only:  # never trained with z_i: every branch takes the null embedding, so s_image is moot
        for cond in conds:
            cond["drop_z_i"] = torch.ones_like(cond["drop_z_i"])
    if drop_text is not None:
        conds[2]["drop_text"] = conds[2]["drop_text"] | drop_text
    if getattr(decoder, "uses_text_embedding", False) and text_embedding is not None:
        for cond in conds:
            cond["text_embedding"] = text_embedding
    return clamp_x0(guided(den, conds, list(scales)), schedule), schedule


def random_drops(config: DecoderConfig, batch: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
    """Training-time condition dropout (App. C: z_i 10%, caption 50%), independently per sample."""
    u = torch.rand(2, batch, generator=generator)
    return {"drop_z_i": u[0] < config.p_drop_z_i, "drop_text": u[1] < config.p_drop_text}
