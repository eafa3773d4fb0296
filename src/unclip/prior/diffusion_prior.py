"""The diffusion prior of §2.2: a decoder-only transformer that denoises a CLIP image embedding.

The paper's network reads, in order, the caption's token states, the text embedding z_t, an embedding of the
diffusion timestep, the noised image embedding and a final learned "output" token, under a causal mask, and the
output token's state predicts the *un-noised* z_i (x0-prediction with an MSE loss, rather than ε: the paper
found predicting z_i directly works better). The caption (tokens and z_t together) is replaced by learned null
values 10% of the time so that classifier-free guidance can contrast the two branches at sampling.

The network only maps ``(x_t, t, caption)`` to an x0 estimate; the schedule, the parameterization, guidance,
samplers and best-of-N reranking live in ``unclip.diffusion`` and ``unclip.prior.sampling`` (STYLE.md 1-2, 5).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor, nn

from unclip.diffusion import DiffusionLoss, LossOutput, NoiseSchedule, Parameterization, randn
from unclip.diffusion.schedules import SCHEDULES
from unclip.prior.normalize import NORMALIZATIONS, EmbeddingNorm
from unclip.prior.transformer import CausalTransformer, check_caption, timestep_embedding
from unclip.transfers import to_device

RANKINGS = ("dot", "cosine")
STEP_POSITIONS = 3  # timestep, x_t, output token: the positions that change with the sampling step


@dataclass
class DiffusionPriorConfig:
    # Dimensions of the CLIP the prior is trained for (z_t, z_i: embed_dim; token states: text_len x text_width).
    embed_dim: int = 256
    text_width: int = 256
    text_len: int = 64
    # The transformer.
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    # Diffusion (Appendix C): cosine schedule with 1000 steps, 64 sampling steps, caption dropped 10%.
    schedule: str = "cosine"
    train_steps: int = 1000
    sample_steps: int = 64
    cond_drop: float = 0.1
    # Embedding scaling (see normalize.py): "standardize" (per dimension, Karlo) or "scalar" (x scale, the paper).
    normalization: str = "standardize"
    scale: float = 17.2
    best_of: int = 2  # candidates drawn per caption at sampling, the one with the largest z_i . z_t kept (§2.2)
    # How best-of-N ranks candidates against z_t (§2.2: "a higher dot product"): "dot" for this package's unit CLIP
    # embeddings (the prior's draws are near unit length), "cosine" where embeddings are not normalized (Karlo), so
    # that a candidate's norm does not outrank its direction.
    rank_by: str = "dot"
    # Clip the guided x0 estimate to [-c, c] (normalized units) at every sampling step; None: no clipping. Karlo's
    # prior samples with c = 5 (diffusers' UnCLIPScheduler clip_sample_range).
    sample_clamp: float | None = None

    def __post_init__(self) -> None:
        for name in ("embed_dim", "text_width", "text_len", "width", "depth", "heads", "train_steps", "best_of"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"diffusion prior {name} must be a positive integer, got {v!r}")
        if self.width % self.heads:
            raise ValueError(f"diffusion prior width {self.width} must be divisible by heads {self.heads}")
        if not 1 <= self.sample_steps <= self.train_steps:
            raise ValueError(f"sample_steps must lie in [1, train_steps={self.train_steps}], got {self.sample_steps}")
        if not 0.0 <= self.cond_drop < 1.0:
            raise ValueError(f"cond_drop must lie in [0, 1), got {self.cond_drop!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; expected one of {', '.join(SCHEDULES)}")
        if self.rank_by not in RANKINGS:
            raise ValueError(f"rank_by must be one of {', '.join(RANKINGS)}, got {self.rank_by!r}")
        clamp = self.sample_clamp
        if clamp is not None and (isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0):
            raise ValueError(f"sample_clamp must be a positive number or None, got {self.sample_clamp!r}")
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"unknown normalization {self.normalization!r}; expected one of {', '.join(NORMALIZATIONS)}"
            )


# Named presets (plain dict, STYLE.md 7). Dimensions match the CLIP presets of the same name
# (unclip.clip.model.PRESETS); `base` fits a ViT-B/32-shaped CLIP. The paper's prior is far larger (1B params).
DIFFUSION_PRIOR_PRESETS: dict[str, DiffusionPriorConfig] = {
    "tiny": DiffusionPriorConfig(embed_dim=32, text_width=64, text_len=48, width=64, depth=2, heads=4),
    "mini": DiffusionPriorConfig(embed_dim=128, text_width=128, text_len=40, width=128, depth=4, heads=4),
    "small": DiffusionPriorConfig(embed_dim=256, text_width=256, text_len=64, width=256, depth=6, heads=4),
    "base": DiffusionPriorConfig(embed_dim=512, text_width=512, text_len=77, width=768, depth=12, heads=12),
}


def diffusion_prior_config(preset: str, **changes: object) -> DiffusionPriorConfig:
    """A preset with fields replaced (e.g. the dims of the CLIP at hand)."""
    if preset not in DIFFUSION_PRIOR_PRESETS:
        raise ValueError(
            f"unknown diffusion prior preset {preset!r}; expected one of {', '.join(DIFFUSION_PRIOR_PRESETS)}"
        )
    return replace(DIFFUSION_PRIOR_PRESETS[preset], **changes)  # type: ignore[arg-type]


class DiffusionPrior(nn.Module):
    """``forward(x_t, t, *, z_t, tokens, mask, keep) -> x0`` in the normalized embedding space.

    ``x_t`` (B, D) is the noised, normalized z_i; ``t`` (B,) training timesteps; ``z_t`` (B, D) the caption's
    CLIP text embedding; ``tokens`` (B, L, W) its token states with ``mask`` (B, L) True at real tokens;
    ``keep`` (B,) bool is False where the caption is dropped (the unconditional branch of guidance, and what an
    empty caption means). ``self.norm`` holds the embedding statistics that are saved with the weights.
    """

    def __init__(self, config: DiffusionPriorConfig) -> None:
        super().__init__()
        c = self.config = config
        w = c.width
        self.norm = EmbeddingNorm(c.embed_dim, c.normalization, c.scale)
        self.token_proj = nn.Linear(c.text_width, w)
        self.z_t_proj = nn.Linear(c.embed_dim, w)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.x_proj = nn.Linear(c.embed_dim, w)
        self.output_token = nn.Parameter(torch.randn(w) * 0.02)
        # Sequence: text_len caption positions, then z_t, timestep, x_t, output token (STEP_POSITIONS: the last 3).
        self.pos = nn.Parameter(torch.randn(c.text_len + 4, w) * 0.02)
        # The unconditional branch: learned stand-ins for a dropped caption (DALL-E 2 / Karlo do the same).
        self.null_tokens = nn.Parameter(torch.randn(c.text_len, c.text_width) * 0.02)
        self.null_z_t = nn.Parameter(torch.zeros(c.embed_dim))
        self.transformer = CausalTransformer(w, c.depth, c.heads, c.mlp_ratio, c.dropout)
        self.out = nn.Linear(w, c.embed_dim)

    def forward(
        self, x: Tensor, t: Tensor, *, z_t: Tensor, tokens: Tensor, mask: Tensor, keep: Tensor | None = None
    ) -> Tensor:
        head, valid = self.caption_part(z_t, tokens, mask, keep)
        b = head.shape[0]
        h = torch.cat([head, self.step_part(x, t, b)], dim=1)
        return self.out(self.transformer(h, torch.cat([valid, valid.new_ones(b, STEP_POSITIONS)], dim=1))[:, -1])

    def caption_part(
        self, z_t: Tensor, tokens: Tensor, mask: Tensor, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The sequence's first ``text_len + 1`` positions (caption tokens, then z_t) with their position
        embeddings, and their real-token mask: (B, text_len + 1, W), (B, text_len + 1)."""
        c = self.config
        check_caption(z_t, tokens, mask, embed_dim=c.embed_dim, text_width=c.text_width, text_len=c.text_len)
        b, length = tokens.shape[:2]
        if keep is not None:
            if keep.shape != (b,) or keep.dtype != torch.bool:
                raise ValueError(f"keep must be a bool tensor of shape ({b},), got {keep.dtype} {tuple(keep.shape)}")
            k = keep[:, None]
            tokens = torch.where(k[..., None], tokens, self.null_tokens[:length].to(tokens.dtype))
            z_t = torch.where(k, z_t, self.null_z_t.to(z_t.dtype))
            mask = mask | ~k  # the null caption is all real positions
        caption = self.token_proj(tokens)
        if length < c.text_len:  # pad to the fixed positions so z_t and later keep their position embeddings
            caption = torch.cat([caption, caption.new_zeros(b, c.text_len - length, caption.shape[2])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(b, c.text_len - length)], dim=1)
        head = torch.cat([caption, self.z_t_proj(z_t)[:, None]], dim=1) + self.pos[: c.text_len + 1]
        return head, torch.cat([mask, mask.new_ones(b, 1)], dim=1)

    def step_part(self, x: Tensor, t: Tensor, b: int) -> Tensor:
        """The last ``STEP_POSITIONS`` positions (timestep, x_t, output token) with their position embeddings:
        the only part of the sequence that changes from one sampling step to the next. ``b`` is the caption batch."""
        c = self.config
        if x.shape != (b, c.embed_dim):
            raise ValueError(f"x_t must have shape ({b}, {c.embed_dim}) to match z_t, got {tuple(x.shape)}")
        if t.shape != (b,):
            raise ValueError(f"t must have shape ({b},), got {tuple(t.shape)}")
        time = self.time_mlp(timestep_embedding(t, c.width))
        tail = torch.stack([time, self.x_proj(x), self.output_token.expand(b, -1)], dim=1)
        return tail + self.pos[c.text_len + 1 :]

    # The diffusion this network was trained for, rebuilt from its config (nothing else to store).
    def schedule(self) -> NoiseSchedule:
        return NoiseSchedule.named(self.config.schedule, self.config.train_steps)

    @staticmethod
    def parameterization() -> Parameterization:
        return Parameterization("x0")  # §2.2: the prior predicts the un-noised z_i directly


