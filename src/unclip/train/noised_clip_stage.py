"""``unclip train noised_clip``: a noise-aware CLIP image tower distilled from a clean one (``unclip.clip.noised``).

Each step noises the batch to a uniformly drawn timestep of the decoder's schedule, x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε,
and trains f(x_t, t) toward the frozen clean CLIP's embedding of x_0 by cosine: the objective the sampler's
guidance asks of it (``noised_gradient_guidance``), read by the clean CLIP exactly as the ``denoiser`` gradient's
objective reads a decoder image. GLIDE (§2.3) trained its noised CLIP contrastively from scratch; distilling from the
CLIP whose z_i the decoder inverts keeps the two embedding spaces one.

Start from the clean CLIP's image tower with ``--set train.init_from=CLIP_DIR`` (the same folder as
``model.clip``): the tower then begins as the clean embedding at every t and only learns to read noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.clip.model import PRESETS
from unclip.clip.noised import NoisedCLIPConfig, NoisedImageEncoder, clip_image_state, config_for, schedule_of
from unclip.diffusion import append_dims
from unclip.train.config import TrainConfig
from unclip.train.diffusion_draws import draw_timesteps_and_noise
from unclip.train.frozen_clip import FrozenCLIPs
from unclip.train.stage import Batch, Preset, Stage, StepOutput
from unclip.transfers import table_on

# Metrics split at these timestep fractions: how well the tower reads nearly clean, middling and noisy x_t.
_BANDS = ((0.0, 0.3, "cos_low"), (0.3, 0.7, "cos_mid"), (0.7, 1.0, "cos_high"))


@dataclass
class NoisedClipStageConfig:
    clip: str = ""  # folder of the clean CLIP whose embeddings the tower learns to read from x_t (required)
    encoder: NoisedCLIPConfig = field(default_factory=lambda: config_for(PRESETS["small"], 32))


class NoisedClipStage(Stage[NoisedClipStageConfig]):
    name = "noised_clip"
    config_type = NoisedClipStageConfig

    def __init__(self) -> None:
        self._clips = FrozenCLIPs("noised CLIP training (a distillation)")

    def presets(self) -> dict[str, Preset[NoisedClipStageConfig]]:
        return {
            "small": Preset(
                NoisedClipStageConfig(encoder=config_for(PRESETS["small"], 32)),
                TrainConfig(steps=4000, batch_size=64, lr=1e-4, warmup_steps=100, ema_decay=0.999, grad_clip=1.0,
                            checkpoint_every=500),
                "the small CLIP's tower on the bundled decoder's 32 px x_t (start it from the CLIP: train.init_from)",
            ),
            "small-64": Preset(
                NoisedClipStageConfig(encoder=config_for(PRESETS["small"], 64)),
                TrainConfig(steps=4000, batch_size=64, lr=1e-4, warmup_steps=100, ema_decay=0.999, grad_clip=1.0,
                            checkpoint_every=500),
                "the small CLIP's tower on a 64 px decoder's x_t",
            ),
            "tiny": Preset(
                NoisedClipStageConfig(encoder=config_for(PRESETS["tiny"], 32)),
                TrainConfig(steps=100, batch_size=8, lr=1e-3, warmup_steps=5, ema_decay=0.99, checkpoint_every=50),
                "the tiny CLIP's tower at 32 px: seconds on a CPU (tests)",
            ),
        }  # fmt: skip

    def clip_model(self, config: NoisedClipStageConfig, device: torch.device | str = "cpu") -> nn.Module:
        def check(clip: nn.Module) -> None:
            if clip.embed_dim != config.encoder.embed_dim:
                raise ValueError(f"the CLIP in {config.clip!r} embeds in {clip.embed_dim} dims but the noised tower "
                                 f"in {config.encoder.embed_dim}")  # fmt: skip

        return self._clips.get(config.clip, device, check)

    def prepare(self, config: NoisedClipStageConfig) -> None:
        self.clip_model(config)  # a missing or mismatched CLIP fails here, before any work

    def build(self, config: NoisedClipStageConfig) -> nn.Module:
        return NoisedImageEncoder(config.encoder)

    def init_state(
        self, config: NoisedClipStageConfig, model: nn.Module, loaded: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """A CLIP folder (its text side is there too) starts the tower from its image side; a noised CLIP's folder
        loads as it is."""
        if "logit_scale" in loaded:  # a CLIP's state
            return clip_image_state(loaded, model)  # type: ignore[arg-type]
        return loaded

    def export(self, model: nn.Module, config: NoisedClipStageConfig, folder: str | Path) -> Path:
        return model.save_pretrained(folder)  # type: ignore[operator]

    def resolution(self, config: NoisedClipStageConfig) -> int:
        return config.encoder.resolution

    def loss(self, model: nn.Module, batch: Batch, config: NoisedClipStageConfig) -> StepOutput:
        x0, device = batch.image, batch.image.device
        clip = self.clip_model(config, device)
        with torch.no_grad():
            target = clip.encode_image(x0).float()  # the objective's reading of a clean decoder image
        table = table_on(schedule_of(config.encoder).alpha_bar, device)
        t, noise = draw_timesteps_and_noise(batch.generators(), len(table), x0.shape, device)
        ab = append_dims(table[t].to(x0.dtype), x0.ndim)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
        cos = F.cosine_similarity(model(x_t, t).float(), target, dim=-1)
        metrics: dict[str, float | Tensor] = {"cos": cos.detach().mean()}
        frac = (t + 1).float() / len(table)
        for lo, hi, name in _BANDS:  # a band no sample fell in this step reads 0 (rare at the presets' batches)
            band = ((frac > lo) & (frac <= hi)).float()
            metrics[name] = (cos.detach() * band).sum() / band.sum().clamp_min(1.0)
        return StepOutput((1 - cos).mean(), metrics)
