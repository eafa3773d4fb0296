"""``unclip train clip``: our CLIP trained through the one training engine (``unclip.train``).

The loss is CLIP's symmetric contrastive loss (Radford et al. 2021, Fig. 3) over the batch, optionally with
NegCLIP hard negatives (Yuksekgonul et al. 2023): per caption, ``negatives_per_caption`` word-level edits of a
random kind (``unclip.data.negatives``). When the sample carries a Shapes-world scene graph, an edit that happens
to be true of the image (e.g. a changed colour that another object has) is dropped, so a negative is never a
correct caption. Negatives of sample i come from sample i's own seed, so they do not depend on batch splitting.

With ``counterfactual_kinds``, a negative of those kinds whose scene the Shapes world can draw
(``unclip.data.shapes.counterfactual``: colours swapped, places exchanged, ...) is not a negative column but a
pair of the batch, its rendered scene with it, so the loss ranks the near miss in both directions and the text
tower learns where the negative caption's embedding belongs (docs/clip.md, "Binding"). The batch preparation
(negatives, counterfactual pairs, paraphrases, relation samples) is ``unclip.train.clip_batch``.

:func:`export_clip` turns a run folder's newest checkpoint (EMA weights by default) into a model folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import torch
from torch import Tensor, nn

from unclip.clip.loss import contrastive_loss, pair_terms, paraphrase_retrieval_loss, separation_loss
from unclip.clip.model import CLIP, PRESETS, CLIPConfig
from unclip.clip.tokenizer import Tokenizer, make_tokenizer
from unclip.data.negatives import KINDS
from unclip.data.shapes.counterfactual import KINDS as COUNTERFACTUAL_KINDS
from unclip.train.clip_batch import EDITS_KEY, batch_edits, micro_batch_edits
from unclip.train.config import TrainConfig
from unclip.train.stage import Batch, Preset, Stage, StepOutput
from unclip.transfers import to_device

PARAPHRASE_LOSSES = ("retrieval", "cosine")


@dataclass
class ClipStageConfig:
    clip: CLIPConfig = field(default_factory=lambda: replace(PRESETS["small"]))
    tokenizer: str = "shapes-bpe"  # shapes-bpe | bytes | path to a tokenizer.json
    hard_negatives: bool = True
    negatives_per_caption: int = 1
    negative_kinds: tuple[str, ...] = KINDS
    # Weight of the pairwise term that ranks each image's caption above its own near misses (clip/loss.py).
    pair_weight: float = 0.0
    # Locked-image tuning (LiT's "Lu", Zhai et al. 2022): the image tower and its projection keep the weights they
    # start with (train.init_from) and only the text side learns, here to bind the way the images already do.
    lock_image: bool = False
    # The other way round: the text tower, its projection and its token table keep their weights and only the image
    # side learns, e.g. to encode what a text tower already binds (docs/clip.md, "Relations").
    lock_text: bool = False
    # Hard negatives of these kinds become (rendered counterfactual scene, negative) pairs of the batch when the
    # sample has a Shapes-world scene graph; () turns it off. "count" cannot be drawn (it would move objects).
    counterfactual_kinds: tuple[str, ...] = ()
    # Intra-modal hinge pushing each (source, counterfactual) pair's image embeddings, and its captions' text
    # embeddings, at least separation_margin apart (clip/loss.py): breaks the saddle where both towers ignore an
    # edit, which is where spatial relations stay under the cross-modal terms alone. 0 turns it off.
    separation_weight: float = 0.0
    separation_margin: float = 0.5
    # Weight of 1 − cos between each relation caption's text embedding and its converse's ("a star left of a
    # square" / "a square to the right of a star", written fresh; data.shapes.converse_caption), counterfactual
    # captions included. With the separation term it leaves the text tower one way to encode a relation: bound to
    # the objects (which one is on the left), the thing the image can show. With both, the separation hinge also
    # parts each caption from the converse of its counterfactual ("a star left of a square" from "a square left of a
    # star": the same words, the opposite meaning). 0 turns it off.
    paraphrase_weight: float = 0.0
    # The form of that pull. "retrieval": each relation caption must pick its converse out of every text of the
    # batch (captions, near misses, converses) at paraphrase_temperature, SimCSE-style (clip/loss.py), which a
    # tower blind to word order cannot satisfy. "cosine": 1 − cos with the converse alone, which such a tower meets
    # halfway by ignoring the relation word (docs/clip.md, "Relations").
    paraphrase_loss: str = "retrieval"
    paraphrase_temperature: float = 0.07
    # With "retrieval": every relation caption of the batch also brings its opposite ("a star right of a square")
    # and the opposite's converse ("a square left of a star": the same words in the other order) as text rows of
    # that softmax, so each caption meets both near misses a tower blind to order confuses with its converse.
    relation_foils: bool = True
    # Per micro-batch, this many extra train-split Shapes-world scenes, each captioned with one of its clear
    # relations (the world's own captioner at relation rate 1: all four relations, every phrasing), joined to the
    # batch as ordinary samples. With "relation" in counterfactual_kinds each brings its places-exchanged pair, so
    # every batch holds relation pairs beside the ordinary mix instead of the few its relation captions allow
    # (docs/clip.md, "Relations"). Needs Shapes-world data. 0 turns it off.
    relation_samples: int = 0

    def __post_init__(self) -> None:
        self.negative_kinds = _kinds(self.negative_kinds)
        unknown = [k for k in self.negative_kinds if k not in KINDS]
        if unknown or not self.negative_kinds:
            raise ValueError(f"negative_kinds must be some of {', '.join(KINDS)}, got {self.negative_kinds!r}")
        self.counterfactual_kinds = _kinds(self.counterfactual_kinds)
        drawable = [k for k in self.negative_kinds if k in COUNTERFACTUAL_KINDS]
        if any(k not in drawable for k in self.counterfactual_kinds):
            raise ValueError(
                f"counterfactual_kinds must be some of the negative kinds that can be drawn ({', '.join(drawable)}), "
                f"got {self.counterfactual_kinds!r}"
            )
        if self.counterfactual_kinds and not self.hard_negatives:
            raise ValueError("counterfactual_kinds needs hard_negatives=true: counterfactuals are drawn from them")
        if self.negatives_per_caption < 1:
            raise ValueError(f"negatives_per_caption must be >= 1, got {self.negatives_per_caption}")
        if not self.pair_weight >= 0:
            raise ValueError(f"pair_weight must be >= 0, got {self.pair_weight!r}")
        if not self.separation_weight >= 0 or not 0 < self.separation_margin <= 2:
            raise ValueError(
                f"separation_weight must be >= 0 and separation_margin in (0, 2] (unit embeddings are at most 2 "
                f"apart), got {self.separation_weight!r} and {self.separation_margin!r}"
            )
        if not self.paraphrase_weight >= 0:
            raise ValueError(f"paraphrase_weight must be >= 0, got {self.paraphrase_weight!r}")
        if self.paraphrase_loss not in PARAPHRASE_LOSSES:
            raise ValueError(
                f"paraphrase_loss must be one of {', '.join(PARAPHRASE_LOSSES)}, got {self.paraphrase_loss!r}"
            )
        if not 0 < self.paraphrase_temperature <= 1:
            raise ValueError(f"paraphrase_temperature must lie in (0, 1], got {self.paraphrase_temperature!r}")
        if self.lock_image and self.lock_text:
            raise ValueError("lock_image and lock_text together leave nothing to train but the temperature")
        if self.lock_text and self.paraphrase_weight:
            raise ValueError("paraphrase_weight moves text embeddings only; it does nothing with lock_text=true")
        if self.separation_weight and not self.counterfactual_kinds:
            raise ValueError("separation_weight needs counterfactual_kinds: it separates counterfactual pairs")
        if not isinstance(self.relation_samples, int) or self.relation_samples < 0:
            raise ValueError(f"relation_samples must be an integer >= 0, got {self.relation_samples!r}")

    @property
    def edits_batch(self) -> bool:
        """Whether a batch needs :func:`batch_edits` (negatives, paraphrases or added relation samples)."""
        return bool(self.hard_negatives or self.paraphrase_weight or self.relation_samples)


def _kinds(kinds: str | tuple[str, ...]) -> tuple[str, ...]:
    """ "swap,relation" from the command line is two kinds, not 13 letters; "" is none."""
    if isinstance(kinds, str):
        return tuple(k.strip() for k in kinds.split(",") if k.strip())
    return tuple(kinds)


def _indices(rows: list[int], device: torch.device) -> torch.Tensor:
    """Row numbers made on the host and copied without a wait (``torch.tensor(..., device=cuda)`` waits)."""
    return to_device(torch.tensor(rows, dtype=torch.long), device)


def _same_text(texts: list[str], rows: list[int]) -> torch.Tensor:
    """``(len(rows), len(texts))`` bool: which texts are word for word text ``rows[k]``."""
    return torch.tensor([[t == texts[r] for t in texts] for r in rows], dtype=torch.bool).reshape(len(rows), len(texts))


class ClipStage(Stage[ClipStageConfig]):
    name = "clip"
    config_type = ClipStageConfig

    def __init__(self) -> None:
        self._tokenizers: dict[tuple[str, int, int], Tokenizer] = {}

    def presets(self) -> dict[str, Preset[ClipStageConfig]]:
        return {
            "small": Preset(
                ClipStageConfig(replace(PRESETS["small"])),
                TrainConfig(
                    steps=20_000,
                    batch_size=256,
                    lr=5e-4,
                    warmup_steps=500,
                    weight_decay=0.1,
                    adam_betas=(0.9, 0.98),
                    adam_eps=1e-6,
                    ema_decay=0.999,
                    checkpoint_every=2000,
                ),
                "Shapes world at 64 px, ViT 8-px patches, 6+6 layers of width 256: minutes on a GPU",
            ),
            "mini": Preset(
                ClipStageConfig(replace(PRESETS["mini"])),
                TrainConfig(
                    steps=600,
                    batch_size=128,
                    lr=1e-3,
                    warmup_steps=50,
                    weight_decay=0.1,
                    adam_betas=(0.9, 0.98),
                    adam_eps=1e-6,
                    ema_decay=0.99,
                    checkpoint_every=200,
                ),
                "32 px, 4-px patches, 3+3 layers of width 128: the CPU-trained stack (29 min on one CPU thread)",
            ),
            "tiny": Preset(
                ClipStageConfig(replace(PRESETS["tiny"])),
                TrainConfig(steps=200, batch_size=32, lr=1e-3, warmup_steps=10, ema_decay=0.99, checkpoint_every=100),
                "32 px, 2+2 layers of width 64: seconds on a CPU (tests)",
            ),
            "vit-b-32": Preset(
                ClipStageConfig(replace(PRESETS["vit-b-32"]), hard_negatives=False),
                TrainConfig(
                    steps=100_000,
                    batch_size=1024,
                    lr=5e-4,
                    warmup_steps=2000,
                    weight_decay=0.2,
                    adam_betas=(0.9, 0.98),
                    adam_eps=1e-6,
                    mixed_precision="bf16",
                    checkpoint_every=2000,
                ),
                "OpenAI ViT-B/32 shape at 224 px (Radford et al. 2021, Table 20); GPUs and a real caption set",
            ),
        }

    def tokenizer(self, config: ClipStageConfig) -> Tokenizer:
        t = config.clip.text
        key = (config.tokenizer, t.vocab_size, t.context_length)
        if key not in self._tokenizers:
            self._tokenizers[key] = make_tokenizer(config.tokenizer, t.vocab_size, t.context_length)
        return self._tokenizers[key]

    def build(self, config: ClipStageConfig) -> nn.Module:
        model = CLIP(config.clip, self.tokenizer(config))
        if config.lock_image:
            model.visual.requires_grad_(False)
            model.visual_proj.requires_grad_(False)
        if config.lock_text:
            model.text.requires_grad_(False)
            model.text_proj.requires_grad_(False)
        return model

    def batch_extras(self, config: ClipStageConfig):  # -> Callable[[MicroBatch], dict] | None
        # Negatives and rendered counterfactuals cost 0.21 s of one CPU core per batch of 256
        # (benchmarks/clip_batch_prep.py): in the loader's workers, not between the accelerator's steps.
        return partial(micro_batch_edits, config=config) if config.edits_batch else None

    def export(self, model: nn.Module, config: ClipStageConfig, folder: str | Path) -> Path:
        from unclip.clip.checkpoint import save_pretrained

        return save_pretrained(model, folder)  # type: ignore[arg-type]

    def check_init_from(self, config: ClipStageConfig, folder: Path) -> None:
        # A token embedding row means a word only under the tokenizer that numbered it.
        from unclip.clip.tokenizer import TOKENIZER_FILE

        path = folder / TOKENIZER_FILE
        if path.is_file():
            theirs = Tokenizer.load(folder, {"context_length": config.clip.text.context_length}).hf
            if theirs.get_vocab(with_added_tokens=True) != self.tokenizer(config).hf.get_vocab(with_added_tokens=True):
                raise ValueError(
                    f"train.init_from {str(folder)!r}: its tokenizer differs from model.tokenizer="
                    f"{config.tokenizer!r}; fine-tune with --set model.tokenizer={path}"
                )

    def resolution(self, config: ClipStageConfig) -> int:
        return config.clip.vision.image_size

    def loss(self, model: nn.Module, batch: Batch, config: ClipStageConfig) -> StepOutput:
        tokenizer = self.tokenizer(config)
        captions = list(batch.caption)
        owned: list[tuple[int, str]] = []
        pairs: list[tuple[int, str, str]] = []
        paraphrases: list[tuple[int, str]] = []
        foils: list[str] = []
        images = batch.image
        added = None
        if config.edits_batch:
            edits = batch.extra.get(EDITS_KEY)  # made in the loader's workers, or here when the batch lacks them
            if edits is None:
                seeds = [int(s) for s in batch.seed]
                edits = batch_edits(captions, batch.scene, seeds, images.shape[-1], config)
            pairs, owned, paraphrases, foils = edits["pairs"], edits["negatives"], edits["paraphrases"], edits["foils"]
            added = edits.get("added")
            if added:  # relation samples: rows after the batch's own, before the counterfactuals
                captions = captions + added["captions"]
                images = torch.cat([images, to_device(added["images"], images.device, images.dtype)])
            if pairs:  # rendered as the Shapes source renders at this resolution (unclip.data.datasets)
                images = torch.cat([images, to_device(edits["pair_images"], images.device, images.dtype)])
        negatives = [text for _, text in owned]
        texts = captions + [text for _, _, text in pairs] + negatives + [text for _, text in paraphrases] + foils
        ids = tokenizer.trimmed(texts)  # a fraction of the cost of the full context
        # One forward over captions, counterfactuals, negatives and paraphrases (DDP needs a single call per step).
        z_i, z_all, scale = model(images, to_device(ids, images.device))
        n = len(captions) + len(pairs)
        first_paraphrase = n + len(negatives)  # rows of z_all: captions, counterfactuals, negatives, paraphrases
        z_neg = z_all[n:first_paraphrase] if owned else None
        owners = _indices([i for i, _ in owned], z_i.device) if owned else None
        out = contrastive_loss(z_i, z_all[:n], scale, z_neg, owners, config.pair_weight)
        loss = out.loss
        metrics: dict[str, float | Tensor] = {
            "image_to_text": out.image_to_text.detach(),
            "text_to_image": out.text_to_image.detach(),
            "accuracy": out.accuracy.detach(),
            "logit_scale": scale.detach(),
            "negatives": float(len(negatives)),
        }
        if added:
            metrics["relation_samples"] = float(len(added["captions"]))
        if paraphrases:  # how close each relation caption sits to its converse
            said = _indices([k for k, _ in paraphrases], z_i.device)
            end = first_paraphrase + len(paraphrases)  # the relation foils, if any, come after the paraphrases
            cosine = (z_all[said] * z_all[first_paraphrase:end]).sum(-1).mean()
            metrics.update(paraphrases=float(len(paraphrases)), paraphrase_cosine=cosine.detach())
            if config.paraphrase_loss == "cosine":
                loss = loss + config.paraphrase_weight * (1 - cosine)
            else:
                rows = torch.arange(first_paraphrase, end, device=z_i.device)
                same = to_device(_same_text(texts, list(range(first_paraphrase, end))), z_i.device)
                term, found = paraphrase_retrieval_loss(z_all, said, rows, config.paraphrase_temperature, same)
                loss = loss + config.paraphrase_weight * term
                metrics.update(paraphrase_retrieval=term.detach(), paraphrase_found=found)
        if out.pairwise is not None:  # how often an image prefers its caption to each near miss, during training
            metrics.update(pairwise=out.pairwise.detach(), pair_accuracy=out.pair_accuracy.detach())
        if pairs:  # Winoground's scores of each (source, counterfactual) pair, during training
            a = _indices([i for i, *_ in pairs], z_i.device)
            b = torch.arange(len(captions), n, device=z_i.device)
            terms = pair_terms(z_i, z_all[:n], scale, a, b)
            if config.pair_weight:
                loss = loss + config.pair_weight * terms.loss
            if config.separation_weight:
                m = config.separation_margin
                hinge = separation_loss(z_i, a, b, m) + separation_loss(z_all, a, b, m)
                # Word-order negatives: each source caption against its counterfactual's converse (paraphrase j
                # of caption k >= len(captions), a counterfactual's).
                order = [(pairs[k - len(captions)][0], first_paraphrase + j) for j, (k, _) in enumerate(paraphrases)
                         if k >= len(captions)]  # fmt: skip
                if order:
                    src, neg = (_indices(list(x), z_i.device) for x in zip(*order, strict=True))
                    hinge = hinge + separation_loss(z_all, src, neg, m)
                    metrics["order_negative_distance"] = (z_all[src] - z_all[neg]).detach().norm(dim=-1).mean()
                loss = loss + config.separation_weight * hinge
            metrics.update(
                counterfactuals=float(len(pairs)),
                counterfactual_text=terms.text_score.detach(),
                counterfactual_image=terms.image_score.detach(),
                counterfactual_group=terms.group_score.detach(),
                # How far apart each tower puts the two sides of a pair (the separation term's hinge acts below
                # its margin), and the group score per kind: a kind stuck at a saddle shows here first.
                counterfactual_image_distance=(z_i[a] - z_i[b]).detach().norm(dim=-1).mean(),
                counterfactual_text_distance=(z_all[a] - z_all[b]).detach().norm(dim=-1).mean(),
            )
            for kind in sorted({k for _, k, _ in pairs}):
                mine = to_device(torch.tensor([float(k == kind) for _, k, _ in pairs]), z_i.device)
                # A weighted mean, not terms.group[mine]: a boolean index makes the host wait for the count.
                metrics[f"counterfactual_group_{kind}"] = (terms.group.float() * mine).sum() / mine.sum()
        return StepOutput(loss, metrics)


def export_clip(run_dir: str | Path, out_dir: str | Path, *, ema: bool = True) -> Path:
    """The newest valid checkpoint of a ``clip`` run as a model folder (EMA weights unless ``ema=False``)."""
    from unclip.train.export import export_run

    return export_run(run_dir, out_dir, ema=ema, stage="clip")
