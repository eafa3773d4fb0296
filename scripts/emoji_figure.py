"""The emoji stack's picture (docs/training.md, "Real data: emoji"): captions in, images out, beside the real drawing.

    python scripts/emoji_figure.py --model runs/emoji/model --data emoji --out docs/emoji_generated.png

Rows: held-out captions (the test split, never seen in training), then training captions, each as the real
drawing followed by ``--n`` samples of the stack from that caption (seed ``--seed + k``); then variations (§3.1)
of held-out drawings, the source first. Captions are spread evenly over each split, in code order.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

from unclip.atomic import atomic_file
from unclip.pipeline import UnCLIPPipeline, to_pil, variations
from unclip.pipeline.outputs import contact_sheet


def _spread(folder: Path, k: int) -> list[tuple[Path, str]]:
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    step = max(1, len(rows) // k)
    return [(folder / r["file_name"], r["text"]) for r in rows[::step][:k]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the emoji stack's model folder")
    p.add_argument("--data", required=True, help="the folder `unclip data emoji` wrote (train/ and test/)")
    p.add_argument("--test", type=int, default=6, help="held-out captions")
    p.add_argument("--train", type=int, default=3, help="training captions")
    p.add_argument("--vary", type=int, default=2, help="held-out drawings to vary")
    p.add_argument("--n", type=int, default=3, help="samples per caption and variations per drawing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="PNG file to write")
    args = p.parse_args()
    pipe = UnCLIPPipeline.from_pretrained(args.model)
    data = Path(args.data)
    chosen = [*_spread(data / "test", args.test), *_spread(data / "train", args.train)]
    made = pipe([c for _, c in chosen], num_images=args.n, seed=args.seed, batch_size=16, progress=True).images
    size = made[0].size
    images, labels = [], []
    for i, (path, caption) in enumerate(chosen):
        split = "held out" if i < args.test else "train"
        images += [Image.open(path).convert("RGB").resize(size, Image.BICUBIC), *made[i * args.n : (i + 1) * args.n]]
        labels += [f"{caption} ({split})", *[f"seed {args.seed + i * args.n + k}" for k in range(args.n)]]
    for path, caption in _spread(data / "test", args.vary):
        varied = to_pil(variations(pipe, str(path), n=args.n, eta=1.0, seed=args.seed))
        images += [Image.open(path).convert("RGB").resize(size, Image.BICUBIC), *varied]
        labels += [f"{caption}: variations", *["eta 1"] * args.n]
    with atomic_file(args.out) as tmp:
        contact_sheet(images, labels, columns=1 + args.n, label_height=14).save(tmp, format="PNG")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
