"""Where a binding difference lives in the spectrum of z_i, and how the decoder's projections scale it.

Encodes 2,000 Shapes-world training images with a stack's CLIP, takes the principal components of their z_i, and
for 300 colour-swapped and 300 place-exchanged pairs (``unclip.eval.binding_probe``) prints the share of the pair
difference's energy in bands of components beside the data's variance in the same bands, and the pair distance
relative to two random images' in raw and in whitened z_i (eigenvalue floor 1e-6 of the largest). Session 23's
numbers are in docs/training.md, "Whitening z_i".

    python scripts/experiments/z_i_spectrum.py [MODEL_DIR]   # default: the bundled stack
"""

import sys

import torch
import torch.nn.functional as F

from unclip.data.shapes.batch import render_batch, scenes_tensor
from unclip.eval.binding_probe import placed_pairs, swapped_pairs
from unclip.pipeline import UnCLIPPipeline


def main(model: str) -> None:
    torch.set_grad_enabled(False)
    clip = UnCLIPPipeline.from_pretrained(model).clip.float().eval()
    size = clip.image_size
    _, images = render_batch(2000, size, split="train", seed=0)
    z = torch.cat([clip.encode_image(images[i : i + 200]) for i in range(0, 2000, 200)])
    mean = z.mean(0)
    eigenvalues, vectors = torch.linalg.eigh(torch.cov((z - mean).T))
    eigenvalues, vectors = eigenvalues.flip(0).clamp_min(0), vectors.flip(1)
    print(f"z_i: {z.shape[1]} dims, effective rank {(eigenvalues.sum() ** 2 / (eigenvalues**2).sum()).item():.1f}, "
          f"largest eigenvalue {eigenvalues[0].item():.3g}, median {eigenvalues.median().item():.3g}")  # fmt: skip
    whiten = vectors / (eigenvalues + 1e-6 * eigenvalues[0]).sqrt()
    bands = [(0, 8), (8, 32), (32, 128), (128, z.shape[1])]
    for kind, pairs in (("swap", swapped_pairs(300)), ("place", placed_pairs(300))):
        z_a = clip.encode_image(scenes_tensor([p[0] for p in pairs], size))
        z_b = clip.encode_image(scenes_tensor([p[1] for p in pairs], size))
        diff = z_a - z_b
        energy = ((diff @ vectors) ** 2).mean(0)
        energy = energy / energy.sum()
        print(f"{kind}: cosine between the twins {F.cosine_similarity(z_a, z_b).mean().item():.3f}")
        for lo, hi in bands:
            print(f"  components {lo}-{hi}: {energy[lo:hi].sum().item():.3f} of the difference, "
                  f"{(eigenvalues[lo:hi].sum() / eigenvalues.sum()).item():.3f} of the data's variance")  # fmt: skip
        r1, r2 = z[:300], z[300:600]
        raw = diff.norm(dim=1).mean() / (r1 - r2).norm(dim=1).mean()
        white = (diff @ whiten).norm(dim=1).mean() / ((r1 - r2) @ whiten).norm(dim=1).mean()
        print(f"  twin distance / random distance: raw {raw.item():.3f}, whitened {white.item():.3f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "src/unclip/assets/shapes-model")
