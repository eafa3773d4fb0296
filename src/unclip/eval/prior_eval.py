"""How good is a prior (§2.2, issue 6)? Its sampled z_i against the true image's, next to two baselines.

On N held-out Shapes-world (caption, image) pairs the prior samples z_i from each caption; we report

* ``cosine``: the mean cosine between a sampled z_i and the true image's z_i (LAION's DALLE2-pytorch ViT-L/14
  prior reaches >= 0.75 on real data, the anchor quoted in the issue);
* ``r_at_1``, ``r_at_10``: how often the true image is the first (among the first ten) of the N held-out images
  ranked by cosine similarity to the sampled z_i.

A diffusion prior is scored twice: by its draws (the paper's sampling, the settings given) and by its point
estimate ``prior_point_estimate``, E[z_i | caption] from one unguided call at t = T, which no single draw can
match in cosine because a caption leaves much of the image free.

The same for two baselines that need no prior: **z_t used as z_i** (what a decoder conditioned on the text
embedding gets; §5.1 of the paper compares against exactly this), and **the nearest training caption**: the
image embedding of the training pair whose z_t is closest to the caption's z_t (a retrieval "prior" over a pool
of training pairs). A prior that does not beat the second has learned no more than a lookup table.

Images and captions come through the same path as ``unclip embed`` (the Shapes data source, then
``to_training_image``), so held-out embeddings are computed exactly as the prior's training embeddings were.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from unclip.prior.caption_tokens import fit_tokens

KS = (1, 10)  # the recall@k reported
LAION_PRIOR_COSINE = 0.75  # LAION DALLE2-pytorch ViT-L/14 prior, cosine to the true z_i on real data (issue 6)
# The diffusion prior's point estimate E[z_i | caption]: one unguided network call at t = T (samplers.predict_mmse).
# Guidance extrapolates away from that mean, so it is off (measured on the bundle: cosine 0.853 at 1, 0.840 at 2).
POINT_ESTIMATE = {"sampler": "mmse", "steps": 1, "guidance": 1.0, "best_of": 1, "combine": "best"}


# ---- the metrics ---------------------------------------------------------------------------------------------
@dataclass
class EmbeddingScores:
    cosine: float  # mean cosine(predicted z_i, true z_i)
    recall: dict[int, float]  # k -> fraction of queries whose true image ranks among the first k
    n_queries: int

    def to_dict(self) -> dict[str, float]:
        return {"cosine": self.cosine, **{f"r_at_{k}": v for k, v in self.recall.items()}}


def _truth(pred: Tensor, targets: Tensor, truth: Tensor | None) -> Tensor:
    if pred.ndim != 2 or targets.ndim != 2 or pred.shape[1] != targets.shape[1]:
        raise ValueError(f"predictions (M, D) and targets (N, D) must share D, got {tuple(pred.shape)} and "
                         f"{tuple(targets.shape)}")  # fmt: skip
    if truth is None:
        if pred.shape[0] != targets.shape[0]:
            raise ValueError(f"{pred.shape[0]} predictions for {targets.shape[0]} targets: pass truth= (M,) indices")
        return torch.arange(pred.shape[0])
    if truth.shape != (pred.shape[0],) or int(truth.min()) < 0 or int(truth.max()) >= targets.shape[0]:
        raise ValueError(f"truth must hold {pred.shape[0]} indices into {targets.shape[0]} targets")
    return truth.long()


def retrieval_ranks(pred: Tensor, targets: Tensor, truth: Tensor | None = None, chunk: int = 1024) -> Tensor:
    """Rank (0 = first) of each query's true target among all ``targets``, by cosine similarity.

    Query i's true target is ``targets[truth[i]]`` (default: row i). Ties count against the query (a target as
    similar as the true one ranks before it), so a degenerate prediction, e.g. all zeros, gets rank N - 1
    rather than 0.
    """
    truth = _truth(pred, targets, truth)
    t = F.normalize(targets.double(), dim=1)
    ranks = []
    for start in range(0, pred.shape[0], chunk):
        sim = F.normalize(pred[start : start + chunk].double(), dim=1) @ t.T  # (m, N)
        rows = torch.arange(sim.shape[0])
        true_sim = sim[rows, truth[start : start + chunk]]
        ranks.append((sim >= true_sim[:, None]).sum(1) - 1)  # minus the true target itself
    return torch.cat(ranks)


def score_embeddings(
    pred: Tensor, targets: Tensor, truth: Tensor | None = None, ks: Sequence[int] = KS
) -> EmbeddingScores:
    """Mean cosine with the true embedding and recall@k of retrieving it among ``targets`` (see retrieval_ranks)."""
    truth = _truth(pred, targets, truth)
    cos = F.cosine_similarity(pred.double(), targets[truth].double(), dim=1)
    ranks = retrieval_ranks(pred, targets, truth)
    recall = {int(k): float((ranks < k).double().mean()) for k in ks}
    return EmbeddingScores(float(cos.mean()), recall, int(pred.shape[0]))


def nearest_caption(query_z_t: Tensor, pool_z_t: Tensor, pool_z_i: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """The nearest-training-caption baseline: for each query z_t, the z_i of the pool pair whose z_t has the
    largest cosine with it. Returns (z_i (B, D), pool indices (B,))."""
    if pool_z_t.shape[0] != pool_z_i.shape[0] or pool_z_t.shape[0] == 0:
        raise ValueError(f"the pool needs as many z_t as z_i (at least one), got {pool_z_t.shape[0]} and "
                         f"{pool_z_i.shape[0]}")  # fmt: skip
    if query_z_t.ndim != 2 or query_z_t.shape[1] != pool_z_t.shape[1]:
        raise ValueError(f"query z_t {tuple(query_z_t.shape)} must be (B, {pool_z_t.shape[1]})")
    keys = F.normalize(pool_z_t.float(), dim=1)
    idx = torch.cat([
        (F.normalize(query_z_t[s : s + chunk].float(), dim=1) @ keys.T).argmax(1)
        for s in range(0, query_z_t.shape[0], chunk)
    ])  # fmt: skip
    return pool_z_i[idx], idx


# ---- loading a prior and its CLIP ----------------------------------------------------------------------------
def load_prior_and_clip(model: str | Path, clip: str | Path | None = None, device: str = "cpu"):
    """(prior, CLIP, stored pipeline settings or None) from a pipeline folder (``pipeline.json``) or from a prior
    folder plus ``clip``, a CLIP folder. Only the CLIP and the prior are loaded, never the decoder."""
    from unclip.clip import load_clip
    from unclip.model_folder import config_from_dict
    from unclip.pipeline.index import INDEX_FILE, read_index
    from unclip.pipeline.settings import SamplingSettings
    from unclip.prior import from_pretrained as load_prior

    folder = Path(model)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    index = folder / INDEX_FILE
    if not index.is_file():  # a bare prior folder: its CLIP comes separately
        prior = load_prior(folder, device)
        if clip is None:
            raise ValueError(f"{str(folder)!r} is a prior folder (no {INDEX_FILE}): name its CLIP with --clip DIR")
        return prior, load_clip(clip, device), None
    if clip is not None:
        raise ValueError(f"{str(folder)!r} is a pipeline folder with its own CLIP; --clip is only for a prior folder")
    meta = read_index(folder, ("clip", "prior"))
    parts = meta["components"]
    settings = config_from_dict(SamplingSettings, meta.get("settings", {}), f"{index}: settings")
    return load_prior(folder / parts["prior"], device), load_clip(folder / parts["clip"], device), settings


def check_compatible(prior: nn.Module, clip: nn.Module) -> None:
    """A prior only reads the CLIP it was trained for: the embedding sizes must agree."""
    d_prior, d_clip = prior.config.embed_dim, clip.embed_dim
    if d_prior != d_clip:
        raise ValueError(f"the prior works on {d_prior}-dim CLIP embeddings but this CLIP embeds in {d_clip} dims: "
                         "use the CLIP the prior was trained with")  # fmt: skip


def prior_kind(prior: nn.Module) -> str:
    from unclip.pipeline.diffusers_folder import DiffusersPrior
    from unclip.prior import ARPrior, DiffusionPrior

    if isinstance(prior, (DiffusionPrior, DiffusersPrior)):
        return "diffusion"
    if isinstance(prior, ARPrior):
        return "ar"
    raise ValueError(f"not a prior: {type(prior).__name__} (expected DiffusionPrior or ARPrior)")


def sampling_settings(
    prior: nn.Module, stored=None, *, steps: int | None = None, guidance: float | None = None,
    best_of: int | None = None, combine: str | None = None, sampler: str | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The settings the prior is sampled with: the pipeline's stored ones, else the prior's own config (steps,
    best-of; guidance is not part of a prior folder, so the pipeline default), then the given overrides.

    The AR prior has none of these knobs (it conditions on a z_i . z_t token instead of best-of-N, §2.2), so an
    override for it is an error rather than silently ignored.
    """
    from unclip.pipeline.settings import SamplingSettings

    overrides = {"prior_steps": steps, "prior_guidance": guidance, "prior_best_of": best_of, "prior_combine": combine,
                 "prior_sampler": sampler}  # fmt: skip
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if prior_kind(prior) == "ar":
        if overrides:
            flags = ", ".join("--" + k.removeprefix("prior_").replace("_", "-") for k in overrides)
            raise ValueError(f"{flags} only apply to a diffusion prior; this is an AR prior")
        return {"dot_percentile": prior.config.dot_percentile}
    base = stored or SamplingSettings(prior_steps=prior.config.sample_steps, prior_best_of=prior.config.best_of)
    s = replace(base, **overrides)  # validates every value (SamplingSettings.__post_init__)
    if s.prior_steps > prior.config.train_steps:
        raise ValueError(f"steps {s.prior_steps} exceed the prior's {prior.config.train_steps} training steps")
    return {
        "sampler": s.prior_sampler,
        "steps": s.prior_steps,
        "guidance": s.prior_guidance,
        "best_of": s.prior_best_of,
        "combine": s.prior_combine,
    }


