"""How much of a scene's content a linear read-out finds in z_i, set beside what the decoder draws from it
(docs/results.md, "What the decoder gets wrong").

The reconstruction-failure tally (``reconstruction_failures.py``) finds the bundled decoder drawing the wrong shapes
and the wrong number of objects far more often than swapping colours. Is that information missing from z_i (a CLIP
problem) or present and not drawn (a decoder problem)? Linear probes on z_i, fitted on ``--train`` training scenes
(rendered at the decoder's resolution and encoded as the decoder's evaluation encodes them) and scored on the first
``--n`` test scenes, answer per scene: the object count (4-way softmax), which shapes are present (8 logistic
outputs, all right) and which colours are present (all right). The same three criteria are scored on the decoder's
reconstructions from ``reconstruction_failures.py --json`` when given.

    python scripts/experiments/z_i_content_probe.py [--model DIR] [--train 6000] [--n 96] [--failures FILE.json]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from unclip.data.shapes.batch import render_batch
from unclip.data.shapes.scene import COLOURS, SHAPES
from unclip.pipeline import UnCLIPPipeline

BUNDLED = "src/unclip/assets/shapes-model"
COLOUR_NAMES = tuple(COLOURS)


def targets(objects: list[tuple[str, str]]) -> tuple[int, list[float], list[float]]:
    """(object count - 1, shape presence, colour presence) of (shape, colour) objects."""
    shapes, colours = {s for s, _ in objects}, {c for _, c in objects}
    return len(objects) - 1, [float(s in shapes) for s in SHAPES], [float(c in colours) for c in COLOUR_NAMES]


def fit_probe(z: torch.Tensor, count: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor, steps: int = 500):
    """One linear map from standardized z to 4 count logits + shape and colour presence logits (L-BFGS, small L2)."""
    mean, std = z.mean(0), z.std(0) + 1e-6
    w = torch.zeros(z.shape[1], 4 + len(SHAPES) + len(COLOUR_NAMES), requires_grad=True)
    b = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")
    x = (z - mean) / std

    def closure():
        opt.zero_grad()
        out = x @ w + b
        loss = F.cross_entropy(out[:, :4], count)
        loss = loss + F.binary_cross_entropy_with_logits(out[:, 4:], torch.cat([shapes, colours], 1))
        loss = loss + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda q: ((q - mean) / std) @ w.detach() + b.detach()


def fit_mlp_probe(z: torch.Tensor, count: torch.Tensor, shapes: torch.Tensor, colours: torch.Tensor, steps: int = 3000):
    """The same read-out through one hidden layer of 512 (Adam, full batch): what a nonlinear reader such as the
    decoder could find that a linear one does not."""
    torch.manual_seed(0)
    mean, std = z.mean(0), z.std(0) + 1e-6
    net = torch.nn.Sequential(
        torch.nn.Linear(z.shape[1], 512), torch.nn.GELU(), torch.nn.Linear(512, 4 + len(SHAPES) + len(COLOUR_NAMES))
    )
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    x, presence = (z - mean) / std, torch.cat([shapes, colours], 1)
    for _ in range(steps):
        out = net(x)
        loss = F.cross_entropy(out[:, :4], count) + F.binary_cross_entropy_with_logits(out[:, 4:], presence)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    return lambda q: net((q - mean) / std).detach()


def scene_rates(count_ok: torch.Tensor, shapes_ok: torch.Tensor, colours_ok: torch.Tensor) -> dict[str, float]:
    return {
        "count": count_ok.float().mean().item(),
        "shape set": shapes_ok.float().mean().item(),
        "colour set": colours_ok.float().mean().item(),
        "all three": (count_ok & shapes_ok & colours_ok).float().mean().item(),
    }


@torch.no_grad()
def encode(pipe, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([pipe.clip.encode_image(images[i : i + batch]).float() for i in range(0, len(images), batch)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=BUNDLED)
    ap.add_argument("--train", type=int, default=6000)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--failures", help="reconstruction_failures.py --json output, to score the decoder alike")
    ap.add_argument("--render", type=int, help="render scenes at this size before encoding (default: the decoder's "
                    "resolution, as the decoder's training and evaluation encode them; the CLIP's own for a z_i "
                    "as the prior learns it)")  # fmt: skip
    args = ap.parse_args()
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    res = args.render or pipe.decoder.config.resolution
    data = {}
    for split, n in (("train", args.train), ("test", args.n)):
        samples, images = render_batch(n, res, split=split)
        rows = [targets([(o.shape, o.colour) for o in s.scene.objects]) for s in samples]
        data[split] = (
            encode(pipe, images),
            torch.tensor([r[0] for r in rows]),
            torch.tensor([r[1] for r in rows]),
            torch.tensor([r[2] for r in rows]),
        )
    z, count, shapes, colours = data["test"]
    result: dict = {"model": args.model, "train": args.train, "n": args.n, "rendered at": res}
    for name, fit in (("z_i linear probe", fit_probe), ("z_i MLP probe", fit_mlp_probe)):
        out = fit(*data["train"])(z)
        result[name] = scene_rates(
            out[:, :4].argmax(1) == count,
            ((out[:, 4 : 4 + len(SHAPES)] > 0).float() == shapes).all(1),
            ((out[:, 4 + len(SHAPES) :] > 0).float() == colours).all(1),
        )
    if args.failures:
        with open(args.failures, encoding="utf-8") as f:
            scenes = json.load(f)["scenes"][: args.n]
        truth = [targets([tuple(o) for o in s["truth"]]) for s in scenes]
        none = (-1, [], [])  # nothing detected: no count, shape or colour right
        drawn = [targets([tuple(o) for o in s["reconstruction"]]) if s["reconstruction"] else none for s in scenes]
        result["decoder"] = scene_rates(
            torch.tensor([t[0] == d[0] for t, d in zip(truth, drawn, strict=True)]),
            torch.tensor([t[1] == d[1] for t, d in zip(truth, drawn, strict=True)]),
            torch.tensor([t[2] == d[2] for t, d in zip(truth, drawn, strict=True)]),
        )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