class CaptionCachedPrior:
    """A :class:`DiffusionPrior` for sampling, with the caption's part of the sequence computed once.

    Under the causal mask the caption tokens and z_t (positions ``0 .. text_len``) never attend to the timestep or
    x_t after them, so their keys and values are the same at every sampling step. They are computed on the first
    call for a conditioning and kept; each step runs only the last ``STEP_POSITIONS`` positions through the
    transformer, attending over the cached keys. The result equals the model's forward up to float rounding. A
    sampler passes the same conditioning tensors at every step (``guided`` concatenates its branches once), so a
    conditioning is recognised by identity; other tensors rebuild the cache. With gradients enabled (training),
    or with the forward compiled in place, it runs the model's own forward.
    """

    def __init__(self, model: DiffusionPrior) -> None:
        self.model = model
        self._key: tuple | None = None  # the conditioning tensors the cache was built for
        self._cache = None
        self._length = 0  # positions the caption part fills

    def __call__(
        self, x: Tensor, t: Tensor, *, z_t: Tensor, tokens: Tensor, mask: Tensor, keep: Tensor | None = None
    ) -> Tensor:
        m = self.model
        # Training, or a forward replaced in place (torch.compile through UnCLIPPipeline.compile): the model's own call.
        if torch.is_grad_enabled() or m.training or "forward" in vars(m):
            return m(x, t, z_t=z_t, tokens=tokens, mask=mask, keep=keep)
        key = (z_t, tokens, mask, keep)
        if self._key is None or any(a is not b for a, b in zip(key, self._key, strict=True)):
            head, valid = m.caption_part(z_t, tokens, mask, keep)
            b = head.shape[0]
            self._cache = m.transformer.new_cache(b, head.shape[1] + STEP_POSITIONS, dtype=head.dtype,
                                                  device=head.device)  # fmt: skip
            m.transformer(head, valid, self._cache)
            self._key, self._length = key, head.shape[1]
        b = self._cache.valid.shape[0]
        steps = m.step_part(x, t, b)
        self._cache.length = self._length  # the step positions of the previous call are overwritten
        return m.out(m.transformer(steps, steps.new_ones(b, STEP_POSITIONS, dtype=torch.bool), self._cache)[:, -1])


