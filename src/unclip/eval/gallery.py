"""The demo gallery (``unclip demo``): text-to-image for every prompt-suite category, judged, the three
manipulations of §3, an inpainting edit and the probing of §4 on held-out Shapes-world images, as one HTML page
with its PNGs.

Written into a temporary folder and moved into place at the end, so an interrupted demo leaves nothing half-done.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path
from typing import Any

import torch

from unclip.atomic import atomic_directory
from unclip.data.shapes.batch import render_batch
from unclip.eval.generation import judge_ready
from unclip.eval.inpainting import edit_cases
from unclip.pipeline import embedding_pca, interpolate, probe, text_diff, to_pil, variations
from unclip.pipeline.inpainting import inpaint_batch, text_diff_embeddings

PCA_N = 1000  # images behind the probing row's PCA: about 10 s of CLIP on a CPU, cached after the first demo


def _section(title: str, note: str, items: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<figure><img src="{html.escape(src)}" width="128"><figcaption>{html.escape(cap)}</figcaption></figure>'
        for src, cap in items
    )
    return f"<h2>{html.escape(title)}</h2><p>{html.escape(note)}</p><div class='row'>{cells}</div>"


@torch.no_grad()
def build_gallery(
    pipe, out: str | Path, *, per_category: int = 2, seed: int = 0, model_dir: str | Path | None = None,
    pca_n: int = PCA_N,
) -> dict[str, Any]:  # fmt: skip
    """Generate the gallery into ``out`` (``index.html`` + PNGs); returns the judge's scores and timings.
    ``model_dir`` (the folder ``pipe`` came from) keys the cached PCA of the probing row, fitted on ``pca_n``
    images."""
    from unclip.data.shapes import CATEGORIES, PROMPT_SUITE, judge

    start = time.perf_counter()
    with atomic_directory(out) as tmp:
        sections, scores = [], {}
        prompts = [p for c in CATEGORIES for p in [q for q in PROMPT_SUITE if q.category == c][:per_category]]
        result = pipe([p.text for p in prompts], seed=seed)
        items = []
        for k, (prompt, image, arr) in enumerate(zip(prompts, result.images, judge_ready(result.tensors), strict=True)):
            ok = bool(judge(arr, prompt.requirement))
            scores.setdefault(prompt.category, []).append(ok)
            image.save(tmp / f"prompt_{k:02d}.png")
            items.append((f"prompt_{k:02d}.png", f"{'✓' if ok else '✗'} {prompt.text}"))
        sections.append(
            _section("Text to image", "Prompts from every category of the suite; ✓ = the judge agrees.", items)
        )

        samples, held = render_batch(3, pipe.decoder.config.resolution, split="test", seed=seed)
        sources = to_pil(held)
        for k, im in enumerate(sources):
            im.save(tmp / f"source_{k}.png")
        var = to_pil(variations(pipe, sources[0], n=4, eta=1.0, seed=seed))
        for k, im in enumerate(var):
            im.save(tmp / f"variation_{k}.png")
        cells = [("source_0.png", "source")] + [(f"variation_{k}.png", f"eta 1, seed {seed + k}") for k in range(4)]
        sections.append(_section("Variations (§3.1)", f"Source: {samples[0].caption}", cells))

        frames = to_pil(interpolate(pipe, sources[1], sources[2], frames=5, seed=seed))
        for k, im in enumerate(frames):
            im.save(tmp / f"interpolation_{k}.png")
        sections.append(_section("Interpolation (§3.2)", f"{samples[1].caption} → {samples[2].caption}",
                                 [(f"interpolation_{k}.png", f"θ={k / 4:.2f}") for k in range(5)]))  # fmt: skip

        first = samples[0].scene.objects[0]
        new_colour = "blue" if first.colour != "blue" else "red"
        src_text, dst_text = f"a {first.colour} {first.shape}", f"a {new_colour} {first.shape}"
        diffs = to_pil(text_diff(pipe, sources[0], src_text, dst_text, frames=4, max_theta=0.5, seed=seed))
        for k, im in enumerate(diffs):
            im.save(tmp / f"textdiff_{k}.png")
        sections.append(_section("Text diff (§3.3)", f"{src_text} → {dst_text}",
                                 [(f"textdiff_{k}.png", f"θ={0.5 * k / 3:.2f}") for k in range(4)]))  # fmt: skip

        case = edit_cases(1, pipe.resolution, seed=seed)[0]
        # A text-diff edit: the source's own z_i turned toward the new caption (the better edit, docs/results.md).
        z_i = text_diff_embeddings(pipe, case["image"][None], [case["source_caption"]], [case["caption"]])
        images, fill = case["image"].expand(3, -1, -1, -1), case["fill"].expand(3, -1, -1, -1)
        seeds = [seed + k for k in range(3)]
        fills = to_pil(inpaint_batch(pipe, images, fill, [case["caption"]] * 3, seeds, z_i=z_i.expand(3, -1)))
        to_pil(case["image"][None])[0].save(tmp / "inpaint_source.png")
        to_pil((case["image"] * (1 - case["fill"]))[None])[0].save(tmp / "inpaint_masked.png")
        for k, im in enumerate(fills):
            im.save(tmp / f"inpaint_{k}.png")
        cells = [("inpaint_source.png", "source"), ("inpaint_masked.png", "masked")]
        cells += [(f"inpaint_{k}.png", f"seed {seed + k}") for k in range(3)]
        sections.append(_section("Inpainting (RePaint)", f"{case['source_caption']} → {case['caption']}: the masked "
                                 "object redrawn in its new colour, every other pixel kept", cells))  # fmt: skip

        pca = embedding_pca(pipe, model_dir, n=pca_n)
        dims = [1, 4, 16, None]
        probes = to_pil(probe(pipe, sources[0], [k for k in dims if k is None or k <= len(pca.explained)], pca,
                              seed=seed))  # fmt: skip
        cells = []
        for k, (dim, im) in enumerate(zip(dims, probes, strict=False)):
            im.save(tmp / f"probe_{k}.png")
            cells.append((f"probe_{k}.png", "z_i" if dim is None else f"{dim} components, {pca.cumulative(dim):.0%}"))
        sections.append(_section("Probing (§4)", f"z_i of the first source rebuilt from its top principal components "
                                 f"(PCA of {pca.n} training images), decoded from one seed", cells))  # fmt: skip

        summary = {c: sum(v) / len(v) for c, v in scores.items()}
        summary["overall"] = sum(summary.values()) / len(summary)
        report = {"scores": summary, "images": len(prompts), "seconds": time.perf_counter() - start}
        page = (
            "<!doctype html><meta charset='utf-8'><title>unclip demo</title><style>body{font-family:sans-serif}"
            ".row{display:flex;flex-wrap:wrap;gap:8px}figure{margin:0;width:136px;font-size:11px}</style>"
            "<h1>unclip demo</h1><p>Judge scores: "
            + html.escape(", ".join(f"{k} {v:.2f}" for k, v in summary.items()))
            + "</p>" + "".join(sections)
        )  # fmt: skip
        (tmp / "index.html").write_text(page, encoding="utf-8")
        (tmp / "scores.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report
