"""``unclip train diffusion_prior`` and ``unclip train ar_prior``: both priors on the training engine.

The priors learn from precomputed CLIP embeddings (``unclip.prior.embeddings``), named by the stage config's
``embeddings`` folder. The stage uses only each batch's global stream positions (``Batch.index``) and per-sample
seeds, mapped to embedding rows by a per-epoch permutation, so runs stay deterministic and exactly resumable.
``--data embeddings:DIR`` (``unclip.data.embedding_source``; the CLI's default when ``model.embeddings`` is set)
makes the engine deliver just those, with no image rendered or decoded. An image source (``--data shapes``, the
older way) still works and gives the same steps for random-access sources, at the cost of images thrown away.

``build`` fits the data statistics (the diffusion prior's normalization; the AR prior's PCA, bucket ranges and
dot-product quantiles) on the embedding set, so a checkpoint's weights carry them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unclip.data.embedding_shards import EmbeddingShards
from unclip.diffusion import check_weighting
from unclip.prior.ar_prior import ARPrior, ARPriorConfig, ar_prior_loss
from unclip.prior.checkpoint import save_pretrained
from unclip.prior.diffusion_prior import DIFFUSION_PRIOR_PRESETS, DiffusionPrior, DiffusionPriorConfig, prior_draws
from unclip.prior.diffusion_prior import diffusion_prior_loss as _diffusion_loss
from unclip.prior.sampling import sample_diffusion_prior
from unclip.train.config import TrainConfig
from unclip.train.stage import Batch, Preset, Stage, StepOutput, sample_generators
from unclip.transfers import to_device


def _micro_batch_draws(mb: Any, config: DiffusionPriorStageConfig) -> dict[str, Tensor]:
    return prior_draws(config, sample_generators(mb.seed))


FIT_ROWS = 200_000  # statistics are fitted on at most this many pairs (PCA on more changes nothing)


@dataclass
class DiffusionPriorStageConfig(DiffusionPriorConfig):
    embeddings: str = ""  # folder written by write_embeddings / `unclip embed`
    resolution: int = 8  # images an image --data source loads and the stage ignores: keep them small
    # "uniform" (the paper's MSE on z_i) or "min_snr": for this x0-predicting prior, min(SNR, γ) weights the
    # noisy steps down, the opposite of what it does for the eps-predicting decoder.
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_weighting(self.loss_weighting, self.min_snr_gamma)


@dataclass
class ARPriorStageConfig(ARPriorConfig):
    embeddings: str = ""
    resolution: int = 8


@lru_cache(maxsize=2)
def _embeddings(folder: str) -> EmbeddingShards:
    if not folder:
        raise ValueError(
            "the prior stages train on precomputed embeddings (`unclip embed`): pass --data embeddings:FOLDER "
            "or --set model.embeddings=FOLDER"
        )
    return EmbeddingShards(folder)  # a window of shards in memory at a time, not the whole folder


def _checked(folder: str, config: DiffusionPriorConfig | ARPriorConfig) -> EmbeddingShards:
    data = _embeddings(folder)
    for k, v in data.dims.items():
        if getattr(config, k) != v:
            raise ValueError(f"model.{k} is {getattr(config, k)} but the embeddings in {folder!r} have {k} {v}; "
                             f"set --set model.{k}={v}")  # fmt: skip
    return data


def _base(config: object, cls: type) -> object:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in dataclasses.asdict(config).items() if k in names})  # type: ignore[call-overload]


class DiffusionPriorStage(Stage[DiffusionPriorStageConfig]):
    name = "diffusion_prior"
    config_type = DiffusionPriorStageConfig

    def presets(self) -> dict[str, Preset[DiffusionPriorStageConfig]]:
        def cfg(name: str) -> DiffusionPriorStageConfig:
            return DiffusionPriorStageConfig(**dataclasses.asdict(DIFFUSION_PRIOR_PRESETS[name]))

        return {
            "tiny": Preset(cfg("tiny"), TrainConfig(steps=500, batch_size=64, lr=1e-3, warmup_steps=20,
                                                    checkpoint_every=250, ema_decay=0.999, sample_count=0),
                           "tiny CLIP dims; seconds per hundred steps on a CPU (tests)"),
            "mini": Preset(cfg("mini"), TrainConfig(steps=2500, batch_size=128, lr=6e-4, warmup_steps=100,
                                                    weight_decay=0.01, checkpoint_every=500, ema_decay=0.995,
                                                    sample_count=0),
                           "mini CLIP dims: the CPU-trained bundled model (minutes on 2 cores)"),
            "small": Preset(cfg("small"), TrainConfig(steps=20_000, batch_size=256, lr=3e-4, warmup_steps=500,
                                                      weight_decay=0.01, checkpoint_every=1000, sample_count=0),
                            "small CLIP dims (Shapes world)"),
            "base": Preset(cfg("base"), TrainConfig(steps=200_000, batch_size=1024, lr=1.1e-4, warmup_steps=2000,
                                                    weight_decay=0.06, checkpoint_every=5000, sample_count=0),
                           "ViT-B/32 dims; the paper's prior used lr 1.1e-4, weight decay 6e-2 (Table 3)"),
        }  # fmt: skip

    def prepare(self, config: DiffusionPriorStageConfig) -> None:
        _checked(config.embeddings, config)  # a missing, malformed or mismatched folder fails before any work

    def export(self, model: nn.Module, config: DiffusionPriorStageConfig, folder: str | Path) -> Path:
        """The bare prior network (the stage's own fields, like the embedding folder, are not part of it)."""
        return save_pretrained(model, folder)

    def build(self, config: DiffusionPriorStageConfig) -> nn.Module:
        net = DiffusionPrior(_base(config, DiffusionPriorConfig))  # type: ignore[arg-type]
        if not config.embeddings:  # shapes only (the engine's preset check); loss() asks for the embeddings
            return net
        data = _checked(config.embeddings, config)
        net.norm.fit(data.head(FIT_ROWS)[0])
        return net

    def resolution(self, config: DiffusionPriorStageConfig) -> int:
        return int(config.resolution)

    def loss(self, model: nn.Module, batch: Batch, config: DiffusionPriorStageConfig) -> StepOutput:
        data = _embeddings(config.embeddings)
        z_i, z_t, tokens, mask = (to_device(x, batch.image.device) for x in data.batch(data.rows(batch.index)))
        # The draws come from the loader's workers (batch_extras); a batch made by hand draws them in the loss.
        out = _diffusion_loss(
            model, z_i, z_t, tokens, mask, generators=batch.generators(), draws=batch.extra or None,
            weighting=config.loss_weighting, min_snr_gamma=config.min_snr_gamma,
        )  # fmt: skip
        return StepOutput(out.loss.mean(), {"mse": out.mse.detach().mean()})

    def batch_extras(self, config: DiffusionPriorStageConfig):  # -> Callable[[MicroBatch], dict]
        return partial(_micro_batch_draws, config=config)

    @torch.no_grad()
    def evaluate(self, model: DiffusionPrior, config: DiffusionPriorStageConfig, n: int = 64) -> float:
        """Mean cosine of sampled and true z_i on the first ``n`` pairs (a quick training-set check)."""
        data = _embeddings(config.embeddings)
        z_i, z_t, tokens, mask = data.batch(torch.arange(min(n, len(data))))
        out = sample_diffusion_prior(model, z_t, tokens, mask, generator=torch.Generator().manual_seed(0))
        return float(torch.nn.functional.cosine_similarity(out.z_i, z_i).mean())


class ARPriorStage(Stage[ARPriorStageConfig]):
    name = "ar_prior"
    config_type = ARPriorStageConfig

    def presets(self) -> dict[str, Preset[ARPriorStageConfig]]:
        from unclip.prior.ar_prior import AR_PRIOR_PRESETS

        def cfg(name: str) -> ARPriorStageConfig:
            return ARPriorStageConfig(**dataclasses.asdict(AR_PRIOR_PRESETS[name]))

        return {
            "tiny": Preset(cfg("tiny"), TrainConfig(steps=500, batch_size=64, lr=1e-3, warmup_steps=20,
                                                    checkpoint_every=250, ema_decay=0.999, sample_count=0)),
            "mini": Preset(cfg("mini"), TrainConfig(steps=2500, batch_size=128, lr=6e-4, warmup_steps=100,
                                                    weight_decay=0.01, checkpoint_every=500, ema_decay=0.995,
                                                    sample_count=0),
                           "the diffusion prior mini's size and schedule, for the side-by-side of §2.2"),
            "small": Preset(cfg("small"), TrainConfig(steps=20_000, batch_size=256, lr=3e-4, warmup_steps=500,
                                                      weight_decay=0.01, checkpoint_every=1000, sample_count=0)),
            "base": Preset(cfg("base"), TrainConfig(steps=200_000, batch_size=1024, lr=1.6e-4, warmup_steps=2000,
                                                    weight_decay=0.06, checkpoint_every=5000, sample_count=0)),
        }  # fmt: skip

    def prepare(self, config: ARPriorStageConfig) -> None:
        _checked(config.embeddings, config)

    def export(self, model: nn.Module, config: ARPriorStageConfig, folder: str | Path) -> Path:
        """The bare prior network (the stage's own fields, like the embedding folder, are not part of it)."""
        return save_pretrained(model, folder)

    def build(self, config: ARPriorStageConfig) -> nn.Module:
        """The component count comes from the data (> ``variance`` kept), capped by ``config.components``."""
        base: ARPriorConfig = _base(config, ARPriorConfig)  # type: ignore[assignment]
        if not config.embeddings:  # shapes only, unfitted (see DiffusionPriorStage.build)
            return ARPrior(base)
        data = _checked(config.embeddings, config)
        z_i, z_t = data.head(FIT_ROWS)
        from unclip.prior.pca import pca_components

        k = min(int(pca_components(z_i, base.variance)[1].shape[0]), base.components)
        return ARPrior(dataclasses.replace(base, components=k)).fit_statistics(z_i, z_t)

    def resolution(self, config: ARPriorStageConfig) -> int:
        return int(config.resolution)

    def loss(self, model: nn.Module, batch: Batch, config: ARPriorStageConfig) -> StepOutput:
        data = _embeddings(config.embeddings)
        z_i, z_t, tokens, mask = (to_device(x, batch.image.device) for x in data.batch(data.rows(batch.index)))
        ce, acc = ar_prior_loss(model, z_i, z_t, tokens, mask)
        return StepOutput(ce.mean(), {"ce": ce.detach().mean(), "accuracy": acc.detach().float().mean()})


PRIOR_STAGES = {"diffusion_prior": DiffusionPriorStage, "ar_prior": ARPriorStage}
