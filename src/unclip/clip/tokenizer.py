"""Caption tokenizers: lower-cased byte-level BPE, as CLIP uses (Radford et al. 2021, §2.4).

Byte-level BPE handles any input text: every string is a sequence of bytes and every byte is in the base
vocabulary, so there is no unknown token. We use Hugging Face ``tokenizers`` (a fast Rust implementation) for
three kinds of vocabulary, all stored the same way (``tokenizer.json`` in the model folder):

- ``bytes``: the 256 bytes and no merges: needs no training, long sequences (one token per character);
- a BPE trained on captions (:func:`train_bpe`; :func:`shapes_tokenizer` trains one on Shapes-world captions);
- a standard CLIP vocabulary read from a ``transformers`` folder (``unclip.clip.hf``).

Sequences are ``[BOS] tokens [EOT] [PAD]...``. Policy for captions longer than the context: the tokens are cut
to ``context_length - 2`` so that EOT, where the text tower pools, is always present; a warning names the caption.
Empty or non-string captions are errors (an empty caption would silently encode as "nothing").
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as _HFTokenizer

BOS, EOS, PAD = "<|startoftext|>", "<|endoftext|>", "<|pad|>"
TOKENIZER_FILE = "tokenizer.json"


def check_captions(captions: object) -> list[str]:
    """``captions`` as a list of non-empty strings, or ValueError naming the offending value."""
    if isinstance(captions, str) or not isinstance(captions, Sequence):
        raise ValueError(f"captions must be a list of strings, got {type(captions).__name__}: {captions!r:.80}")
    if len(captions) == 0:
        raise ValueError("captions is an empty list; pass at least one caption")
    for i, c in enumerate(captions):
        if not isinstance(c, str):
            raise ValueError(f"caption {i} must be a string, got {type(c).__name__}: {c!r:.80}")
        if not c.strip():
            raise ValueError(f"caption {i} is empty ({c!r}); CLIP needs some text to encode")
        try:
            c.encode("utf-8")
        except UnicodeEncodeError:  # bytes that were not UTF-8 on the command line arrive as lone surrogates
            raise ValueError(f"caption {i} is not valid text (bytes that are not UTF-8?): {c!r:.80}") from None
    return list(captions)


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus CLIP's framing: BOS, EOT, padding to a fixed context length."""

    def __init__(
        self, tokenizer: _HFTokenizer, context_length: int, bos: str = BOS, eos: str = EOS, pad: str | None = PAD
    ) -> None:
        if context_length < 3:
            raise ValueError(f"context_length must be >= 3 (BOS, one token, EOT), got {context_length}")
        self.hf = tokenizer
        self.context_length = context_length
        self.bos, self.eos, self.pad = bos, eos, pad if pad is not None else eos
        ids = {name: tokenizer.token_to_id(name) for name in {self.bos, self.eos, self.pad}}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks the special token(s) {', '.join(missing)}")
        self.bos_id, self.eos_id, self.pad_id = ids[self.bos], ids[self.eos], ids[self.pad]

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def tokenize(self, captions: Sequence[str]) -> list[list[int]]:
        """Token ids of each caption, framed by BOS and EOT and truncated (with a warning) to the context."""
        captions = check_captions(captions)
        out = []
        room = self.context_length - 2
        for enc, text in zip(self.hf.encode_batch(captions, add_special_tokens=False), captions, strict=True):
            ids = enc.ids
            if len(ids) > room:
                warnings.warn(
                    f"caption of {len(ids)} tokens truncated to context length {self.context_length}: {text!r:.100}",
                    stacklevel=3,
                )
                ids = ids[:room]
            out.append([self.bos_id, *ids, self.eos_id])
        return out

    def __call__(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: int64 ``(B, context_length)`` padded with PAD, and bool ``(B, context_length)``."""
        seqs = self.tokenize(captions)
        ids = torch.full((len(seqs), self.context_length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), self.context_length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = True
        return ids, mask

    def trimmed(self, captions: Sequence[str]) -> torch.Tensor:
        """``ids`` cut after the batch's longest caption: ``(B, L)`` with L = the longest sequence (BOS..EOT).

        For a causal text tower pooled at EOT this changes no output: no state up to a caption's EOT attends to
        the padding after it. Training uses it, since the fixed context is mostly padding (Shapes-world captions
        take 8-20 of 64 positions) and text-tower cost grows with L, faster than linearly through attention.
        """
        ids, mask = self(captions)
        return ids[:, : int(mask.sum(1).max())]

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([int(i) for i in ids], skip_special_tokens=True)

    # ------------------------------------------------------------------ storage
    def settings(self) -> dict[str, Any]:
        return {"context_length": self.context_length, "bos": self.bos, "eos": self.eos, "pad": self.pad}

    def save(self, folder: str | Path) -> None:
        self.hf.save(str(Path(folder) / TOKENIZER_FILE))

    @classmethod
    def load(cls, folder: str | Path, settings: dict[str, Any]) -> Tokenizer:
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: a CLIP model folder keeps its tokenizer there")
        unknown = sorted(set(settings) - {"context_length", "bos", "eos", "pad"})
        if unknown:
            raise ValueError(f"tokenizer settings in {folder}: unknown key(s) {', '.join(unknown)}")
        try:
            hf = _HFTokenizer.from_file(str(path))
        except Exception as err:  # the Rust library raises its own exception type
            raise ValueError(f"{path} is not a valid tokenizers file: {err}") from err
        return cls(hf, **settings)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tokenizer)
            and self.settings() == other.settings()
            and json.loads(self.hf.to_str()) == json.loads(other.hf.to_str())
        )

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, context_length={self.context_length})"


def _clip_normalizer() -> normalizers.Normalizer:
    # CLIP lower-cases and collapses whitespace before BPE (Radford et al. 2021, §2.4).
    return normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])


def _empty_bpe() -> _HFTokenizer:
    tok = _HFTokenizer(models.BPE())
    tok.normalizer = _clip_normalizer()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def byte_tokenizer(context_length: int) -> Tokenizer:
    """The 256 bytes and the special tokens: no training, any text (one token per byte)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    hf = _HFTokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    hf.normalizer = _clip_normalizer()
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([BOS, EOS, PAD])
    return Tokenizer(hf, context_length)


def train_bpe(texts: Iterable[str], vocab_size: int, context_length: int) -> Tokenizer:
    """A byte-level BPE with at most ``vocab_size`` tokens (specials included) trained on ``texts``."""
    if vocab_size < 259:
        raise ValueError(f"a byte-level BPE needs vocab_size >= 259 (256 bytes + 3 specials), got {vocab_size}")
    hf = _empty_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS, EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(list(texts), trainer=trainer)
    return Tokenizer(hf, context_length)


def shapes_corpus(n: int = 1000, seed: int = 0) -> list[str]:
    """``n`` Shapes-world captions (the words of the world) plus its vocabulary, as tokenizer training text."""
    import numpy as np

    from unclip.data.shapes import BACKGROUNDS, COLOURS, RELATIONS, SHAPES, SIZES, caption, sample_scene

    rng = np.random.default_rng(seed)
    texts = [caption(sample_scene(rng), rng) for _ in range(n)]
    return texts + [" ".join(words) for words in (SHAPES, COLOURS, SIZES, RELATIONS, BACKGROUNDS)]


@functools.lru_cache(maxsize=4)
def _shapes_hf(vocab_size: int, n: int) -> str:
    return train_bpe(shapes_corpus(n), vocab_size, 3).hf.to_str()


def shapes_tokenizer(vocab_size: int = 1024, context_length: int = 64, n: int = 1000) -> Tokenizer:
    """A BPE trained (deterministically) on Shapes-world captions; cached per process."""
    return Tokenizer(_HFTokenizer.from_str(_shapes_hf(vocab_size, n)), context_length)


TOKENIZER_KINDS = ("shapes-bpe", "bytes")


def make_tokenizer(kind: str, vocab_size: int, context_length: int) -> Tokenizer:
    """``shapes-bpe``, ``bytes``, or a path to a ``tokenizer.json`` (with the standard CLIP special tokens)."""
    if kind == "shapes-bpe":
        return shapes_tokenizer(vocab_size, context_length)
    if kind == "bytes":
        return byte_tokenizer(context_length)
    path = Path(kind)
    if path.is_file():
        return (
            Tokenizer.load(path.parent, {"context_length": context_length})
            if path.name == TOKENIZER_FILE
            else (Tokenizer(_HFTokenizer.from_file(str(path)), context_length))
        )
    raise ValueError(
        f"unknown tokenizer {kind!r}; expected one of {', '.join(TOKENIZER_KINDS)} or a tokenizer.json path"
    )


# OpenAI's CLIP pre-tokenisation: special tokens, English contractions, runs of letters, single digits, runs of
# other symbols (Radford et al. 2021 reuse GPT-2's scheme with lower-casing and an end-of-word marker "</w>").
_CLIP_SPLIT = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def clip_bpe_from_files(vocab: str | Path, merges: str | Path) -> _HFTokenizer:
    """OpenAI's CLIP tokenizer from its ``vocab.json`` and ``merges.txt`` (as transformers stores it)."""
    with open(vocab, encoding="utf-8") as f:
        table = json.load(f)
    lines = Path(merges).read_text(encoding="utf-8").splitlines()
    pairs = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    bad = [p for p in pairs if len(p) != 2]
    if bad:
        raise ValueError(f"{merges}: merge lines must hold two tokens, got {' '.join(bad[0])!r}")
    hf = _HFTokenizer(
        models.BPE(vocab=table, merges=pairs, end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=EOS)
    )
    hf.normalizer = _clip_normalizer()
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([t for t in (BOS, EOS) if t in table])
    return hf


def tokenizer_from_data(spec: str, vocab_size: int = 1024, n: int | None = None) -> tuple[Tokenizer, list[str]]:
    """A byte-level BPE trained on the captions of a training data spec (the first ``n`` records; all of a finite
    set), the tokenizer a CLIP trained on that data should use (``--set model.tokenizer=FILE``): the default
    ``shapes-bpe`` knows only Shapes-world words and spends a token per byte on any other. Returns it and the
    captions it was trained on."""
    from unclip.data.datasets import parse_data_spec
    from unclip.data.embed import iter_captions

    captions = [c for c in iter_captions(parse_data_spec(spec), n) if isinstance(c, str) and c]  # no image is read
    if not captions:
        raise ValueError(f"data {spec!r} holds no captions to train a tokenizer on")
    return train_bpe(captions, vocab_size, context_length=77), captions
