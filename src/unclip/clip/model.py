"""Our CLIP: a ViT image tower and a causal text transformer pooled at EOT (Radford et al. 2021, §2.4).

One class serves every CLIP we run: ours, trained from scratch, and standard checkpoints converted by
``unclip.clip.hf`` (same architecture; the config records activation, pooling rule and pixel statistics).

Embeddings are projections of one pooled state per tower (the class token for images, the EOT token for text,
Radford §2.4), L2-normalised unless asked otherwise; similarity is their dot product times the learned
temperature ``exp(logit_scale)``, initialised to 1/0.07 and clipped at 100 so training stays stable (§2.5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.clip.interface import TextEncoding, prepare_images
from unclip.clip.tokenizer import Tokenizer
from unclip.clip.transformer import ACTIVATIONS, Transformer
from unclip.transfers import to_device

POOLING = ("first_eos", "argmax")
MAX_LOGIT_SCALE = math.log(100.0)  # Radford §2.5: temperature clipped to keep logits at most 100


@dataclass
class VisionConfig:
    image_size: int = 64
    patch_size: int = 8
    width: int = 256
    layers: int = 6
    heads: int = 4
    mlp: int = 1024
    # Pixel statistics the tower was trained with; (0.5, 0.5) means "the [-1, 1] input as is".
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        self.mean, self.std = tuple(self.mean), tuple(self.std)  # type: ignore[assignment]  # JSON gives lists
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"vision width {self.width} is not divisible by {self.heads} heads")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"vision mean/std must be 3 values with std > 0, got {self.mean} / {self.std}")


@dataclass
class TextConfig:
    vocab_size: int = 1024
    context_length: int = 64
    width: int = 256
    layers: int = 6
    heads: int = 4
    mlp: int = 1024
    eos_token_id: int = 1
    # "first_eos": pool at the first EOT token; "argmax": at the largest token id (OpenAI's rule, right when EOT
    # is the last id of the vocabulary; transformers keeps it for old configs).
    pooling: str = "first_eos"

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"text width {self.width} is not divisible by {self.heads} heads")
        if self.pooling not in POOLING:
            raise ValueError(f"text pooling must be one of {', '.join(POOLING)}, got {self.pooling!r}")
        if not 0 <= self.eos_token_id < self.vocab_size:
            raise ValueError(f"eos_token_id {self.eos_token_id} is outside the vocabulary of {self.vocab_size}")


@dataclass
class CLIPConfig:
    embed_dim: int = 256
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    act: str = "gelu"
    eps: float = 1e-5
    init_temperature: float = 0.07

    def __post_init__(self) -> None:
        if self.act not in ACTIVATIONS:
            raise ValueError(f"act must be one of {', '.join(ACTIVATIONS)}, got {self.act!r}")
        if self.embed_dim < 1:
            raise ValueError(f"embed_dim must be >= 1, got {self.embed_dim}")
        if not 0 < self.init_temperature <= 1:
            raise ValueError(f"init_temperature must lie in (0, 1], got {self.init_temperature}")


def _preset(embed: int, img: int, patch: int, vw: int, vl: int, vh: int, tw: int, tl: int, th: int, ctx: int,
            vocab: int, act: str = "gelu") -> CLIPConfig:  # fmt: skip
    return CLIPConfig(
        embed_dim=embed,
        vision=VisionConfig(image_size=img, patch_size=patch, width=vw, layers=vl, heads=vh, mlp=4 * vw),
        text=TextConfig(vocab_size=vocab, context_length=ctx, width=tw, layers=tl, heads=th, mlp=4 * tw),
        act=act,
    )


# Named presets (DiT-style plain dict). ``vit-b-32`` is the shape of OpenAI's ViT-B/32 (Radford Table 20).
PRESETS: dict[str, CLIPConfig] = {
    "tiny": _preset(32, 32, 8, 64, 2, 2, 64, 2, 2, 48, 1024),
    "mini": _preset(128, 32, 4, 128, 3, 4, 128, 3, 4, 40, 1024),
    "small": _preset(256, 64, 8, 256, 6, 4, 256, 6, 4, 64, 1024),
    "vit-b-32": _preset(512, 224, 32, 768, 12, 12, 512, 12, 8, 77, 49408, act="quick_gelu"),
}


class VisionTower(nn.Module):
    """ViT (Dosovitskiy et al. 2021) as CLIP uses it: an extra LayerNorm before the transformer (Radford §2.4)."""

    def __init__(self, cfg: VisionConfig, act: str, eps: float) -> None:
        super().__init__()
        w, n = cfg.width, (cfg.image_size // cfg.patch_size) ** 2
        self.patch = nn.Conv2d(3, w, cfg.patch_size, cfg.patch_size, bias=False)
        self.cls = nn.Parameter(torch.randn(w) * w**-0.5)
        self.pos = nn.Parameter(torch.randn(n + 1, w) * 0.01)
        self.ln_pre = nn.LayerNorm(w, eps=eps)
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp, act, eps)
        self.ln_post = nn.LayerNorm(w, eps=eps)

    def forward(self, x: Tensor, shift: Tensor | None = None) -> Tensor:
        """Normalised pixels ``(B, 3, S, S)`` → the pooled class-token state ``(B, width)``. ``shift`` ``(B, width)``,
        if given, is added to every token after ``ln_pre`` (the noised tower's timestep, ``unclip.clip.noised``)."""
        h = self.patch(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.cls.to(h.dtype).expand(h.shape[0], 1, -1), h], dim=1) + self.pos.to(h.dtype)
        h = self.ln_pre(h)
        if shift is not None:
            h = h + shift[:, None, :].to(h.dtype)
        h = self.transformer(h)
        return self.ln_post(h[:, 0])