def draw_keep(batch: int, cond_drop: float, generators: list[torch.Generator] | None = None) -> Tensor:
    """Which captions to keep (True) when 10% are dropped for classifier-free guidance (Appendix C)."""
    if generators is None:
        return torch.rand(batch) >= cond_drop
    if len(generators) != batch:
        raise ValueError(f"got {len(generators)} generators for a batch of {batch}")
    return torch.stack([torch.rand((), generator=g) for g in generators]) >= cond_drop


def prior_draws(config: DiffusionPriorConfig, generators: list[torch.Generator]) -> dict[str, Tensor]:
    """A training step's per-sample draws on the CPU, in the order each sample's generator gives them: timestep
    ``t``, ``noise`` (float32, of the embedding's size) and the caption-``keep`` flag. The prior stage makes them in
    the data loader's workers (the host would otherwise spend the start of each step on them)."""
    b = len(generators)
    t = torch.stack([torch.randint(0, config.train_steps, (), generator=g) for g in generators])
    noise = randn((b, config.embed_dim), generators, dtype=torch.float32)
    return {"t": t, "noise": noise, "keep": draw_keep(b, config.cond_drop, generators)}


def diffusion_prior_loss(
    model: nn.Module,
    z_i: Tensor,
    z_t: Tensor,
    tokens: Tensor,
    mask: Tensor,
    *,
    generators: list[torch.Generator] | None = None,
    draws: dict[str, Tensor] | None = None,
    weighting: str = "uniform",
    min_snr_gamma: float = 5.0,
) -> LossOutput:
    """MSE between the predicted and the true normalized z_i at a uniform timestep (§2.2), caption dropout applied
    (``weighting``: see :class:`unclip.diffusion.DiffusionLoss`).

    ``model`` may be a DDP/compile wrapper: the config and the norm are read from the unwrapped module. With one
    generator per sample, sample i's timestep, noise and dropout depend on its generator only; ``draws``
    (:func:`prior_draws` of those generators, made elsewhere) gives the same loss without drawing here.
    """
    net: DiffusionPrior = getattr(model, "module", model)
    net = getattr(net, "_orig_mod", net)
    c = net.config
    check_caption(z_t, tokens, mask, embed_dim=c.embed_dim, text_width=c.text_width, text_len=c.text_len)
    if z_i.shape != z_t.shape:
        raise ValueError(f"z_i must have the shape of z_t {tuple(z_t.shape)}, got {tuple(z_i.shape)}")
    net.norm.check_fitted()
    x0 = net.norm.normalize(z_i)
    b = x0.shape[0]
    schedule = net.schedule()
    if draws is None and generators is not None:
        draws = prior_draws(c, generators)
    if draws is None:
        t, noise, keep = torch.randint(0, schedule.num_steps, (b,)), torch.randn_like(x0), draw_keep(b, c.cond_drop)
    else:
        t, noise, keep = draws["t"], draws["noise"].to(x0.dtype), draws["keep"]
    keep = to_device(keep, x0.device)
    loss = DiffusionLoss(
        schedule, net.parameterization(), discretized_t0=False, weighting=weighting, min_snr_gamma=min_snr_gamma
    )
    cond = {"z_t": z_t, "tokens": tokens, "mask": mask, "keep": keep}
    return loss(model, x0, cond, t=to_device(t, x0.device), noise=to_device(noise, x0.device))
