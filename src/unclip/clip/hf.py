"""Load a CLIP stored in Hugging Face ``transformers`` format from a local folder, without ``transformers``.

Two layouts are read: one ``CLIPModel`` folder (``config.json`` with ``model_type: clip``, weights, tokenizer
files), and the diffusers / Karlo layout of a pipeline folder with ``text_encoder/``
(``CLIPTextModelWithProjection``), ``image_encoder/`` (``CLIPVisionModelWithProjection``) and ``tokenizer/``.
Weights are renamed into :class:`unclip.clip.model.CLIP` (the same architecture as OpenAI's CLIP, Radford et
al. 2021); every tensor of the file must be used and every parameter filled, or loading fails with the names.
The test suite checks the result against ``transformers``' own forward.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from unclip.clip.model import CLIP, CLIPConfig, TextConfig, VisionConfig
from unclip.clip.tokenizer import BOS, EOS, TOKENIZER_FILE, Tokenizer
from unclip.model_folder import CheckpointError, load_weights

# OpenAI's pixel statistics (CLIPImageProcessor defaults), used when the folder has no preprocessor_config.json.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_LOGIT_SCALE = 2.6592  # transformers' logit_scale_init_value: log(1/0.07)
_ACTS = {"quick_gelu": "quick_gelu", "gelu": "gelu"}


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from err


def is_hf_clip(folder: str | Path) -> bool:
    folder = Path(folder)
    if (folder / "config.json").is_file():
        return _json(folder / "config.json").get("model_type") == "clip"
    return (folder / "text_encoder" / "config.json").is_file() and (folder / "image_encoder" / "config.json").is_file()


def read_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of a transformers folder: ``model.safetensors``, its sharded form, or ``pytorch_model.bin``."""
    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        out: dict[str, Tensor] = {}
        for shard in sorted(set(_json(index)["weight_map"].values())):
            out.update(load_file(str(folder / shard)))
        return out
    legacy = folder / "pytorch_model.bin"
    if legacy.is_file():  # weights_only refuses pickled code, so this is as safe as it gets for .bin files
        return torch.load(legacy, map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


_LAYER = re.compile(r"^(?P<tower>text|vision)_model\.encoder\.layers\.(?P<i>\d+)\.(?P<rest>.+)$")
_LAYER_NAMES = {
    "layer_norm1": "ln1", "layer_norm2": "ln2", "self_attn.out_proj": "attn.out", "mlp.fc1": "fc1", "mlp.fc2": "fc2",
}  # fmt: skip
_FIXED = {
    "vision_model.embeddings.patch_embedding.weight": "visual.patch.weight",
    "vision_model.embeddings.class_embedding": "visual.cls",
    "vision_model.embeddings.position_embedding.weight": "visual.pos",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "text_model.embeddings.token_embedding.weight": "text.token.weight",
    "text_model.embeddings.position_embedding.weight": "text.pos",
    "text_model.final_layer_norm.weight": "text.ln_final.weight",
    "text_model.final_layer_norm.bias": "text.ln_final.bias",
    "visual_projection.weight": "visual_proj.weight",
    "text_projection.weight": "text_proj.weight",
    "logit_scale": "logit_scale",
}


def convert_state_dict(hf: dict[str, Tensor]) -> dict[str, Tensor]:
    """transformers CLIP names → ours; q/k/v projections fused into one; unknown names are an error."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str, str], dict[str, Tensor]] = {}
    unknown = []
    for key, value in hf.items():
        if key.endswith("embeddings.position_ids"):
            continue  # a constant buffer some versions saved; it holds no weights
        if key in _FIXED:
            out[_FIXED[key]] = value
            continue
        m = _LAYER.match(key)
        if m is None:
            unknown.append(key)
            continue
        prefix = f"{'visual' if m['tower'] == 'vision' else 'text'}.transformer.blocks.{m['i']}."
        rest = m["rest"]
        q = re.match(r"^self_attn\.(q|k|v)_proj\.(weight|bias)$", rest)
        if q:
            qkv.setdefault((prefix, q[2], m["tower"]), {})[q[1]] = value
            continue
        module, _, param = rest.rpartition(".")
        if module not in _LAYER_NAMES:
            unknown.append(key)
            continue
        out[prefix + _LAYER_NAMES[module] + "." + param] = value
    for (prefix, param, _), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"{prefix}: attention has only {sorted(parts)} projections ({param})")
        out[f"{prefix}attn.qkv.{param}"] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    if unknown:
        raise CheckpointError(f"unexpected key(s) in the transformers weights: {', '.join(sorted(unknown)[:6])}")
    return out


def _tower_value(cfgs: list[dict[str, Any]], name: str, default: Any) -> Any:
    values = {json.dumps(c.get(name, default)) for c in cfgs}
    if len(values) != 1:
        raise CheckpointError(f"text and vision towers differ in {name} ({', '.join(sorted(values))}); unsupported")
    return json.loads(values.pop())


def config_from_hf(
    text: dict[str, Any], vision: dict[str, Any], projection_dim: int, pixel: dict[str, Any]
) -> CLIPConfig:
    act = _tower_value([text, vision], "hidden_act", "quick_gelu")
    if act not in _ACTS:
        raise CheckpointError(f"unsupported activation {act!r}; expected one of {', '.join(_ACTS)}")
    eos = int(text.get("eos_token_id", 49407))
    try:
        return CLIPConfig(
            embed_dim=projection_dim,
            vision=VisionConfig(
                image_size=int(vision.get("image_size", 224)), patch_size=int(vision.get("patch_size", 32)),
                width=int(vision.get("hidden_size", 768)), layers=int(vision.get("num_hidden_layers", 12)),
                heads=int(vision.get("num_attention_heads", 12)), mlp=int(vision.get("intermediate_size", 3072)),
                mean=tuple(pixel.get("image_mean", OPENAI_MEAN)), std=tuple(pixel.get("image_std", OPENAI_STD)),
            ),
            text=TextConfig(
                vocab_size=int(text.get("vocab_size", 49408)),
                context_length=int(text.get("max_position_embeddings", 77)),
                width=int(text.get("hidden_size", 512)), layers=int(text.get("num_hidden_layers", 12)),
                heads=int(text.get("num_attention_heads", 8)), mlp=int(text.get("intermediate_size", 2048)),
                # transformers keeps OpenAI's argmax rule for configs whose eos_token_id is the old wrong value 2.
                eos_token_id=eos, pooling="argmax" if eos == 2 else "first_eos",
            ),
            act=_ACTS[act],
            eps=float(_tower_value([text, vision], "layer_norm_eps", 1e-5)),
        )  # fmt: skip
    except ValueError as err:
        raise CheckpointError(f"transformers CLIP config cannot be converted: {err}") from err


def load_hf_tokenizer(folder: Path, context_length: int) -> Tokenizer | None:
    """The folder's tokenizer (``tokenizer.json``, or CLIP's ``vocab.json`` + ``merges.txt``), or None if absent."""
    special = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            for k, v in _json(folder / name).items():
                if k in ("bos_token", "eos_token", "pad_token") and k not in special:
                    special[k] = v["content"] if isinstance(v, dict) else v
    bos, eos = special.get("bos_token", BOS), special.get("eos_token", EOS)
    pad = special.get("pad_token", eos)
    if (folder / TOKENIZER_FILE).is_file():
        return Tokenizer.load(folder, {"context_length": context_length, "bos": bos, "eos": eos, "pad": pad})
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        from unclip.clip.tokenizer import clip_bpe_from_files

        return Tokenizer(
            clip_bpe_from_files(folder / "vocab.json", folder / "merges.txt"), context_length, bos, eos, pad
        )
    return None


# A stand-in image tower for text-only folders (Karlo's text-to-image folder has no image_encoder/): the smallest
# VisionConfig, left at its random initialisation. Callers that allow it must refuse to encode images.
_NO_VISION = {"image_size": 32, "patch_size": 32, "hidden_size": 8, "num_hidden_layers": 1,
              "num_attention_heads": 1, "intermediate_size": 8}  # fmt: skip


def has_image_tower(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / "config.json").is_file() or (folder / "image_encoder" / "config.json").is_file()


def load_hf_clip(folder: str | Path, device: torch.device | str = "cpu", text_only: bool = False) -> CLIP:
    """A transformers CLIP folder (``CLIPModel``, or Karlo's text_encoder/ + image_encoder/) as our :class:`CLIP`.

    ``text_only`` accepts a Karlo-layout folder without ``image_encoder/``: its image tower is then a tiny random
    stand-in, which the caller must never use (``unclip.pipeline.diffusers_folder`` refuses image encoding)."""
    folder = Path(folder)
    stand_in = text_only and not has_image_tower(folder)
    if (folder / "config.json").is_file():
        cfg = _json(folder / "config.json")
        if cfg.get("model_type") != "clip":
            raise CheckpointError(f"{folder}/config.json has model_type {cfg.get('model_type')!r}, expected 'clip'")
        text, vision = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
        weights = read_weights(folder)
        pixel_dir, tok_dir, proj = folder, folder, int(cfg.get("projection_dim", 512))
    else:
        tdir, vdir = folder / "text_encoder", folder / "image_encoder"
        text = _json(tdir / "config.json")
        vision = (
            {**_NO_VISION, "hidden_act": text.get("hidden_act", "quick_gelu")}
            if stand_in
            else _json(vdir / "config.json")
        )
        proj = int(text.get("projection_dim", 512))
        if int(vision.get("projection_dim", proj)) != proj:
            raise CheckpointError(f"text projection_dim {proj} differs from vision {vision.get('projection_dim')}")
        weights = {**read_weights(tdir), **({} if stand_in else read_weights(vdir))}
        # CLIPVisionModelWithProjection / CLIPTextModelWithProjection carry no temperature; use CLIP's initial one.
        weights.setdefault("logit_scale", torch.tensor(DEFAULT_LOGIT_SCALE))
        pixel_dir = (
            folder / "feature_extractor" if (folder / "feature_extractor").is_dir() else folder / "image_encoder"
        )
        tok_dir = folder / "tokenizer"
    pixel_file = pixel_dir / "preprocessor_config.json"
    pixel = _json(pixel_file) if pixel_file.is_file() else {}
    config = config_from_hf(text, vision, proj, pixel)
    tokenizer = load_hf_tokenizer(tok_dir, config.text.context_length)
    model = CLIP(config, tokenizer)
    state = convert_state_dict(weights)
    if stand_in:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("visual")})
    load_weights(model, state, f"transformers CLIP in {folder}")
    return model.to(device).eval()
