"""``unclip train decoder``: the §2.1 decoder trained on the image embeddings of a frozen CLIP.

Each step encodes the batch with the CLIP (``model.clip``, a model folder) under ``no_grad``: z_i from the
image, token states and mask from the caption. The decoder learns eps (and its variance, improved DDPM's
hybrid loss) with z_i dropped 10% and the caption 50% of the time (App. C), so one network serves every
guidance branch. The CLIP's sizes must match the decoder's ``clip_dim`` / ``text_dim``: that is checked before
training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from unclip.diffusion import DiffusionLoss, NoiseSchedule, Parameterization, check_weighting
from unclip.models.decoder import Decoder, DecoderConfig
from unclip.models.presets import decoder_preset
from unclip.train.config import TrainConfig
from unclip.train.diffusion_draws import step_draws
from unclip.train.frozen_clip import FrozenCLIPs
from unclip.train.stage import Batch, Preset, Stage, StepOutput
from unclip.transfers import table_on, to_device

# Sizes of the project's CLIP presets (embedding, text width), which the decoder presets follow.
WHITENING_ROWS = 50_000  # z_i rows the whitening is fitted on (a 512-dim covariance needs far fewer)
_CLIP_SIZES = {"tiny": (32, 64), "mini": (128, 128), "small": (256, 256), "vit-b-32": (512, 512)}


@dataclass
class DecoderStageConfig:
    clip: str = ""  # folder of the frozen CLIP whose z_i the decoder inverts (required)
    decoder: DecoderConfig = field(default_factory=lambda: decoder_preset("small", clip_dim=256, text_dim=256))
    sample_steps: int = 50  # DDIM steps for the log's sample grid
    sample_guidance: tuple[float, float] = (3.0, 1.0)  # (image embedding, caption) scales for the grid
    # The regression term's weighting over timesteps: "uniform" (L_simple, the paper's) or "min_snr" (Hang et al.
    # 2023, min(SNR, γ) on the x0 error), which moves the gradient toward the noisy steps that lay out a scene.
    loss_weighting: str = "uniform"
    min_snr_gamma: float = 5.0
    # An `unclip embed` folder of this CLIP's embeddings of the training data: decoder.z_whitening is fitted on it.
    # (Not `embeddings`: on a prior stage that name makes the CLI train on the embeddings alone, without images.)
    whitening_embeddings: str = ""
    # Beyond the paper: weight of the embedding-consistency term ᾱ_t·d(CLIP(x̂0), z_i) (unclip.train.embedding_loss;
    # 0 = off, the paper's L_simple alone), and its distance: "cosine" or "whitened" (fitted on
    # whitening_embeddings with decoder.z_whitening_floor, where a colour swap costs nearly what a new scene does).
    embedding_loss_weight: float = 0.0
    embedding_loss_metric: str = "cosine"
    embedding_loss_signal_power: float = 1.0  # the term's weight over steps: ᾱ_t to this power (0: every step alike)

    def __post_init__(self) -> None:
        from unclip.train.embedding_loss import METRICS

        check_weighting(self.loss_weighting, self.min_snr_gamma)
        if not self.embedding_loss_weight >= 0:
            raise ValueError(f"embedding_loss_weight must be >= 0, got {self.embedding_loss_weight}")
        if not self.embedding_loss_signal_power >= 0:
            raise ValueError(f"embedding_loss_signal_power must be >= 0, got {self.embedding_loss_signal_power}")
        if self.embedding_loss_metric not in METRICS:
            raise ValueError(
                f"unknown embedding_loss_metric {self.embedding_loss_metric!r}; expected one of {', '.join(METRICS)}"
            )


def _whitening_rows(config: DecoderStageConfig) -> Tensor:
    """The z_i that ``decoder.z_whitening`` is fitted on: the first ``WHITENING_ROWS`` of the stage's
    ``whitening_embeddings`` folder, checked to come from the decoder's CLIP and to have its size."""
    from unclip.data.embedding_shards import EmbeddingShards

    if not config.whitening_embeddings:
        raise ValueError(
            "decoder.z_whitening and the whitened embedding loss are fitted on the training data's embeddings: "
            "run `unclip embed --model CLIP_DIR "
            "--data DATA --out EMB_DIR` with the decoder's CLIP and pass --set model.whitening_embeddings=EMB_DIR"
        )
    folder = config.whitening_embeddings
    data = EmbeddingShards(folder)
    if data.dims["embed_dim"] != config.decoder.clip_dim:
        raise ValueError(
            f"the embeddings in {folder!r} have size {data.dims['embed_dim']}, but the decoder's clip_dim is "
            f"{config.decoder.clip_dim}"
        )
    if data.clip and config.clip and Path(data.clip).resolve() != Path(config.clip).resolve():
        raise ValueError(
            f"the embeddings in {folder!r} were made by the CLIP at {data.clip!r}, but the decoder learns the CLIP "
            f"at {config.clip!r}; embed the data with that CLIP"
        )
    return data.head(WHITENING_ROWS)[0]


