"""A noise-aware CLIP image tower: the embedding of the clean image, read from a diffusion model's noisy x_t.

GLIDE (Nichol et al. 2022, §2.3 and §3.2) guides its sampler with a CLIP whose image encoder was trained on noised
images, because a CLIP trained on clean images reads a noisy x_t as noise. Here the noised tower is distilled
from a clean one (``unclip train noised_clip``): it reads x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε at the decoder's
resolution and timestep and is trained so that cos(f(x_t, t), CLIP(x_0)) is as large as it can be. The optimum is
the direction of E[CLIP(x_0) | x_t]: the clean embedding where x_t still shows it, the average of what x_t could
become where it does not. Its gradient with respect to x_t is then the classifier gradient GLIDE guides with,
without a backward pass through the decoder (``unclip.diffusion.gradient_guidance.noised_gradient_guidance``).

The tower is the clean CLIP's ViT (``unclip.clip.model.VisionTower``) plus a timestep embedding added to every
token after ``ln_pre``; its last layer starts at zero, so a tower started from the clean CLIP's weights
(``from_clip``) computes exactly the clean embedding before training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.clip.model import CLIP, CLIPConfig, VisionConfig, VisionTower
from unclip.clip.transformer import ACTIVATIONS
from unclip.diffusion.schedules import SCHEDULES, NoiseSchedule
from unclip.model_folder import config_from_dict, load_weights, read_meta, read_weights, write_model_folder
from unclip.models.unet_blocks import timestep_embedding

FORMAT = "unclip-noised-clip"
FORMAT_VERSION = 1


@dataclass
class NoisedCLIPConfig:
    embed_dim: int = 256
    vision: VisionConfig = field(default_factory=VisionConfig)
    act: str = "gelu"
    eps: float = 1e-5
    resolution: int = 32  # the side of the x_t it reads: the decoder's resolution (resized to vision.image_size)
    schedule: str = "cosine"  # the decoder's noise schedule, whose timesteps t index
    num_steps: int = 1000

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        for name in ("embed_dim", "resolution", "num_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")


def config_for(clip: CLIPConfig, resolution: int, schedule: str = "cosine", num_steps: int = 1000) -> NoisedCLIPConfig:
    """The noised tower of a CLIP's image side (its config), for x_t of ``resolution`` px under ``schedule``."""
    return NoisedCLIPConfig(
        clip.embed_dim, dataclasses.replace(clip.vision), clip.act, clip.eps, resolution, schedule, num_steps
    )


class NoisedImageEncoder(nn.Module):
    """f(x_t, t): x_t ``(B, 3, r, r)`` (not clamped: it holds noise) and integer timesteps ``(B,)`` → embeddings."""

    def __init__(self, config: NoisedCLIPConfig) -> None:
        super().__init__()
        self.config = config
        w = config.vision.width
        self.visual = VisionTower(config.vision, config.act, config.eps)
        self.visual_proj = nn.Linear(w, config.embed_dim, bias=False)
        self.time = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        nn.init.zeros_(self.time[2].weight)  # zero at the start: the clean tower's embedding (module docs)
        nn.init.zeros_(self.time[2].bias)
        self.register_buffer("pixel_mean", torch.tensor(config.vision.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.vision.std).view(1, 3, 1, 1), persistent=False)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def forward(self, x_t: Tensor, t: Tensor, normalize: bool = True) -> Tensor:
        c = self.config
        if x_t.ndim != 4 or x_t.shape[1] != 3 or x_t.shape[-2:] != (c.resolution, c.resolution):
            raise ValueError(f"the noised CLIP reads x_t of shape (B, 3, {c.resolution}, {c.resolution}), "
                             f"got {tuple(x_t.shape)}")  # fmt: skip
        t = t.to(x_t.device).expand(x_t.shape[0]) if t.ndim == 0 else t.to(x_t.device)
        if t.shape != (x_t.shape[0],):
            raise ValueError(f"expected one timestep per image ({x_t.shape[0]},), got {tuple(t.shape)}")
        size = c.vision.image_size
        if c.resolution != size:  # resized as the clean CLIP resizes a decoder image (prepare_images), not clamped
            x_t = F.interpolate(x_t, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        x = ((x_t + 1) / 2 - self.pixel_mean.to(x_t.dtype)) / self.pixel_std.to(x_t.dtype)
        shift = self.time(timestep_embedding(t, c.vision.width).to(x.dtype))
        z = self.visual_proj(self.visual(x, shift=shift))
        return F.normalize(z, dim=-1) if normalize else z

    def save_pretrained(self, folder: str | Path, half: bool = False) -> Path:
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "config": dataclasses.asdict(self.config)}
        return write_model_folder(folder, meta, self, half=half)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> NoisedImageEncoder:
        folder = Path(folder)
        meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"config"}, "noised CLIP")
        model = cls(config_from_dict(NoisedCLIPConfig, meta.get("config"), f"{folder}/config.json: config"))
        load_weights(model, read_weights(folder), str(folder / "model.safetensors"))
        return model.to(device).eval()


def from_clip(clip: CLIP, resolution: int, schedule: str = "cosine", num_steps: int = 1000) -> NoisedImageEncoder:
    """A noised tower that starts as ``clip``'s image side: equal to it on clean images at any t until trained."""
    model = NoisedImageEncoder(config_for(clip.config, resolution, schedule, num_steps))
    model.load_state_dict(clip_image_state(clip.state_dict(), model), strict=True)
    return model


def clip_image_state(clip_state: dict[str, Tensor], model: NoisedImageEncoder) -> dict[str, Tensor]:
    """``model``'s state with the image tower and projection taken from a CLIP's state (its text side dropped);
    the timestep layers keep ``model``'s own values."""
    state = dict(model.state_dict())
    taken = {k: v for k, v in clip_state.items() if k.startswith(("visual.", "visual_proj."))}
    missing = sorted(k for k in state if k.startswith(("visual.", "visual_proj.")) and k not in taken)
    if missing:
        raise ValueError(f"the CLIP weights lack the image tower's {', '.join(missing[:4])}")
    state.update(taken)
    return state


def schedule_of(config: NoisedCLIPConfig) -> NoiseSchedule:
    """The noise schedule whose timesteps the tower reads."""
    return NoiseSchedule.named(config.schedule, config.num_steps)


def check_noised_clip(model: NoisedImageEncoder, decoder: nn.Module) -> None:
    """A noised tower guides a decoder only if it reads that decoder's x_t: its resolution, its noise schedule's
    timesteps and its CLIP's embedding size (``decoder`` is a ``unclip.models.decoder.Decoder``)."""
    c, d = model.config, decoder.config
    steps = NoiseSchedule.named(d.schedule).num_steps  # the decoder's schedule has the default length
    found = (c.resolution, c.schedule, c.num_steps, c.embed_dim)
    wanted = (d.resolution, d.schedule, steps, d.clip_dim)
    if found != wanted:
        raise ValueError(
            f"the noised CLIP reads {c.resolution} px x_t of the {c.schedule} schedule ({c.num_steps} steps) into "
            f"{c.embed_dim} dims, but the decoder draws {d.resolution} px under {d.schedule} ({steps} steps) for "
            f"{d.clip_dim}-dim z_i"
        )
