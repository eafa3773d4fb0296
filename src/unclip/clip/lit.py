"""A locked-image CLIP: frozen pretrained towers with trained projection heads (LiT, Zhai et al. 2022).

No pretrained CLIP can be downloaded here (DESIGN.md §5), but two pretrained towers install from PyPI: the FID
Inception-v3 (images) and all-MiniLM-L6-v2 (text). LiT's finding is that a good frozen image tower plus a
contrastively trained text side gives a zero-shot CLIP at a fraction of the cost ("locked image, unlocked text").
Here **both** towers stay frozen and only the heads train — a LayerNorm and a linear map (or a small MLP) per
side, and the temperature: "LL" in LiT's notation. LiT finds tuning the text tower better, but only "LL" can
train entirely from cached tower features, which is what makes it train in minutes on a CPU once the features
exist (see ``unclip.clip.lit_features``).

:class:`LiTCLIP` implements the CLIP interface (``unclip.clip.interface``): ``encode_text`` returns the projected
pooled text feature as z_t plus the text tower's own token states and mask (frozen, ``width`` 384 for MiniLM;
the decoder and prior project token states themselves, so a LiT head for them would add nothing trainable by
the contrastive loss), and ``encode_image`` the projected image feature as z_i.

A model folder (``save_pretrained``) holds ``config.json`` (``"format": "unclip-lit"``, the config, and each
tower's identity: package and version) and ``model.safetensors`` with the **head weights only**; ``load_lit``
rebuilds the towers from the installed packages and refuses a folder whose towers differ from the installed ones.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.clip.interface import TextEncoding, prepare_images
from unclip.clip.lit_towers import (
    IMAGE_DIMS,
    IMAGE_TOWERS,
    TEXT_DIMS,
    TEXT_TOWERS,
    freeze,
    image_identity,
    image_tower,
    text_identity,
    text_tower,
)
from unclip.clip.model import MAX_LOGIT_SCALE
from unclip.model_folder import CheckpointError, config_from_dict, load_weights, read_meta, read_weights

FORMAT = "unclip-lit"
FORMAT_VERSION = 1
HEADS = ("linear", "mlp")


@dataclass
class LiTConfig:
    embed_dim: int = 256
    image_tower: str = "inception-v3-fid"
    text_tower: str = "all-minilm-l6-v2"
    image_size: int = 64  # images are resized and centre-cropped to this first (the tower then resizes to its own)
    context_length: int = 64  # token positions of the text tower ([CLS] … [SEP], padded)
    head: str = "linear"  # linear: LayerNorm + Linear; mlp: LayerNorm + Linear + GELU + Linear
    head_hidden: int = 1024  # width of the mlp head's hidden layer
    init_temperature: float = 0.07  # Radford et al. 2021 §2.5
    tower_seed: int = 0  # weights of the tiny-random towers

    def __post_init__(self) -> None:
        if self.image_tower not in IMAGE_TOWERS:
            raise ValueError(f"image_tower must be one of {', '.join(IMAGE_TOWERS)}, got {self.image_tower!r}")
        if self.text_tower not in TEXT_TOWERS:
            raise ValueError(f"text_tower must be one of {', '.join(TEXT_TOWERS)}, got {self.text_tower!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        for name in ("embed_dim", "image_size", "head_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.context_length < 3:
            raise ValueError(f"context_length must be >= 3 (BOS, one token, EOT), got {self.context_length}")
        if not 0 < self.init_temperature <= 1:
            raise ValueError(f"init_temperature must lie in (0, 1], got {self.init_temperature}")

    @property
    def image_dim(self) -> int:
        return IMAGE_DIMS[self.image_tower]

    @property
    def text_dim(self) -> int:
        return TEXT_DIMS[self.text_tower]


# Named presets: `tiny` (random towers, tests) and `default` (Inception-v3 + MiniLM, Shapes world at 64 px).
PRESETS: dict[str, LiTConfig] = {
    "tiny": LiTConfig(embed_dim=16, image_tower="tiny-random", text_tower="tiny-random", image_size=32,
                      context_length=96, head_hidden=32),
    "default": LiTConfig(),
}  # fmt: skip


def _head(d_in: int, config: LiTConfig) -> nn.Sequential:
    # LayerNorm first: Inception pool features are non-negative with a scale of their own and MiniLM's are unit
    # vectors; standardising each lets one learning rate fit both heads.
    if config.head == "linear":
        return nn.Sequential(nn.LayerNorm(d_in), nn.Linear(d_in, config.embed_dim))
    return nn.Sequential(
        nn.LayerNorm(d_in),
        nn.Linear(d_in, config.head_hidden),
        nn.GELU(),
        nn.Linear(config.head_hidden, config.embed_dim),
    )


class LiTHeads(nn.Module):
    """Everything LiT trains: a head per tower and the temperature. Maps tower features to embeddings."""

    def __init__(self, config: LiTConfig) -> None:
        super().__init__()
        self.config = config
        self.image_head = _head(config.image_dim, config)
        self.text_head = _head(config.text_dim, config)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))

    def temperature_scale(self) -> Tensor:
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    def image_embedding(self, features: Tensor, normalize: bool = True) -> Tensor:
        z = self.image_head(features.to(self.logit_scale.dtype))
        return F.normalize(z, dim=-1) if normalize else z

    def text_embedding(self, features: Tensor, normalize: bool = True) -> Tensor:
        z = self.text_head(features.to(self.logit_scale.dtype))
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, image_features: Tensor, text_features: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(z_i, z_t, temperature scale): the inputs of ``unclip.clip.loss.contrastive_loss``."""
        return self.image_embedding(image_features), self.text_embedding(text_features), self.temperature_scale()


