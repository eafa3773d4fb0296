"""The command line shared by the one-tower relation experiments (relation_text_only.py, relation_image_only.py)."""

from __future__ import annotations

import argparse


def tower_parser(doc: str, steps: int) -> argparse.ArgumentParser:
    """MODEL, --steps, --lr, --batch, --save and --device; each script adds its own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("model", help="a CLIP model folder")
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--save", help="write the CLIP to SAVE_<step> every 100 steps")
    parser.add_argument("--device", default="cpu")
    return parser