# ---- embedding Shapes-world pairs and sampling the prior -----------------------------------------------------
@dataclass
class Pairs:
    z_i: Tensor  # (N, D) true image embeddings
    z_t: Tensor  # (N, D) caption embeddings
    tokens: Tensor | None  # (N, L, W) caption token states, when asked for
    mask: Tensor | None  # (N, L) bool
    captions: list[str]
    skipped: int = 0  # records of the data that did not decode or had no caption


@torch.no_grad()
def encode_pairs(
    clip: nn.Module, spec: str, n: int, *, batch_size: int = 64, with_tokens: bool = True, progress: bool = False,
    desc: str = "embed",
) -> Pairs:  # fmt: skip
    """The first ``n`` records of a data spec through ``clip``, as ``unclip embed`` computes them (records that
    do not decode or have no caption are skipped and counted in ``Pairs.skipped``)."""
    from unclip.data.datasets import parse_data_spec
    from unclip.data.embed import PairBatches

    source = parse_data_spec(spec, clip.image_size)
    device = next(clip.parameters()).device
    out: dict[str, list[Tensor]] = {"z_i": [], "z_t": [], "tokens": [], "mask": []}
    captions: list[str] = []
    batches = PairBatches(source, n, clip.image_size, batch_size, progress=progress, desc=desc)
    for images, texts in batches:
        enc = clip.encode_text(texts)
        out["z_i"].append(clip.encode_image(images.to(device)).float().cpu())
        out["z_t"].append(enc.embedding.float().cpu())
        if with_tokens:
            out["tokens"].append(enc.token_states.float().cpu())
            out["mask"].append(enc.mask.cpu())
        captions += texts
    if len(captions) < 2:
        raise ValueError(f"data {spec!r} gave {len(captions)} usable (image, caption) pairs of the first {n} "
                         f"({batches.skipped} skipped); the prior evaluation needs at least 2")  # fmt: skip
    cat = {k: torch.cat(v) if v else None for k, v in out.items()}
    return Pairs(cat["z_i"], cat["z_t"], cat["tokens"], cat["mask"], captions, batches.skipped)  # type: ignore[arg-type]


