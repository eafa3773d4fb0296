"""Sampling settings of each stage of the text-to-image pipeline, with the paper's and Karlo's defaults.

App. C of the paper: prior 64 steps with best-of-2, decoder 250 steps, upsamplers 27 and 15 DDIM steps. Karlo's
faster defaults (prior 25 steps with guidance 4, decoder 25-50 steps with guidance 8, upsampler 7 steps) are
closer to what a CPU demo can afford; these defaults sit between the two and every one is an option.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from unclip.diffusion import SAMPLERS
from unclip.diffusion.gradient_guidance import GRADIENTS
from unclip.models.upsampler import UPSAMPLER_CONDITIONS
from unclip.prior.sampling import COMBINES

# Embedding guidance's gradients: the two of x0_gradient_guidance, and "noised" (a noise-aware CLIP tower reads x_t).
GUIDANCE_GRADIENTS = (*GRADIENTS, "noised")

Z_SOURCES = ("prior", "text")
IMAGE_SAMPLERS = tuple(name for name in SAMPLERS if name != "mmse")  # samplers that draw (see __post_init__)


@dataclass
class SamplingSettings:
    prior_steps: int = 25
    prior_sampler: str = "ddim"
    prior_guidance: float = 4.0
    prior_best_of: int = 2  # §2.2: draw two z_i, keep the one closer to z_t
    # "best" keeps the candidate closest to z_t (§2.2); "mean" averages the candidates' directions, a point
    # estimate that scores higher cosine with the true z_i at the cost of diversity (unclip.prior.mean_of_n).
    prior_combine: str = "best"
    decoder_steps: int = 50
    decoder_sampler: str = "ddim"
    decoder_guidance_image: float = 3.0  # separate scales for z_i and the caption (DESIGN.md §1)
    decoder_guidance_text: float = 1.0
    decoder_eta: float = 0.0
    # Embedding guidance (beyond the paper): each decoder step moves its x̂0 along the gradient of cos(CLIP(x̂0), z_i),
    # toward images CLIP embeds at z_i (unclip.diffusion.gradient_guidance). 0: off, the paper's decoder. The gradient
    # goes through the decoder too ("denoiser": universal guidance / DPS, weighted toward the noisy steps, 1.5-2x
    # the decoder's time; on the bundled decoder 300 works best, docs/results.md) or through CLIP alone ("x0": MPGD,
    # nearly free, scales of order 1; it retouches what CLIP reads more than the scene) or through a noise-aware CLIP
    # tower that reads x_t itself ("noised": GLIDE's noised CLIP, trained by `unclip train noised_clip`; the model
    # folder must hold one, unclip.clip.noised; weighted as "denoiser", without its backward pass through the decoder).
    decoder_embedding_guidance: float = 0.0
    decoder_embedding_guidance_gradient: str = "denoiser"
    # The steps it applies at, as fractions t / T of the schedule (start >= t / T >= stop; sampling runs from 1 down
    # to 0). The defaults guide every step; each guided step costs a backward pass through the decoder and CLIP.
    decoder_embedding_guidance_start: float = 1.0
    decoder_embedding_guidance_stop: float = 0.0
    upsampler_steps: int = 7
    upsampler_sampler: str = "ddim"
    # 1: every upsampler starts from pure noise, as the paper. Below 1: it starts from its own bicubic-upsampled
    # input noised to t = strength × T and runs only the rest of the schedule (SDEdit, Meng et al. 2022; diffusers'
    # img2img ``strength``). The high-noise steps are the ones a briefly trained upsampler has learned least.
    upsampler_strength: float = 1.0
    # "trained": the upsampler sees its input through the deterministic corruption it was trained on (the blur of
    # App. C); "clean": as given (the behaviour before session 15). unclip.models.upsampler.UPSAMPLER_CONDITIONS.
    upsampler_condition: str = "trained"
    inversion_steps: int = 50
    # How far DDIM inversion runs (§3's x_T), as a fraction of the schedule, like ``upsampler_strength``; variations,
    # interpolations and text diffs decode from the same timestep. 1 runs to the last timestep, where the cosine
    # schedule leaves alpha_bar = 2e-9: there an eps-model's x0 estimate (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)
    # multiplies eps's error by 2e4, the clamp saturates it to ±1, and DDIM's first step adds that as noise the
    # inversion cannot undo (the bundled decoder's round trip: 0.079 mean error at 1, 0.017 at 0.95, 0.001 at
    # 0.95 with ``inversion_refine=2``; docs/results.md). At 0.95 (t = 949, alpha_bar = 6e-3) x_T is still noise:
    # its cosine with the image is 0.09.
    inversion_strength: float = 0.95
    # Fixed-point refinement of DDIM inversion (unclip.diffusion.invert_ddim). Off by default, as in the paper: each
    # refinement costs up to four more denoiser calls per step. At 0.95 T one refinement halves the bundled decoder's
    # round-trip error at guidance 3 / 1 (0.031 -> 0.015 at 32 px); from T no refinement helps (above).
    inversion_refine: int = 0
    # Variations: each is the best of this many decodes by CLIP similarity to the source's z_i (1: the paper's plain
    # variation; unclip.pipeline.manipulations.best_variations). Costs that many decodes per variation.
    variation_best_of: int = 1
    # Variations that keep the source's layout: ILVR (Choi et al. 2021; unclip.diffusion.ilvr) holds every
    # variation's low-pass part at scale N (at the decoder's resolution) to the source's while the rest is drawn
    # from z_i. 0: off, the paper's variation; a divisor of the decoder's resolution otherwise (smaller keeps more).
    variation_structure: int = 0
    # Inpainting (unclip.pipeline.inpainting): RePaint's path on every stage's grid. Each block of ``inpaint_jump``
    # steps is climbed back up and denoised again ``inpaint_resample`` - 1 times, so the generated region is redrawn
    # given the known one; 1 is plain replacement, which leaves the two inconsistent (unclip.diffusion.inpainting).
    inpaint_resample: int = 4
    inpaint_jump: int = 5
    # Where the decoder's z_i comes from (§5.1, Table 1): "prior" samples it from the caption (unCLIP), "text" feeds
    # the caption's own CLIP text embedding z_t to the decoder in its place (the paper's no-prior ablation).
    z_source: str = "prior"

    def __post_init__(self) -> None:
        for name in (
            "prior_steps",
            "decoder_steps",
            "upsampler_steps",
            "inversion_steps",
            "prior_best_of",
            "inpaint_resample",
            "inpaint_jump",
            "variation_best_of",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1000:
                raise ValueError(f"{name} must be an integer from 1 to 1000, got {v!r}")
        if self.prior_sampler not in SAMPLERS:
            raise ValueError(f"prior_sampler must be one of {', '.join(SAMPLERS)}, got {self.prior_sampler!r}")
        # "mmse" is the prior's point estimate; for an eps-predicting image model x0 at t = T is eps's error times
        # 2e4, saturated pixels, so the image stages take only the samplers that draw.
        for name in ("decoder_sampler", "upsampler_sampler"):
            if getattr(self, name) not in IMAGE_SAMPLERS:
                raise ValueError(f"{name} must be one of {', '.join(IMAGE_SAMPLERS)}, got {getattr(self, name)!r}")
        if self.prior_sampler == "mmse" and self.prior_best_of != 1:
            raise ValueError("prior_sampler mmse returns the one point estimate E[z_i | caption]: set prior_best_of=1 "
                             "(and prior_guidance=1 for the unguided mean; docs/prior.md)")  # fmt: skip
        tops = {"prior_guidance": 100.0, "decoder_guidance_image": 100.0, "decoder_guidance_text": 100.0,
                "decoder_eta": 100.0, "decoder_embedding_guidance": 10000.0}  # fmt: skip
        for name, top in tops.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= top:
                raise ValueError(f"{name} must be a number from 0 to {top:g}, got {v!r}")
        for name in ("upsampler_strength", "inversion_strength"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v <= 1.0:
                raise ValueError(f"{name} must be a number in (0, 1], got {v!r}")
        v = self.variation_structure
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1024 or v == 1:
            raise ValueError(f"variation_structure must be 0 (off) or an integer from 2 to 1024 (1 would return the "
                             f"source itself), got {v!r}")  # fmt: skip
        start, stop = self.decoder_embedding_guidance_start, self.decoder_embedding_guidance_stop
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, stop))
        if not numbers or not 0 <= stop < start <= 1:
            raise ValueError("decoder_embedding_guidance_start and _stop are fractions of the schedule with "
                             f"0 <= stop < start <= 1, got start {start!r} and stop {stop!r}")  # fmt: skip
        if self.decoder_embedding_guidance_gradient not in GUIDANCE_GRADIENTS:
            raise ValueError(f"decoder_embedding_guidance_gradient must be one of {', '.join(GUIDANCE_GRADIENTS)}, "
                             f"got {self.decoder_embedding_guidance_gradient!r}")  # fmt: skip
        if self.prior_combine not in COMBINES:
            raise ValueError(f"prior_combine must be one of {', '.join(COMBINES)}, got {self.prior_combine!r}")
        if self.upsampler_condition not in UPSAMPLER_CONDITIONS:
            allowed = ", ".join(UPSAMPLER_CONDITIONS)
            raise ValueError(f"upsampler_condition must be one of {allowed}, got {self.upsampler_condition!r}")
        if self.z_source not in Z_SOURCES:
            raise ValueError(f"z_source must be one of {', '.join(Z_SOURCES)}, got {self.z_source!r}")
        if not isinstance(self.inversion_refine, int) or not 0 <= self.inversion_refine <= 50:
            raise ValueError(f"inversion_refine must be an integer from 0 to 50, got {self.inversion_refine!r}")


# ``decoder_guidance=S`` sets both decoder scales: with s_image = s_text = s the nested guidance reduces to the
# paper's single scale over the whole condition, D(∅) + s (D(z_i, y) − D(∅)) (unclip.diffusion.guidance).
BOTH_DECODER_SCALES = "decoder_guidance"


def parse_setting(key: str, text: str, settings: SamplingSettings, option: str = "--set") -> Any:
    """The value ``text`` of setting ``key`` (a field or ``decoder_guidance``), typed like the field it sets."""
    fields = dataclasses.asdict(settings)
    if key != BOTH_DECODER_SCALES and key not in fields:
        raise ValueError(f"{option} {key}: unknown setting; one of {BOTH_DECODER_SCALES}, {', '.join(fields)}")
    # The field's declared type, not its current value's: a float stored as 3 in pipeline.json still takes 2.5.
    hint = typing.get_type_hints(SamplingSettings)["decoder_guidance_image" if key == BOTH_DECODER_SCALES else key]
    text = text.strip()
    for kind, name in ((int, "an integer"), (float, "a number")):
        if hint is kind:
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{option} {key}: {text!r} is not {name}") from None
    return text


def expand_shorthands(point: dict[str, Any]) -> dict[str, Any]:
    """Setting overrides with ``decoder_guidance`` replaced by the two decoder scales it stands for."""
    out = {k: v for k, v in point.items() if k != BOTH_DECODER_SCALES}
    if BOTH_DECODER_SCALES in point:
        given = [k for k in ("decoder_guidance_image", "decoder_guidance_text") if k in point]
        if given:  # one would silently overwrite the other
            raise ValueError(f"{BOTH_DECODER_SCALES} sets both decoder scales; give it or {' and '.join(given)}, "
                             "not both")  # fmt: skip
        out["decoder_guidance_image"] = out["decoder_guidance_text"] = point[BOTH_DECODER_SCALES]
    return out


def parse_overrides(specs: list[str], settings: SamplingSettings, option: str = "--set") -> dict[str, Any]:
    """``["decoder_steps=25", "z_source=text"]`` → validated overrides for ``dataclasses.replace(settings, …)``."""
    point: dict[str, Any] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ValueError(f"{option} {spec!r}: expected KEY=VALUE")
        point[key] = parse_setting(key, value, settings, option)
    overrides = expand_shorthands(point)
    dataclasses.replace(settings, **overrides)  # the settings' own checks, before any work
    return overrides