class LiTCLIP(nn.Module):
    """Frozen ``image_tower`` and ``text_tower`` plus trained :class:`LiTHeads`; a :class:`CLIPEncoder`.

    Towers are injected (any modules with the contract of ``unclip.clip.lit_towers``), so tests use tiny ones.
    They never train: their parameters have ``requires_grad=False``, they stay in eval mode whatever ``train()``
    is called with (BatchNorm statistics and dropout must not move), and they run under ``no_grad``.
    """

    def __init__(
        self, config: LiTConfig, image_tower: nn.Module, text_tower: nn.Module, heads: LiTHeads | None = None
    ) -> None:
        super().__init__()
        for what, tower, attr, want in (
            ("image", image_tower, "feature_dim", config.image_dim),
            ("text", text_tower, "width", config.text_dim),
        ):
            got = getattr(tower, attr, None)
            if got != want:
                raise ValueError(f"the {what} tower gives {attr} {got}, but the config's heads expect {want}")
        if getattr(text_tower, "context_length", config.context_length) != config.context_length:
            raise ValueError(
                f"the text tower's context_length {text_tower.context_length} differs from the config's "
                f"{config.context_length}"
            )
        self.config = config
        self.image_tower = freeze(image_tower)
        self.text_tower = freeze(text_tower)
        self.heads = heads if heads is not None else LiTHeads(config)

    def train(self, mode: bool = True) -> LiTCLIP:
        super().train(mode)
        self.image_tower.eval()
        self.text_tower.eval()
        return self

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @property
    def device(self) -> torch.device:
        return self.heads.logit_scale.device

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.heads.logit_scale

    def temperature_scale(self) -> Tensor:
        return self.heads.temperature_scale()

    # ---- the towers (frozen): what the feature cache stores
    @torch.no_grad()
    def image_features(self, images: Tensor) -> Tensor:
        """Checked images (any accepted batch, see ``prepare_images``) → the image tower's features."""
        pixels = prepare_images(images, self.image_size).to(self.device)
        return self.image_tower(pixels).float()

    @torch.no_grad()
    def text_features(self, captions: list[str]) -> TextEncoding:
        """Captions → the text tower's pooled features, token states and mask."""
        out = self.text_tower(captions)
        return TextEncoding(out.embedding.float(), out.token_states.float(), out.mask)

    # ---- the interface
    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        return self.heads.image_embedding(self.image_features(images), normalize)

    def encode_text(self, captions: list[str], normalize: bool = True) -> TextEncoding:
        pooled, states, mask = self.text_features(captions)
        return TextEncoding(self.heads.text_embedding(pooled, normalize), states, mask)

    def forward(self, images: Tensor, captions: list[str]) -> tuple[Tensor, Tensor, Tensor]:
        """(z_i, z_t, temperature scale) straight from images and captions (training without a cache)."""
        return self.heads(self.image_features(images), self.text_features(captions).embedding)

    # ---- model folders
    def tower_identities(self) -> dict[str, Any]:
        return {"image": self.image_tower.identity(), "text": self.text_tower.identity()}

    def save_pretrained(self, folder: str | Path) -> Path:
        return save_lit(self.heads, folder, self.tower_identities())

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> LiTCLIP:
        return load_lit(folder, device)


def tower_identities(config: LiTConfig) -> dict[str, Any]:
    """The identities of the towers ``config`` names, without loading real weights (see ``lit_towers``)."""
    return {
        "image": image_identity(config.image_tower, config.tower_seed),
        "text": text_identity(config.text_tower, config.context_length, config.tower_seed),
    }


def build_lit(config: LiTConfig, heads: LiTHeads | None = None, device: torch.device | str = "cpu") -> LiTCLIP:
    """A LiT CLIP with the towers ``config`` names, built from the installed packages."""
    towers = (
        image_tower(config.image_tower, config.tower_seed),
        text_tower(config.text_tower, config.context_length, config.tower_seed),
    )
    return LiTCLIP(config, *towers, heads=heads).to(device)


def save_lit(heads: LiTHeads, folder: str | Path, towers: dict[str, Any]) -> Path:
    """Write a LiT model folder: config, tower identities and the head weights (atomically)."""
    from unclip.model_folder import write_model_folder

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": dataclasses.asdict(heads.config),
        "towers": towers,
    }
    return write_model_folder(folder, meta, heads)


def _differences(saved: Any, installed: Any, where: str) -> list[str]:
    if isinstance(saved, dict) and isinstance(installed, dict):
        out = []
        for key in sorted(set(saved) | set(installed)):
            out += _differences(saved.get(key, "<missing>"), installed.get(key, "<missing>"), f"{where}.{key}")
        return out
    return [] if saved == installed else [f"{where}: folder has {saved!r}, installed {installed!r}"]


def load_lit(folder: str | Path, device: torch.device | str = "cpu") -> LiTCLIP:
    """Load a LiT model folder strictly; its towers come from the installed packages and must match the record."""
    folder = Path(folder)
    meta = read_meta(folder, FORMAT, FORMAT_VERSION, {"config", "towers"}, "LiT CLIP model")
    config = config_from_dict(LiTConfig, meta.get("config"), "config")
    heads = LiTHeads(config)
    load_weights(heads, read_weights(folder), str(folder / "model.safetensors"))
    problems = _differences(meta.get("towers"), tower_identities(config), "towers")
    if problems:
        raise CheckpointError(
            f"{folder}: its heads were trained on other tower weights than the installed ones ("
            + "; ".join(problems)
            + "); install the recorded package versions"
        )
    return build_lit(config, heads, device).eval()