def encode_shapes(
    clip: nn.Module, split: str, n: int, *, batch_size: int = 64, with_tokens: bool = True, progress: bool = False
) -> Pairs:
    """The first ``n`` pairs of a Shapes-world split through ``clip``, as ``unclip embed`` computes them."""
    return encode_pairs(clip, f"shapes:split={split}", n, batch_size=batch_size, with_tokens=with_tokens,
                        progress=progress, desc=f"embed {split}")  # fmt: skip


@torch.no_grad()
def sample_prior(
    prior: nn.Module, pairs: Pairs, settings: dict[str, Any], seeds: Sequence[int], *, batch_size: int = 64,
    progress: bool = False, desc: str = "sample prior",
) -> tuple[Tensor, float]:  # fmt: skip
    """One z_i per caption of ``pairs`` (caption i drawn with seed ``seeds[i]`` alone); returns (z_i, seconds)
    where seconds is the wall time spent in the prior, results copied back to the CPU included."""
    from unclip.diffusion import generators_from_seeds
    from unclip.prior import sample_ar_prior, sample_diffusion_prior

    if pairs.tokens is None or pairs.mask is None:
        raise ValueError("sampling the prior needs the captions' token states (encode_shapes(with_tokens=True))")
    kind = prior_kind(prior)
    tokens, mask = fit_tokens(pairs.tokens, pairs.mask, prior.config.text_len)
    device = next(prior.parameters()).device
    z_i, seconds = [], 0.0
    with tqdm(total=len(seeds), desc=desc, unit="z_i", disable=not progress) as bar:
        for s in range(0, len(seeds), batch_size):
            sl = slice(s, s + batch_size)
            gens = generators_from_seeds(seeds[sl])
            args = (pairs.z_t[sl].to(device), tokens[sl].to(device), mask[sl].to(device))
            start = time.perf_counter()
            if kind == "ar":
                out = sample_ar_prior(prior, *args, generator=gens).z_i
            else:
                out = sample_diffusion_prior(
                    prior, *args, guidance_scale=settings["guidance"], steps=settings["steps"],
                    sampler=settings["sampler"], best_of=settings["best_of"], combine=settings["combine"],
                    generator=gens,
                ).z_i  # fmt: skip
            z_i.append(out.float().cpu())  # the copy waits for the device, so the time is the real one
            seconds += time.perf_counter() - start
            bar.update(len(gens))
    return torch.cat(z_i), seconds