class TextTower(nn.Module):
    """GPT-2-style text transformer with a causal mask (Radford §2.4), so each state sees only earlier tokens."""

    def __init__(self, cfg: TextConfig, act: str, eps: float) -> None:
        super().__init__()
        self.cfg = cfg
        self.token = nn.Embedding(cfg.vocab_size, cfg.width)
        self.pos = nn.Parameter(torch.randn(cfg.context_length, cfg.width) * 0.01)
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp, act, eps)
        self.ln_final = nn.LayerNorm(cfg.width, eps=eps)

    def eot_positions(self, ids: Tensor) -> Tensor:
        if self.cfg.pooling == "argmax":
            return ids.argmax(dim=-1)
        is_eos = ids == self.cfg.eos_token_id
        # Checked where reading the answer costs nothing: ids on an accelerator came from the tokenizer (which always
        # ends a sequence with EOT, truncating first), and reading them there would stall every training step.
        if ids.device.type == "cpu" and not bool(is_eos.any(dim=-1).all()):
            raise ValueError(f"every token sequence must contain the EOT token {self.cfg.eos_token_id}")
        return is_eos.int().argmax(dim=-1)  # the first maximum: the first EOT

    def forward(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids ``(B, L)`` → (pooled EOT state ``(B, width)``, token states ``(B, L, width)``)."""
        if ids.ndim != 2 or ids.shape[1] > self.cfg.context_length:
            raise ValueError(f"token ids must be (B, L<={self.cfg.context_length}), got {tuple(ids.shape)}")
        h = self.token(ids) + self.pos[: ids.shape[1]]
        h = self.ln_final(self.transformer(h, causal=True))
        return h[torch.arange(h.shape[0], device=h.device), self.eot_positions(ids)], h


class CLIP(nn.Module):
    """Contrastive image and text encoders; implements :class:`unclip.clip.interface.CLIPEncoder`."""

    def __init__(self, config: CLIPConfig, tokenizer: Tokenizer | None = None) -> None:
        super().__init__()
        self.config = config
        if tokenizer is not None:
            check_tokenizer(config, tokenizer)
        self.tokenizer = tokenizer
        self.visual = VisionTower(config.vision, config.act, config.eps)
        self.text = TextTower(config.text, config.act, config.eps)
        self.visual_proj = nn.Linear(config.vision.width, config.embed_dim, bias=False)
        self.text_proj = nn.Linear(config.text.width, config.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / config.init_temperature)))
        self.register_buffer("pixel_mean", torch.tensor(config.vision.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.vision.std).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        # Small normal initialisation as in CLIP's reference code; projections scaled by 1/sqrt(width).
        for name, p in self.named_parameters():
            if name.endswith(("qkv.weight", "out.weight", "fc1.weight", "fc2.weight")) or name == "text.token.weight":
                nn.init.normal_(p, std=0.02)
            elif name.endswith(("qkv.bias", "out.bias", "fc1.bias", "fc2.bias")):
                nn.init.zeros_(p)
        nn.init.normal_(self.visual_proj.weight, std=self.config.vision.width**-0.5)
        nn.init.normal_(self.text_proj.weight, std=self.config.text.width**-0.5)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def temperature_scale(self) -> Tensor:
        """``exp(logit_scale)`` clipped at 100 (Radford §2.5)."""
        return self.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp()

    # ---- tensors in, tensors out (what training calls)
    def image_features(self, pixels: Tensor, normalize: bool = True) -> Tensor:
        """Pixels ``(B, 3, S, S)`` in [-1, 1] at the tower's size → embeddings ``(B, embed_dim)``."""
        x = ((pixels + 1) / 2 - self.pixel_mean.to(pixels.dtype)) / self.pixel_std.to(pixels.dtype)
        z = self.visual_proj(self.visual(x))
        return F.normalize(z, dim=-1) if normalize else z

    def text_features(self, ids: Tensor, normalize: bool = True) -> tuple[Tensor, Tensor]:
        pooled, states = self.text(ids)
        z = self.text_proj(pooled)
        return (F.normalize(z, dim=-1) if normalize else z), states

    def forward(self, pixels: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(image embeddings, text embeddings, temperature scale): the inputs of ``unclip.clip.loss``."""
        return self.image_features(pixels), self.text_features(ids)[0], self.temperature_scale()

    # ---- the interface: captions and images in
    def tokenize(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        if self.tokenizer is None:
            raise ValueError("this CLIP has no tokenizer; build it with one or load it from a model folder")
        return self.tokenizer(captions)

    def encode_text(self, captions: list[str], normalize: bool = True) -> TextEncoding:
        ids, mask = self.tokenize(captions)
        ids, mask = to_device(ids, self.device), to_device(mask, self.device)
        z_t, states = self.text_features(ids, normalize)
        return TextEncoding(z_t, states, mask)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        pixels = prepare_images(images, self.image_size).to(self.device, self.logit_scale.dtype)
        return self.image_features(pixels, normalize)

    # ---- model folders (``unclip.clip.checkpoint``; imported lazily, it imports this module)
    def save_pretrained(self, folder: str | Path, half: bool = False) -> Path:
        from unclip.clip.checkpoint import save_pretrained

        return save_pretrained(self, folder, half)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str = "cpu") -> CLIP:
        """Load our folder or a ``transformers`` CLIP folder (see :func:`unclip.clip.checkpoint.load_clip`)."""
        from unclip.clip.checkpoint import load_clip

        return load_clip(folder, device)


def check_tokenizer(config: CLIPConfig, tokenizer: Tokenizer) -> None:
    """The tokenizer must fit the text tower: ids inside the embedding table, same context, same EOT id."""
    t = config.text
    if tokenizer.vocab_size > t.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} tokens but the text tower embeds only {t.vocab_size}")
    if tokenizer.context_length != t.context_length:
        raise ValueError(
            f"tokenizer context_length {tokenizer.context_length} differs from the text tower's {t.context_length}"
        )
    if t.pooling == "first_eos" and tokenizer.eos_id != t.eos_token_id:
        raise ValueError(f"tokenizer EOT id {tokenizer.eos_id} differs from the text tower's {t.eos_token_id}")
