"""The ADM U-Net backbone shared by the decoder and the upsamplers (§2.1; Dhariwal & Nichol 2021).

``UNet(x, t, extra_emb, context, context_mask)`` is conditioning-agnostic: the decoder adds its projected z_i
to the timestep embedding (``extra_emb``) and passes caption and z_i tokens as ``context``; the upsamplers
concatenate the low-resolution image to ``x`` and pass no context. Level ``i`` works at 1/2^i of the input
resolution; attention runs at the levels listed in ``attention_levels`` and in the middle block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from unclip.models.unet_blocks import (
    NORMS,
    AttentionBlock,
    Downsample,
    ResBlock,
    Upsample,
    make_norm,
    timestep_embedding,
    zero_init,
)


@dataclass
class UNetConfig:
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int = 2
    attention_levels: tuple[int, ...] = (1, 2, 3)
    head_channels: int = 32
    dropout: float = 0.0
    norm: str = "group"
    context_dim: int | None = None  # width of the context tokens attention sees; None for no context

    def __post_init__(self) -> None:
        if not self.channel_mult or any(m < 1 for m in self.channel_mult):
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        bad = [lvl for lvl in self.attention_levels if not 0 <= lvl < len(self.channel_mult)]
        if bad:
            raise ValueError(f"attention_levels {bad} out of range for {len(self.channel_mult)} levels")
        if self.norm not in NORMS:
            raise ValueError(f"unknown norm {self.norm!r}; expected one of {', '.join(NORMS)}")
        for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "head_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        widths = [self.model_channels * m for lvl, m in enumerate(self.channel_mult) if lvl in self.attention_levels]
        if self.attention_levels:
            widths.append(self.model_channels * self.channel_mult[-1])
        bad_widths = [w for w in widths if w % self.head_channels]
        if bad_widths:
            raise ValueError(f"attention widths {bad_widths} are not multiples of head_channels {self.head_channels}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def emb_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


class UNet(nn.Module):
    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = cfg = config
        mc, emb_dim = cfg.model_channels, cfg.emb_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.input = nn.Conv2d(cfg.in_channels, mc, 3, padding=1)

        def attention(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, cfg.head_channels, cfg.context_dim, cfg.norm)

        ch, skips = mc, [mc]
        self.down = nn.ModuleList()
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [ResBlock(ch, mc * mult, emb_dim, cfg.dropout, cfg.norm)]
                ch = mc * mult
                if level in cfg.attention_levels:
                    layers.append(attention(ch))
                self.down.append(nn.ModuleList(layers))
                skips.append(ch)
            if level < len(cfg.channel_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)

        middle = [ResBlock(ch, ch, emb_dim, cfg.dropout, cfg.norm)]
        if cfg.attention_levels:
            middle.append(attention(ch))
        middle.append(ResBlock(ch, ch, emb_dim, cfg.dropout, cfg.norm))
        self.middle = nn.ModuleList(middle)

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skips.pop(), mc * mult, emb_dim, cfg.dropout, cfg.norm)]
                ch = mc * mult
                if level in cfg.attention_levels:
                    layers.append(attention(ch))
                if level > 0 and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                self.up.append(nn.ModuleList(layers))

        self.out = nn.Sequential(
            make_norm(cfg.norm, ch), nn.SiLU(), zero_init(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        )

    @staticmethod
    def _run(layers: nn.ModuleList, h: Tensor, emb: Tensor, context: Tensor | None, mask: Tensor | None) -> Tensor:
        for layer in layers:
            if isinstance(layer, ResBlock):
                h = layer(h, emb)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, context, mask)
            else:
                h = layer(h)
        return h

    def forward(
        self,
        x: Tensor,
        t: Tensor,
        extra_emb: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
    ) -> Tensor:
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected x of shape (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        f = cfg.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {f} (2^(levels - 1))")
        emb = self.time_embed(timestep_embedding(t, cfg.model_channels).to(x.dtype))
        if extra_emb is not None:
            emb = emb + extra_emb
        h = self.input(x)
        hs = [h]
        for layers in self.down:
            h = self._run(layers, h, emb, context, context_mask)
            hs.append(h)
        h = self._run(self.middle, h, emb, context, context_mask)
        for layers in self.up:
            h = self._run(layers, torch.cat([h, hs.pop()], dim=1), emb, context, context_mask)
        return self.out(h)
