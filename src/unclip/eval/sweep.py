"""``unclip eval sweep``: one model's samples over a grid of sampling settings, scored per setting (issue 9).

Each setting generates the same jobs (the Shapes-world prompt suite, ``images_per_prompt`` seeds per prompt, the
same seeds at every setting) and is scored on:

- ``fid`` against real Shapes-world test images at the same resolution (Inception-v3 FID weights; the reference
  features are cached per resolution, count and extractor);
- ``kid``: the kernel Inception distance against the same reference (unbiased MMD², Bińkowski et al. 2018), whose
  expectation does not depend on the sample size: FID at a few dozen images is mostly small-sample bias;
- ``clip_score``: 100 × mean cosine of each image's CLIP embedding and its prompt's, with the model's own CLIP
  (or ``judge_clip``): the quantity §5.2 trades against FID along the guidance axis;
- ``seconds`` per image (wall) and ``cpu_seconds`` (process CPU time: on a shared machine with one thread per
  process, the figure that other work does not inflate);
- ``diversity``: mean pairwise CLIP cosine distance between the samples of one prompt (Fig. 10–11's claim is that
  unCLIP keeps it as guidance grows), and ``diversity_inception`` (L2 in Inception space);
- the compositional judge (``overall`` and one column per category).

The rows go to ``sweep.json`` in the format ``unclip report`` plots: a guidance setting is written as
``guidance``, the decoder's sampler and steps as ``sampler`` and ``steps``. ``decoder_guidance`` is a shorthand for
both decoder scales at once (the paper's single guidance scale over the whole condition: with s_image = s_text = s
the nested guidance reduces to D(∅) + s (D(z_i, y) − D(∅)), see unclip.diffusion.guidance).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from unclip.atomic import atomic_write_text
from unclip.eval.fid import WARN_BELOW
from unclip.eval.generation import generate_jobs, image_features, judge_jobs, suite_jobs
from unclip.pipeline.settings import expand_shorthands, parse_setting

SWEEP_FILE = "sweep.json"
# Row names that ``unclip report`` understands, for the settings a sweep most often varies.
ROW_NAMES = {
    "decoder_guidance": "guidance", "decoder_guidance_image": "guidance", "decoder_guidance_text": "guidance",
    "decoder_sampler": "sampler", "decoder_steps": "steps",
}  # fmt: skip


def parse_grid(specs: list[str], settings) -> list[dict[str, Any]]:
    """``["decoder_steps=10,25", "decoder_sampler=ddpm,ddim"]`` → the product grid as override dicts.

    Keys are :class:`~unclip.pipeline.SamplingSettings` fields or ``decoder_guidance`` (both decoder scales);
    every combination is validated against the settings class before anything runs.
    """
    axes: list[tuple[str, list[Any]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not values.strip():
            raise ValueError(f"--vary {spec!r}: expected KEY=V1,V2,...")
        if key in (k for k, _ in axes):
            raise ValueError(f"--vary {key} is given twice")
        axes.append((key, [parse_setting(key, v, settings, "--vary") for v in values.split(",")]))
    grid = [dict(zip([k for k, _ in axes], combo, strict=True)) for combo in itertools.product(*[v for _, v in axes])]
    for point in grid or [{}]:
        dataclasses.replace(settings, **expand_shorthands(point))  # the settings' own error for a bad value
    return grid or [{}]


def row_names(point: dict[str, Any]) -> dict[str, Any]:
    """A grid point under the names ``unclip report`` plots (``guidance`` only when one guidance key varies)."""
    guidance_keys = [k for k in point if ROW_NAMES.get(k) == "guidance"]
    return {(k if k in guidance_keys and len(guidance_keys) > 1 else ROW_NAMES.get(k, k)): v for k, v in point.items()}


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def reference_features(inception, resolution: int, n: int, cache_dir: Path | None) -> np.ndarray:
    """Inception features of the first ``n`` Shapes-world test images at ``resolution``, cached on disk."""
    from unclip.data.shapes.batch import render_batch

    key = hashlib.sha1(f"shapes-test|{resolution}|{n}|{inception.id}".encode()).hexdigest()[:16]
    path = cache_dir / f"shapes-reference-{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        feats = np.load(path)
        if feats.shape[0] == n:
            return feats
    _, real = render_batch(n, resolution, split="test")
    feats = image_features(inception, real)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # concurrent sweeps never share one
        np.save(tmp, feats)
        tmp.replace(path)
    return feats


@dataclasses.dataclass
class SweepScorer:
    """Scores one setting's images; holds the feature extractors and the reference statistics."""

    clip: Any
    inception: Any
    reference: np.ndarray

    def __call__(self, jobs: list, images: torch.Tensor) -> dict[str, Any]:
        from unclip.eval.clip_score import SCALE, cosines, text_embeddings
        from unclip.eval.diversity import diversity
        from unclip.eval.fid import fid_from_features
        from unclip.eval.kid import mmd2_unbiased

        unit = (images.clamp(-1, 1) + 1) / 2
        inc = image_features(self.inception, images)
        with torch.inference_mode():
            z_i = torch.cat([self.clip.encode_image(unit[i : i + 64] * 2 - 1) for i in range(0, len(unit), 64)])
        z_i = torch.nn.functional.normalize(z_i.float(), dim=-1).cpu().numpy()
        z_t = text_embeddings(self.clip, [p.text for p, _ in jobs])
        by_prompt: dict[str, list[int]] = {}
        for i, (p, _) in enumerate(jobs):
            by_prompt.setdefault(p.text, []).append(i)
        groups = [ix for ix in by_prompt.values() if len(ix) >= 2]
        judged = judge_jobs(jobs, images)
        row: dict[str, Any] = {
            "fid": _quiet(fid_from_features, self.reference, inc),  # its small-n warning: once per sweep
            "kid": mmd2_unbiased(self.reference, inc),  # unbiased at any n, unlike FID at a few dozen images
            "clip_score": float(SCALE * cosines(z_i, z_t).mean()),
            "diversity": diversity([z_i[ix] for ix in groups], "cosine") if groups else None,
            "diversity_inception": diversity([inc[ix] for ix in groups], "l2") if groups else None,
            "overall": judged["overall"],
        }
        row.update({c: v["accuracy"] for c, v in judged["categories"].items()})
        return row