# ---- the evaluation ------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_prior(
    prior: nn.Module, clip: nn.Module, *, n: int = 1000, samples_per_caption: int = 1, pool: int = 5000,
    seed: int = 0, split: str = "test", settings: dict[str, Any] | None = None, batch_size: int = 64,
    ceiling_pool: int = 0, progress: bool = False, data: str | None = None, train_data: str | None = None,
    point_estimate: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """The prior and both baselines on the first ``n`` pairs of ``split``; the nearest-caption baseline searches
    the first ``pool`` pairs of the training split. Sample j of caption i uses seed ``seed + j * n + i``.

    On other data: ``data`` (a data spec) replaces the Shapes split, and the nearest-caption baseline searches the
    first ``pool`` pairs of ``train_data`` (left out, as None, when it is not given).

    ``settings`` as :func:`sampling_settings` returns (default: the prior's own). With ``ceiling_pool`` > 0, also
    the ceiling that the captions put on the cosine (:mod:`unclip.eval.prior_ceiling`), estimated from same-claims
    images among the first ``ceiling_pool`` training captions, with the prior and baselines rescored on the
    captions it covers. A diffusion prior is also scored by its point estimate (``point_estimate``; one call per
    caption, :data:`POINT_ESTIMATE`), reported as ``prior_point_estimate``. Returns a JSON-ready dict.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an integer >= 2 (retrieval among n held-out images), got {n!r}")
    for name, v in (("samples_per_caption", samples_per_caption), ("pool", pool), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if isinstance(ceiling_pool, bool) or not isinstance(ceiling_pool, int) or ceiling_pool < 0:
        raise ValueError(f"ceiling_pool must be a non-negative integer (0: no ceiling), got {ceiling_pool!r}")
    if split == "train":
        raise ValueError("split 'train' is what the prior learned from; evaluate on test, val or heldout")
    if data is None and train_data is not None:
        raise ValueError("train_data is the pool of the nearest-caption baseline on other data: give data too")
    if data is not None and ceiling_pool:
        raise ValueError("the ceiling estimate matches Shapes-world captions' claims; it needs the Shapes world")
    check_compatible(prior, clip)
    kind = prior_kind(prior)
    settings = sampling_settings(prior) if settings is None else settings
    start = time.perf_counter()
    if data is None:
        held = encode_shapes(clip, split, n, batch_size=batch_size, progress=progress)
        train: Pairs | None = encode_shapes(clip, "train", pool, batch_size=batch_size, with_tokens=False,
                                            progress=progress)  # fmt: skip
    else:
        split = data
        held = encode_pairs(clip, data, n, batch_size=batch_size, progress=progress, desc="embed held-out")
        train = None if train_data is None else encode_pairs(
            clip, train_data, pool, batch_size=batch_size, with_tokens=False, progress=progress, desc="embed pool"
        )  # fmt: skip
        n = len(held.captions)  # fewer than asked when the data is smaller or has unusable records

    # The prior: samples_per_caption draws per caption, every draw scored against all n held-out images.
    z_i, seconds = [], 0.0
    for j in range(samples_per_caption):
        seeds = [seed + j * n + i for i in range(n)]
        desc = "sample prior" if samples_per_caption == 1 else f"sample prior {j + 1}/{samples_per_caption}"
        out, sec = sample_prior(prior, held, settings, seeds, batch_size=batch_size, progress=progress, desc=desc)
        z_i.append(out)
        seconds += sec
    truth = torch.arange(n).repeat(samples_per_caption)
    scores = score_embeddings(torch.cat(z_i), held.z_i, truth)
    # The diffusion prior's point estimate beside its draws: one unguided call at t = T gives E[z_i | caption]
    # (sampler "mmse"), the prediction whose ceiling --ceiling-pool measures (docs/prior.md, "Point estimates").
    point = None
    if kind == "diffusion" and point_estimate:
        point_settings = {**settings, **POINT_ESTIMATE}
        point, point_seconds = sample_prior(prior, held, point_settings, [seed + i for i in range(n)],
                                            batch_size=batch_size, progress=progress,
                                            desc="prior point estimate")  # fmt: skip
    nearest = None if train is None else nearest_caption(held.z_t, train.z_t, train.z_i)[0]
    draws = n * samples_per_caption
    extra: dict[str, Any] = {}
    if point is not None:
        extra["prior_point_estimate"] = score_embeddings(point, held.z_i).to_dict() | {
            "settings": point_settings, "seconds_per_embedding": point_seconds / n
        }  # fmt: skip
    if ceiling_pool:
        predictions = {"prior": torch.cat(z_i), "baseline_z_t": held.z_t, "baseline_nearest_caption": nearest}
        if point is not None:
            predictions["prior_point_estimate"] = point
        extra["ceiling"] = _ceiling_report(clip, held, predictions, ceiling_pool, batch_size, progress)
    return {
        "metric": "prior",
        "kind": kind,
        "parameters": sum(p.numel() for p in prior.parameters()),
        "embed_dim": int(clip.embed_dim),
        "split": split,
        "n": n,
        "samples_per_caption": samples_per_caption,
        "pool": 0 if train is None else len(train.captions),  # 0: no nearest-caption baseline
        "skipped": held.skipped,
        "seed": seed,
        "settings": settings,
        "prior": scores.to_dict(),
        "baseline_z_t": score_embeddings(held.z_t, held.z_i).to_dict(),
        "baseline_nearest_caption": None if nearest is None else score_embeddings(nearest, held.z_i).to_dict(),
        "chance": {f"r_at_{k}": min(k, n) / n for k in KS},
        "seconds_per_embedding": seconds / draws,
        "batch_size": batch_size,
        "device": str(next(prior.parameters()).device),
        "seconds": time.perf_counter() - start,
        "anchor_laion_vit_l14_cosine": LAION_PRIOR_COSINE,
        **extra,
    }


def _ceiling_report(
    clip: nn.Module, held: Pairs, predictions: dict[str, Tensor], pool: int, batch_size: int, progress: bool
) -> dict[str, Any]:  # fmt: skip
    """The caption-imposed ceilings, and each prediction's mean cosine on the held-out captions they cover
    (a prediction set may hold several draws per caption, stacked draw after draw)."""
    from unclip.eval.prior_ceiling import estimate_ceiling

    ceiling, covered = estimate_ceiling(clip, held.captions, held.z_i, pool=pool, batch_size=batch_size,
                                        progress=progress)  # fmt: skip
    n = held.z_i.shape[0]
    report: dict[str, Any] = {"pool": pool, "covered": int(covered.numel()), "coverage": covered.numel() / n}
    if ceiling is None:
        return report | {"perfect_sampler": None, "best_prediction": None, "cosine_on_covered": None}
    on_covered = {}
    for name, z in predictions.items():
        draws = z.shape[0] // n
        rows = (covered[None, :] + n * torch.arange(draws)[:, None]).flatten()
        truth = held.z_i[covered].repeat(draws, 1)
        on_covered[name] = float(F.cosine_similarity(z[rows].double(), truth.double(), dim=1).mean())
    return report | ceiling.to_dict() | {"cosine_on_covered": on_covered}
