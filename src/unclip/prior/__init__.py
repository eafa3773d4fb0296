"""The two priors of §2.2 (P(z_i | y)): a diffusion prior and an autoregressive prior over CLIP image embeddings.

Both take tensors only: the caption's CLIP text embedding ``z_t`` (B, D), its token states (B, L, W) and mask
(B, L) bool; they return CLIP image embeddings ``z_i`` (B, D). See docs/prior.md.
"""

from unclip.prior.ar_prior import (
    AR_PRIOR_PRESETS,
    ARPrior,
    ARPriorConfig,
    ARSample,
    ar_prior_config,
    ar_prior_loss,
    sample_ar_prior,
)
from unclip.prior.checkpoint import CheckpointError, from_pretrained, save_pretrained
from unclip.prior.diffusion_prior import (
    DIFFUSION_PRIOR_PRESETS,
    DiffusionPrior,
    DiffusionPriorConfig,
    diffusion_prior_config,
    diffusion_prior_loss,
)
from unclip.prior.normalize import EmbeddingNorm
from unclip.prior.pca import PCAQuantizer, pca_components
from unclip.prior.sampling import PriorSample, best_of_n, mean_of_n, sample_diffusion_prior

__all__ = [
    "AR_PRIOR_PRESETS",
    "DIFFUSION_PRIOR_PRESETS",
    "ARPrior",
    "ARPriorConfig",
    "ARSample",
    "CheckpointError",
    "DiffusionPrior",
    "DiffusionPriorConfig",
    "EmbeddingNorm",
    "PCAQuantizer",
    "PriorSample",
    "ar_prior_config",
    "ar_prior_loss",
    "best_of_n",
    "diffusion_prior_config",
    "diffusion_prior_loss",
    "from_pretrained",
    "mean_of_n",
    "pca_components",
    "sample_ar_prior",
    "sample_diffusion_prior",
    "save_pretrained",
]