def _needs_whitening_rows(config: DecoderStageConfig) -> bool:
    whitened_loss = config.embedding_loss_weight > 0 and config.embedding_loss_metric == "whitened"
    return config.decoder.z_whitening or whitened_loss


def check_clip_matches(clip: Any, config: DecoderConfig, where: str) -> None:
    """A decoder and a CLIP fit together only if z_i and the token states have the decoder's sizes."""
    text_width = int(clip.encode_text(["a"]).token_states.shape[-1]) if config.text_dim else None
    if clip.embed_dim != config.clip_dim or (config.text_dim and text_width != config.text_dim):
        raise ValueError(
            f"the CLIP at {where} has embedding size {clip.embed_dim} and text width {text_width}, but the decoder "
            f"expects clip_dim {config.clip_dim} and text_dim {config.text_dim}; pick a decoder preset for this "
            "CLIP or set model.decoder.clip_dim / model.decoder.text_dim"
        )


def decoder_draws(seeds: Tensor, shape: tuple[int, ...], config: DecoderStageConfig) -> dict[str, Tensor]:
    """t, noise and the two condition-dropout flags of a decoder step (salts 0, 1, 2 of each sample's seed)."""
    dc = config.decoder
    flags = {"drop_z_i": (1, dc.p_drop_z_i), "drop_text": (2, dc.p_drop_text)}
    return step_draws(seeds, NoiseSchedule.named(dc.schedule).num_steps, shape, flags)


def _micro_batch_draws(mb: Any, config: DecoderStageConfig) -> dict[str, Tensor]:
    return decoder_draws(mb.seed, tuple(mb.image.shape), config)


