"""A tiny, untrained unCLIP stack for pipeline tests: every stage real, every size minimal.

The weights are random (zero-initialised output layers perturbed so the networks are not the identity), which
is enough to test plumbing, seeds, persistence and the exactness of inversion; quality needs training.
"""

from __future__ import annotations

import dataclasses

import torch

from unclip.clip import CLIP, PRESETS, make_tokenizer
from unclip.models.decoder import Decoder
from unclip.models.presets import DECODER_SHAPES, UPSAMPLER_SHAPES, decoder_preset
from unclip.models.upsampler import Upsampler, upsampler_config
from unclip.pipeline import SamplingSettings, UnCLIPPipeline
from unclip.prior import DiffusionPrior, diffusion_prior_config

FAST = SamplingSettings(prior_steps=3, decoder_steps=4, upsampler_steps=2, inversion_steps=8, inversion_refine=2)


def _perturb(module: torch.nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def tiny_pipeline(upsampler: bool = True, settings: SamplingSettings = FAST, roughness: float = 0.05) -> UnCLIPPipeline:
    torch.manual_seed(0)
    cfg = PRESETS["tiny"]
    clip = CLIP(cfg, make_tokenizer("shapes-bpe", cfg.text.vocab_size, cfg.text.context_length)).eval()
    prior = DiffusionPrior(diffusion_prior_config("tiny"))
    prior.norm.fit(torch.nn.functional.normalize(torch.randn(256, cfg.embed_dim), dim=1))
    _perturb(prior, 0.02)
    decoder = Decoder(decoder_preset("tiny", clip_dim=cfg.embed_dim, text_dim=cfg.text.width, resolution=16))
    _perturb(decoder, roughness)
    ups = []
    if upsampler:
        ups.append(Upsampler(upsampler_config(factor=2, resolution=32, **UPSAMPLER_SHAPES["tiny"])))
        _perturb(ups[0])
    assert DECODER_SHAPES["tiny"]  # the presets the stack is built from
    return UnCLIPPipeline(clip, prior.eval(), decoder.eval(), [u.eval() for u in ups], dataclasses.replace(settings))


class AnalyticDecoder(Decoder):
    """A decoder whose eps is exact for Gaussian images: x0 ~ N(mu(z_i), sigma² I) per pixel.

    mu is a fixed smooth image that depends on z_i (a dropped z_i gives mu = 0), so guidance, conditioning and
    inversion all act on a known, smooth denoiser; sigma is small enough that x0 estimates stay inside [-1, 1]
    and clamping never bites.
    """

    sigma = 0.25

    def __init__(self, config) -> None:
        super().__init__(config)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("basis", 0.02 * torch.randn(config.clip_dim, 3 * config.resolution**2, generator=g))
        from unclip.diffusion import NoiseSchedule

        self.register_buffer("alpha_bar", NoiseSchedule.named(config.schedule).alpha_bar.float())

    def forward(self, x, t, z_i, text=None, text_mask=None, drop_z_i=None, drop_text=None):
        mu = torch.tanh(z_i @ self.basis).view_as(x) * 0.5
        if drop_z_i is not None:
            mu = torch.where(drop_z_i[:, None, None, None], torch.zeros_like(mu), mu)
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        a, s = ab.sqrt(), (1 - ab).sqrt()
        x0 = mu + a * self.sigma**2 / (ab * self.sigma**2 + s**2) * (x - a * mu)
        eps = (x - a * x0) / s
        return torch.cat([eps, torch.zeros_like(eps)], 1) if self.config.learned_variance else eps


def analytic_pipeline(settings: SamplingSettings = FAST) -> UnCLIPPipeline:
    pipe = tiny_pipeline(upsampler=False, settings=settings)
    pipe.decoder = AnalyticDecoder(pipe.decoder.config).eval()
    return pipe