def run_sweep(
    pipe, grid: list[dict[str, Any]], *, per_category: int | None = 2, images_per_prompt: int = 4, seed: int = 0,
    batch_size: int = 16, base_only: bool = False, reference_n: int = 500, judge_clip=None,
    cache_dir: Path | None = None, out: Path | None = None, label: str | None = None, progress: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """Generate and score the suite at every grid point; rows are written to ``out/sweep.json`` as they finish."""
    from unclip.eval.inception import InceptionFeatures

    if base_only:  # the decoder's own resolution: the upsampler's cost and effect left out of the comparison
        pipe = copy.copy(pipe)
        pipe.upsamplers = []
    jobs = suite_jobs(per_category, images_per_prompt)
    if len(jobs) < WARN_BELOW:
        warnings.warn(
            f"{len(jobs)} images per setting: FID is biased upwards below {WARN_BELOW}; compare rows of one sweep "
            "(same n) and read KID, whose expectation does not depend on n",
            stacklevel=2,
        )
    inception = InceptionFeatures()
    reference = reference_features(inception, pipe.resolution, reference_n, cache_dir)
    scorer = SweepScorer(pipe.clip if judge_clip is None else judge_clip, inception, reference)
    rows: list[dict[str, Any]] = []
    for point in tqdm(grid, desc="sweep", disable=not progress):
        overrides = expand_shorthands(point)
        start, cpu_start = time.perf_counter(), time.process_time()
        images = generate_jobs(pipe, jobs, seed=seed, batch_size=batch_size, **overrides)
        seconds = (time.perf_counter() - start) / len(jobs)
        cpu_seconds = (time.process_time() - cpu_start) / len(jobs)  # robust to other work on a shared machine
        row = row_names(point)
        if label:
            row["label"] = label
        row.update({"seconds": seconds, "cpu_seconds": cpu_seconds, "images": len(jobs), "resolution": pipe.resolution})
        row.update(scorer(jobs, images))
        rows.append(row)
        if out is not None:
            write_rows(out, rows, dataclasses.asdict(pipe.settings))
    return rows


def write_rows(out: Path, rows: list[dict[str, Any]], settings: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / SWEEP_FILE
    atomic_write_text(path, json.dumps({"rows": rows, "base_settings": settings}, indent=2) + "\n")
    return path
