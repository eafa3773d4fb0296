"""``unclip eval all``: every evaluation of a pipeline folder, one JSON file each, ready for ``unclip report``.

Each metric file holds ``"metric"``, the headline numbers flattened to top-level keys (``unclip report`` tables
show top-level numbers), and the full result under ``"details"``. Files are written as each evaluation ends, so a
long run that stops keeps what it finished; the whole folder is not replaced.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from unclip.atomic import atomic_write_text

# Sizes of each evaluation: the issues' full sizes, and a quick set that runs in minutes on a CPU.
SIZES: dict[str, dict[str, int]] = {
    "full": {"clip": 1000, "prior": 1000, "pool": 5000, "per_category": 120, "images_per_prompt": 4,
             "decoder": 200, "upsampler": 64, "manipulations": 50, "probing": 24, "inpainting": 48},
    "quick": {"clip": 200, "prior": 200, "pool": 1000, "per_category": 4, "images_per_prompt": 2,
              "decoder": 24, "upsampler": 8, "manipulations": 8, "probing": 6, "inpainting": 4},
}  # fmt: skip
METRICS = ("clip", "prior", "compositional", "decoder", "upsampler", "manipulations", "probing", "inpainting")
PROBING_DIMS = (1, 2, 4, 8, 16, 32, None)  # None: z_i itself
SHAPES_ONLY = ("compositional", "manipulations", "inpainting")  # judged against Shapes-world scene graphs


def flatten(result: dict[str, Any], prefix: str = "", depth: int = 3) -> dict[str, float]:
    """Numbers of a nested result as ``a.b.c`` keys (at most ``depth`` levels; lists and strings left out)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[name] = value
        elif isinstance(value, dict) and depth > 1 and not key.startswith("reference"):
            out.update(flatten(value, f"{name}.", depth - 1))
    return out


def _write(out: Path, metric: str, result: dict[str, Any]) -> Path:
    text = json.dumps({"metric": metric, **flatten(result), "details": result}, indent=1) + "\n"
    return atomic_write_text(out / f"{metric}.json", text)


def evaluate_all(
    pipe, folder: str | Path, out: str | Path, *, size: str = "quick", seed: int = 0,
    only: tuple[str, ...] = METRICS, log: Callable[[str], None] = print, data: str | None = None,
    train_data: str | None = None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Run the evaluations named in ``only`` on ``pipe`` (loaded from ``folder``) and write them under ``out``.

    ``data`` (a data spec): held-out pairs of the user's own data instead of the Shapes world, for the
    evaluations that need no scene graph (clip, prior, decoder, upsampler; ``train_data`` is the prior's
    nearest-caption pool); the Shapes-world-only ones (compositional, manipulations) are then skipped."""
    from unclip.eval import generation
    from unclip.eval.clip_eval import evaluate_clip, evaluate_data
    from unclip.eval.inpainting import RUNS, inpainting_rates
    from unclip.eval.manipulations import manipulations
    from unclip.eval.prior_eval import evaluate_prior, sampling_settings
    from unclip.eval.probing_eval import probing_curve

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    unknown = [m for m in only if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown evaluation(s) {', '.join(unknown)}; expected some of {', '.join(METRICS)}")
    n = SIZES[size]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def features():  # FID of reconstructions and upsamplings only at the full sizes, where it means something
        from unclip.eval.inception import InceptionFeatures

        if size != "full":
            return None
        try:
            return InceptionFeatures()
        except FileNotFoundError as err:  # a machine without the FID weights still gets every other figure
            log(f"FID left out: {err}")
            return None

    def pca():  # the PCA of training images' z_i (cached): the user's training data when given
        from unclip.pipeline.probing import DEFAULT_PCA_DATA, embedding_pca

        return embedding_pca(pipe, folder, spec=train_data or DEFAULT_PCA_DATA)

    def probing():
        fit = pca()
        dims = [k for k in PROBING_DIMS if k is None or k <= fit.components.shape[0]]
        result = probing_curve(pipe, fit, dims, n=n["probing"], seed=seed, data=data)
        # One key per number of components, so that the headline table (flatten) has them: dims.16.faithful...
        result["dims"] = {str(row["dims"]): {k: v for k, v in row.items() if k != "dims"} for row in result["rows"]}
        return result

    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "clip": lambda: (
            evaluate_clip(pipe.clip, n=n["clip"], seed=seed)
            if data is None
            else evaluate_data(pipe.clip, data, n=n["clip"])
        ),
        "prior": lambda: evaluate_prior(
            pipe.prior,
            pipe.clip,
            n=n["prior"],
            pool=n["pool"],
            seed=seed,
            settings=sampling_settings(pipe.prior, pipe.settings),
            data=data,
            train_data=train_data,
        ),
        "compositional": lambda: generation.compositional(
            pipe, per_category=n["per_category"], images_per_prompt=n["images_per_prompt"], seed=seed
        ),
        "decoder": lambda: generation.decoder_reconstruction(
            pipe, n=n["decoder"], seed=seed, features=features(), data=data
        ),
        "upsampler": lambda: generation.upsampler_fidelity(
            pipe, n=n["upsampler"], seed=seed, features=features(), data=data
        ),
        "manipulations": lambda: manipulations(pipe, n=n["manipulations"], seed=seed),
        "probing": probing,
        # A model without a prior (an image-variation folder) repairs but cannot edit from a caption.
        "inpainting": lambda: inpainting_rates(
            pipe, n=n["inpainting"], seed=seed, runs=RUNS if pipe.prior is not None else ("repair",)
        ),
    }
    results: dict[str, dict[str, Any]] = {}
    for metric in only:
        if metric == "upsampler" and not pipe.upsamplers:
            log("upsampler: skipped (the model has no upsampler)")
            continue
        if metric in ("prior", "compositional") and pipe.prior is None:
            log(f"{metric}: skipped (the model has no prior: an image-variation folder)")
            continue
        if metric in SHAPES_ONLY and data is not None:
            log(f"{metric}: skipped (it judges Shapes-world prompts and scenes, not --data)")
            continue
        start = time.perf_counter()
        result = runs[metric]()
        result = {"model": str(folder), "size": size, **result, "wall_seconds": time.perf_counter() - start}
        path = _write(out, metric, result)
        results[metric] = result
        log(f"{metric}: {result['wall_seconds']:.0f} s -> {path}")
    return results