class DecoderStage(Stage[DecoderStageConfig]):
    name = "decoder"
    config_type = DecoderStageConfig

    def __init__(self) -> None:
        self._clips = FrozenCLIPs("decoder training")
        self._distance_whitenings: dict[tuple[str, float], Tensor] = {}  # the whitened embedding loss's M per folder

    def presets(self) -> dict[str, Preset[DecoderStageConfig]]:
        def cfg(shape: str, clip: str, resolution: int) -> DecoderStageConfig:
            clip_dim, text_dim = _CLIP_SIZES[clip]
            return DecoderStageConfig(
                decoder=decoder_preset(shape, clip_dim=clip_dim, text_dim=text_dim, resolution=resolution)
            )

        return {
            "small": Preset(
                cfg("small", "small", 64),
                TrainConfig(steps=30_000, batch_size=64, lr=1e-4, warmup_steps=500, ema_decay=0.9999, grad_clip=1.0,
                            checkpoint_every=2000, sample_every=2000),
                "Shapes world at 64 px with the small CLIP: 25M parameters, hours on one GPU",
            ),
            "mini": Preset(
                cfg("mini", "mini", 32),
                TrainConfig(steps=3000, batch_size=32, lr=4e-4, warmup_steps=100, ema_decay=0.999, grad_clip=1.0,
                            checkpoint_every=500, sample_every=0),
                "32 px with the mini CLIP, 1.3M parameters: the CPU-trained bundled model (about an hour, 2 cores)",
            ),
            "compact": Preset(
                cfg("compact", "small", 32),
                TrainConfig(steps=100_000, batch_size=128, lr=3e-4, warmup_steps=500, lr_schedule="constant",
                            ema_decay=0.9995, grad_clip=1.0, mixed_precision="bf16", num_workers=8,
                            checkpoint_every=2000, sample_every=0),
                "32 px with the small CLIP, 7M parameters: the bundled model's decoder (a time budget on one GPU)",
            ),
            "tiny": Preset(
                cfg("tiny", "tiny", 32),
                TrainConfig(steps=200, batch_size=8, lr=1e-3, warmup_steps=10, ema_decay=0.99, checkpoint_every=100),
                "32 px with the tiny CLIP: seconds on a CPU (tests)",
            ),
            "base": Preset(
                cfg("base", "vit-b-32", 64),
                TrainConfig(steps=500_000, batch_size=256, lr=1.2e-4, warmup_steps=2000, ema_decay=0.9999,
                            grad_clip=1.0, mixed_precision="bf16", checkpoint_every=5000, sample_every=5000),
                "ADM-sized 64 px decoder (300M) for a ViT-B/32 CLIP on real data: GPUs",
            ),
        }  # fmt: skip

    def clip_model(self, config: DecoderStageConfig, device: torch.device | str = "cpu") -> nn.Module:
        return self._clips.get(config.clip, device, lambda clip: check_clip_matches(clip, config.decoder, config.clip))

    def prepare(self, config: DecoderStageConfig) -> None:
        self.clip_model(config)  # fails here, before any work, if the CLIP is missing or does not fit
        if _needs_whitening_rows(config):
            _whitening_rows(config)  # a missing or foreign embedding folder fails here too

    def build(self, config: DecoderStageConfig) -> nn.Module:
        net = Decoder(config.decoder)
        if (
            config.decoder.z_whitening and config.whitening_embeddings
        ):  # without them: unfitted (the preset check); prepare
            net.fit_z_whitening(_whitening_rows(config))  # refuses such a run before any work
        return net

    def after_init_from(self, config: DecoderStageConfig, model: nn.Module, loaded: dict[str, Tensor]) -> None:
        """A whitened decoder started from a folder keeps computing what the folder's decoder did: its z_i
        projections are rewritten from the folder's whitening (raw z_i if it had none) to this run's."""
        if not config.decoder.z_whitening:
            return
        dim = config.decoder.clip_dim
        old_mean = loaded.get("z_mean", torch.zeros(dim)).float()
        old_matrix = loaded.get("z_whiten", torch.eye(dim)).float()
        model.rebase_z_projections(old_mean, old_matrix)  # type: ignore[operator]

    def export(self, model: nn.Module, config: DecoderStageConfig, folder: str | Path) -> Path:
        from unclip.models.checkpoint import save_pretrained

        return save_pretrained(model, folder)  # type: ignore[arg-type]

    def resolution(self, config: DecoderStageConfig) -> int:
        return config.decoder.resolution

    def batch_extras(self, config: DecoderStageConfig):  # -> Callable[[MicroBatch], dict]
        return partial(_micro_batch_draws, config=config)

    def loss(self, model: nn.Module, batch: Batch, config: DecoderStageConfig) -> StepOutput:
        dc, device = config.decoder, batch.image.device
        # The engine's batches carry their draws from the loader's workers (batch_extras); one made by hand draws here.
        draws = batch.extra or decoder_draws(batch.seed, tuple(batch.image.shape), config)
        clip = self.clip_model(config, device)
        with torch.no_grad():
            z_i = clip.encode_image(batch.image)
            text = clip.encode_text(list(batch.caption))
        cond = {
            "z_i": z_i,
            "text": text.token_states,
            "text_mask": text.mask,
            "drop_z_i": to_device(draws["drop_z_i"], device),
            "drop_text": to_device(draws["drop_text"], device),
        }
        loss_fn = DiffusionLoss(
            NoiseSchedule.named(dc.schedule), Parameterization("eps", dc.learned_variance),
            weighting=config.loss_weighting, min_snr_gamma=config.min_snr_gamma,
        )  # fmt: skip
        t, noise = to_device(draws["t"], device), to_device(draws["noise"], device)
        out = loss_fn(model, batch.image, cond, t=t, noise=noise)
        metrics: dict[str, float | Tensor] = {"mse": out.mse.detach().mean()}
        if out.vlb is not None:
            metrics["vlb"] = out.vlb.detach().mean()
        loss = out.loss
        if config.embedding_loss_weight > 0:
            term = self._embedding_term(config, clip, out.x0_hat, z_i, table_on(loss_fn.schedule.alpha_bar, device)[t],
                                        ~cond["drop_z_i"])  # fmt: skip
            metrics["embedding"] = term.detach().mean()
            loss = loss + config.embedding_loss_weight * term
        return StepOutput(loss.mean(), metrics)

    def _embedding_term(
        self, config: DecoderStageConfig, clip: nn.Module, x0_hat: Tensor, z_i: Tensor, alpha_bar: Tensor, keep: Tensor
    ) -> Tensor:
        from unclip.train.embedding_loss import embedding_consistency

        whiten = None
        if config.embedding_loss_metric == "whitened":
            key = (config.whitening_embeddings, config.decoder.z_whitening_floor)
            if key not in self._distance_whitenings:  # fitted once, not on every step
                from unclip.models.whitening import pca_whitening

                self._distance_whitenings[key] = pca_whitening(_whitening_rows(config), key[1])[1]
            whiten = self._distance_whitenings[key].to(z_i.device)
        return embedding_consistency(
            clip, x0_hat, z_i, alpha_bar, keep, config.embedding_loss_metric, whiten, config.embedding_loss_signal_power
        )

    def sample(self, model: nn.Module, config: DecoderStageConfig, n: int, generator: torch.Generator) -> Tensor | None:
        """Reconstructions: held-out Shapes-world images decoded from their own z_i (top row: originals)."""
        from unclip.data.shapes.batch import render_batch
        from unclip.diffusion import sample_ddim
        from unclip.models.decoder import guided_denoiser

        dc = config.decoder
        device = next(model.parameters()).device
        samples, real = render_batch(max(1, n // 2), dc.resolution, split="val")
        real = real.to(device)
        clip = self.clip_model(config, device)
        with torch.no_grad():
            enc = clip.encode_text([s.caption for s in samples])
            z_i = clip.encode_image(real)
            den, schedule = guided_denoiser(model, z_i, enc.token_states, enc.mask, scales=config.sample_guidance)
            x_T = torch.randn(real.shape, generator=generator).to(device)
            fake = sample_ddim(den, x_T, schedule.grid(config.sample_steps))
        return torch.cat([real, fake.clamp(-1, 1)])[:n]
