"""CLIP for unCLIP (DESIGN.md §2, layer 2): the interface, our trainable CLIP, its loss, and model folders.

    from unclip.clip import CLIP, PRESETS, load_clip, shapes_tokenizer

    model = CLIP(PRESETS["small"], shapes_tokenizer(1024, 64))
    z_t, token_states, mask = model.encode_text(["a red circle left of a blue square"])
    z_i = model.encode_image(images)          # (B, 3, H, W) float in [-1, 1], or uint8
    model.save_pretrained("runs/clip")        # config.json + model.safetensors + tokenizer.json
    model = load_clip("runs/clip")            # ours, or a transformers CLIP folder

See docs/clip.md.
"""

from unclip.clip.checkpoint import CheckpointError, from_pretrained, load_clip, save_pretrained
from unclip.clip.interface import CLIPEncoder, TextEncoding, prepare_images
from unclip.clip.loss import ContrastiveOutput, contrastive_loss
from unclip.clip.model import CLIP, PRESETS, CLIPConfig, TextConfig, VisionConfig
from unclip.clip.tokenizer import Tokenizer, byte_tokenizer, make_tokenizer, shapes_tokenizer, train_bpe

__all__ = [
    "CLIP",
    "PRESETS",
    "CLIPConfig",
    "CLIPEncoder",
    "CheckpointError",
    "ContrastiveOutput",
    "TextConfig",
    "TextEncoding",
    "Tokenizer",
    "VisionConfig",
    "byte_tokenizer",
    "contrastive_loss",
    "from_pretrained",
    "load_clip",
    "make_tokenizer",
    "prepare_images",
    "save_pretrained",
    "shapes_tokenizer",
    "train_bpe",
]
