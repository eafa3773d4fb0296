"""Scaling CLIP image embeddings to unit-ish variance before diffusing them (§2.2, Appendix C).

A unit-norm CLIP embedding of dimension D has per-dimension standard deviation around 1/sqrt(D), far below the
unit variance the noise schedule assumes; diffusing it as is would drown the signal at almost every timestep.
The paper multiplies by a constant (17.2 for its 1024-d ViT-H embeddings); Karlo standardizes each dimension
with the training set's mean and std. Both are supported, and the statistics live in module buffers so they are
saved with the prior's weights: a checkpoint without them fails strict loading instead of sampling garbage.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

NORMALIZATIONS = ("standardize", "scalar")


def is_fitted(module: nn.Module) -> bool:
    """Whether ``module.fitted`` is 1, read from the device once and remembered until a state dict is loaded: the
    training loss checks it every step, and each read would make the host wait for the device."""
    if module.__dict__.get("_fitted_seen") is not True:
        if int(module.fitted) != 1:
            return False
        if "_fitted_hook" not in module.__dict__:
            module._fitted_hook = module.register_load_state_dict_post_hook(_forget_fitted)  # type: ignore[assignment]
        module._fitted_seen = True  # type: ignore[assignment]
    return True


def _forget_fitted(module: nn.Module, incompatible_keys: object) -> None:
    module.__dict__.pop("_fitted_seen", None)


class EmbeddingNorm(nn.Module):
    """``x = (z - mean) / std`` and back; ``mean``/``std`` are per-dimension buffers (``scalar``: 0 and 1/scale)."""

    def __init__(self, dim: int, mode: str = "standardize", scale: float = 17.2) -> None:
        super().__init__()
        if mode not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {mode!r}; expected one of {', '.join(NORMALIZATIONS)}")
        if not scale > 0:
            raise ValueError(f"normalization scale must be > 0, got {scale!r}")
        self.dim, self.mode = dim, mode
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.full((dim,), 1.0 / scale if mode == "scalar" else 1.0))
        # 0 until fit() has run (or a checkpoint that ran it is loaded); sampling refuses an unfitted norm.
        self.register_buffer("fitted", torch.tensor(1 if mode == "scalar" else 0, dtype=torch.int64))

    @torch.no_grad()
    def fit(self, z: Tensor, eps: float = 1e-6) -> EmbeddingNorm:
        """Per-dimension statistics of training image embeddings ``z`` (N, D); a no-op for the scalar mode."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"embeddings to fit must have shape (N, {self.dim}), got {tuple(z.shape)}")
        if self.mode == "scalar":
            return self
        if z.shape[0] < 2:
            raise ValueError(f"need at least 2 embeddings to fit per-dimension statistics, got {z.shape[0]}")
        z = z.double()
        self.mean.copy_(z.mean(0).float())
        self.std.copy_(z.std(0).clamp_min(eps).float())
        self.fitted.fill_(1)
        return self

    def check_fitted(self) -> None:
        if not is_fitted(self):
            raise ValueError(
                "the prior's embedding normalization has no statistics: fit it on training image embeddings "
                "(EmbeddingNorm.fit) or load a checkpoint that has them"
            )

    def normalize(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std

    def denormalize(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean
