"""The decoder's embedding-consistency loss: the CLIP embedding of its predicted x0 should be the z_i it was given.

Beyond the paper. §2.1's decoder learns only to denoise (L_simple); nothing in that loss asks it to keep what
tells z_i from a near twin, and at Shapes-world scale it keeps colour attribution in 3% of its reconstructions
although a linear probe reads a colour swap from z_i at 0.99 (docs/training.md, "Whitening z_i"). This term asks
directly: decode x̂0 from the network's output at the drawn step, embed it with the frozen CLIP (gradients flow
through the CLIP into the decoder, the CLIP's weights stay fixed), and penalise its distance to z_i.

Each sample's term is weighted by ᾱ_t^p, the fraction of x_t that is signal to a power p (1 by default): at the
noisy steps x̂0 is the blurred mean of every image x_t allows, whose embedding is far from any z_i (for the bundled
decoder at t = 950 farther than a random scene's), so the term there mostly asks for sharpness. Yet given z_i a
faithful decoder's x̂0 should show one scene graph even then, and the noisy steps are where a layout is decided;
p = 0 weights every step alike to ask for that. Samples whose z_i was dropped (the unconditional branch) get no term.

Two distances: ``cosine`` (1 − cos, on the unit sphere where CLIP's embeddings live) and ``whitened``, half the mean
squared difference after the PCA whitening of ``unclip.models.whitening`` fitted on the training data's embeddings.
In raw z_i a colour-swapped twin is 0.17 of a random scene's distance away; whitened, 0.83: the whitened distance
makes a wrong binding cost nearly what a wrong scene does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("cosine", "whitened")


def embedding_distance(z_hat: Tensor, z: Tensor, metric: str, whiten: Tensor | None = None) -> Tensor:
    """Per-row distance ``(B,)`` between unit embeddings ``z_hat`` and ``z``.

    ``cosine``: 1 − cos(z_hat, z). ``whitened``: ‖(z_hat − z) M‖² / (2·dim) with ``whiten`` = M (the mean cancels
    in a difference), so two independent draws of whitened unit-variance data are 1 apart on average."""
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(z_hat, z, dim=-1)
    if metric == "whitened":
        if whiten is None:
            raise ValueError("the whitened embedding distance needs the whitening matrix")
        d = (z_hat - z) @ whiten.to(z.dtype)
        return d.pow(2).mean(-1) / 2
    raise ValueError(f"unknown embedding distance {metric!r}; expected one of {', '.join(METRICS)}")


def embedding_consistency(
    clip: torch.nn.Module,
    x0_hat: Tensor,
    z_i: Tensor,
    alpha_bar: Tensor,
    keep: Tensor,
    metric: str = "cosine",
    whiten: Tensor | None = None,
    signal_power: float = 1.0,
) -> Tensor:
    """Per-sample ``(B,)`` term ᾱ_t^p · d(CLIP(x̂0), z_i), zero where ``keep`` is False (z_i dropped).

    ``signal_power`` p = 1 is the weighting the module describes; 0 weights every step alike, noisy ones included.

    ``x0_hat`` carries the decoder's gradient; it is clamped to the image range [-1, 1] the CLIP reads. Only the
    kept rows are embedded, so a batch of dropped z_i costs no CLIP pass."""
    out = x0_hat.new_zeros(x0_hat.shape[0])
    if not bool(keep.any()):
        return out
    rows = keep.nonzero().squeeze(1)
    z_hat = clip.encode_image(x0_hat[rows].clamp(-1.0, 1.0)).to(z_i.dtype)
    term = alpha_bar[rows].to(z_i.dtype) ** signal_power * embedding_distance(z_hat, z_i[rows], metric, whiten)
    return out.index_put((rows,), term.to(out.dtype))
