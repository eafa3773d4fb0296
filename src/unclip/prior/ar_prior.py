"""The autoregressive prior of §2.2: z_i as a sequence of PCA bucket codes, predicted by a causal transformer.

The sequence is [caption token states, z_t, a token for the quantized z_i . z_t, code_1 ... code_K]; each code
is predicted from everything before it (teacher forcing in training, one code at a time at sampling). The
z_i . z_t token lets sampling ask for embeddings that agree strongly with the caption: "we condition the AR prior
on the text-image dot product ... sample with the dot product drawn from the top half of the distribution" (§2.2),
the AR counterpart of the diffusion prior's best-of-2. Its bins are quantiles of the training distribution, so
"top half" is simply the upper half of the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unclip.prior.pca import PCAQuantizer, pca_components
from unclip.prior.transformer import CausalTransformer, KVCache, check_caption


@dataclass
class ARPriorConfig:
    embed_dim: int = 256
    text_width: int = 256
    text_len: int = 64
    components: int = 64  # PCA components kept; set from the data by ARPrior.from_data (variance below)
    variance: float = 0.99  # §2.2: keep the components holding > 99% of z_i's variance
    buckets: int = 1024  # §2.2: each component quantized into 1024 buckets
    dot_bins: int = 1024  # equal-probability bins of z_i . z_t
    dot_percentile: float = 0.5  # sampling draws the dot token from bins above this quantile (top half)
    width: int = 256
    depth: int = 6
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("embed_dim", "text_width", "text_len", "components", "width", "depth", "heads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"AR prior {name} must be a positive integer, got {v!r}")
        if self.components > self.embed_dim:
            raise ValueError(f"AR prior components {self.components} exceed embed_dim {self.embed_dim}")
        if self.buckets < 2 or self.dot_bins < 2:
            raise ValueError(f"AR prior needs buckets >= 2 and dot_bins >= 2, got {self.buckets}, {self.dot_bins}")
        if not 0.0 < self.variance <= 1.0:
            raise ValueError(f"variance must lie in (0, 1], got {self.variance!r}")
        if not 0.0 <= self.dot_percentile < 1.0:
            raise ValueError(f"dot_percentile must lie in [0, 1), got {self.dot_percentile!r}")
        if self.width % self.heads:
            raise ValueError(f"AR prior width {self.width} must be divisible by heads {self.heads}")


AR_PRIOR_PRESETS: dict[str, ARPriorConfig] = {
    "tiny": ARPriorConfig(
        embed_dim=32, text_width=64, text_len=48, components=16, buckets=64, dot_bins=16, width=64, depth=2, heads=4
    ),
    # mini: the diffusion prior mini's transformer (width 128, depth 4), for a side-by-side at equal size (§2.2).
    "mini": ARPriorConfig(
        embed_dim=128, text_width=128, text_len=40, components=64, buckets=256, dot_bins=64, width=128, depth=4, heads=4
    ),
    "small": ARPriorConfig(embed_dim=256, text_width=256, text_len=64, components=64, width=256, depth=6, heads=4),
    "base": ARPriorConfig(embed_dim=512, text_width=512, text_len=77, components=320, width=768, depth=12, heads=12),
}


def ar_prior_config(preset: str, **changes: object) -> ARPriorConfig:
    if preset not in AR_PRIOR_PRESETS:
        raise ValueError(f"unknown AR prior preset {preset!r}; expected one of {', '.join(AR_PRIOR_PRESETS)}")
    return replace(AR_PRIOR_PRESETS[preset], **changes)  # type: ignore[arg-type]


class ARPrior(nn.Module):
    """``forward(codes_in, *, z_t, tokens, mask, dot_bin) -> logits`` (B, n + 1, buckets) for codes 1 .. n + 1.

    ``codes_in`` (B, n) holds the first n codes (0 <= n < K): training passes all but the last, sampling the
    codes drawn so far. ``self.quantizer`` (PCA basis, bucket ranges) and ``dot_edges`` are saved with weights.
    """

    def __init__(self, config: ARPriorConfig) -> None:
        super().__init__()
        c = self.config = config
        w = c.width
        self.quantizer = PCAQuantizer(c.embed_dim, c.components, c.buckets)
        self.register_buffer("dot_edges", torch.linspace(-1, 1, c.dot_bins + 1)[1:-1])  # refit by fit_statistics
        self.token_proj = nn.Linear(c.text_width, w)
        self.z_t_proj = nn.Linear(c.embed_dim, w)
        self.dot_embed = nn.Embedding(c.dot_bins, w)
        self.code_embed = nn.Embedding(c.buckets, w)
        self.pos = nn.Parameter(torch.randn(c.text_len + 2 + c.components - 1, w) * 0.02)
        self.transformer = CausalTransformer(w, c.depth, c.heads, c.mlp_ratio, c.dropout)
        self.head = nn.Linear(w, c.buckets)

    @classmethod
    def from_data(cls, config: ARPriorConfig, z_i: Tensor, z_t: Tensor) -> ARPrior:
        """A fresh prior whose component count keeps ``config.variance`` of z_i's variance, statistics fitted."""
        _, basis, _ = pca_components(z_i, config.variance)
        model = cls(replace(config, components=int(basis.shape[0])))
        return model.fit_statistics(z_i, z_t)

    @torch.no_grad()
    def fit_statistics(self, z_i: Tensor, z_t: Tensor) -> ARPrior:
        """Fit the PCA quantizer and the z_i . z_t quantile bins on training pairs."""
        if z_i.shape != z_t.shape:
            raise ValueError(f"z_i {tuple(z_i.shape)} and z_t {tuple(z_t.shape)} must have the same shape")
        self.quantizer.fit(z_i)
        dots = (z_i * z_t).sum(1).double()
        q = torch.arange(1, self.config.dot_bins, dtype=torch.float64) / self.config.dot_bins
        self.dot_edges.copy_(torch.quantile(dots, q).float())
        return self

    def dot_bin(self, z_i: Tensor, z_t: Tensor) -> Tensor:
        return torch.bucketize((z_i * z_t).sum(1).contiguous(), self.dot_edges)

    def _prefix(self, z_t: Tensor, tokens: Tensor, mask: Tensor, dot_bin: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded [caption padded to text_len, z_t, dot token] (B, text_len + 2, W) and its real-token mask."""
        c = self.config
        check_caption(z_t, tokens, mask, embed_dim=c.embed_dim, text_width=c.text_width, text_len=c.text_len)
        b, length = tokens.shape[:2]
        if dot_bin.shape != (b,):
            raise ValueError(f"dot_bin must have shape ({b},), got {tuple(dot_bin.shape)}")
        caption = self.token_proj(tokens)
        if length < c.text_len:
            caption = torch.cat([caption, caption.new_zeros(b, c.text_len - length, caption.shape[2])], dim=1)
            mask = torch.cat([mask, mask.new_zeros(b, c.text_len - length)], dim=1)
        prefix = torch.stack([self.z_t_proj(z_t), self.dot_embed(dot_bin)], dim=1)
        valid = torch.cat([mask, mask.new_ones(b, 2)], dim=1)
        return torch.cat([caption, prefix], dim=1), valid

    def forward(self, codes_in: Tensor, *, z_t: Tensor, tokens: Tensor, mask: Tensor, dot_bin: Tensor) -> Tensor:
        c = self.config
        h, valid = self._prefix(z_t, tokens, mask, dot_bin)
        b = h.shape[0]
        if codes_in.ndim != 2 or codes_in.shape[0] != b or codes_in.shape[1] >= c.components:
            raise ValueError(f"codes_in must have shape ({b}, n) with n < {c.components}, got {tuple(codes_in.shape)}")
        h = torch.cat([h, self.code_embed(codes_in)], dim=1)
        h = h + self.pos[: h.shape[1]]
        valid = torch.cat([valid, valid.new_ones(b, codes_in.shape[1])], dim=1)
        out = self.transformer(h, valid)[:, c.text_len + 1 :]  # from the dot token on: predicts codes 1 .. n+1
        return self.head(out)

    # Incremental decoding (sampling): the prefix is encoded once, then one code per step, reusing the keys and
    # values of every earlier position (KVCache). Gives the logits of ``forward`` up to rounding.
    def start_decoding(self, *, z_t: Tensor, tokens: Tensor, mask: Tensor, dot_bin: Tensor) -> tuple[Tensor, KVCache]:
        """Logits of code 1 (B, buckets) and the cache holding the encoded prefix."""
        h, valid = self._prefix(z_t, tokens, mask, dot_bin)
        h = h + self.pos[: h.shape[1]]
        cache = self.transformer.new_cache(h.shape[0], self.pos.shape[0], dtype=h.dtype, device=h.device)
        return self.head(self.transformer(h, valid, cache)[:, -1]), cache

    def decode_step(self, code: Tensor, cache: KVCache) -> Tensor:
        """Append ``code`` (B,) (the code just drawn) to the cached sequence; logits of the next code (B, buckets)."""
        c = self.config
        n = cache.length - (c.text_len + 2)  # codes already in the cache
        if n < 0 or n + 1 >= c.components:
            raise ValueError(f"the cache holds {n} codes; a step may add code {n + 1} of at most {c.components - 1}")
        if code.shape != (cache.valid.shape[0],):
            raise ValueError(f"code must have shape ({cache.valid.shape[0]},), got {tuple(code.shape)}")
        h = self.code_embed(code)[:, None] + self.pos[cache.length]
        return self.head(self.transformer(h, cache.valid.new_ones(h.shape[0], 1), cache)[:, -1])


def _net(model: nn.Module) -> ARPrior:
    net = getattr(model, "module", model)
    return getattr(net, "_orig_mod", net)


def ar_prior_loss(model: nn.Module, z_i: Tensor, z_t: Tensor, tokens: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy of the bucket sequence (nats per code) and per-sample code accuracy."""
    net = _net(model)
    net.quantizer.check_fitted()
    if z_i.shape != z_t.shape:
        raise ValueError(f"z_i must have the shape of z_t {tuple(z_t.shape)}, got {tuple(z_i.shape)}")
    codes = net.quantizer.encode(z_i)
    logits = model(codes[:, :-1], z_t=z_t, tokens=tokens, mask=mask, dot_bin=net.dot_bin(z_i, z_t))
    ce = F.cross_entropy(logits.transpose(1, 2), codes, reduction="none").mean(1)
    acc = (logits.argmax(-1) == codes).float().mean(1)
    return ce, acc


@dataclass
class ARSample:
    z_i: Tensor  # (B, D) decoded embeddings
    codes: Tensor  # (B, K) bucket codes
    dot_bin: Tensor  # (B,) the z_i . z_t token each sample was conditioned on
    seconds: float


def _per_row(generator: torch.Generator | Sequence[torch.Generator] | None, b: int) -> list[torch.Generator]:
    if generator is None or isinstance(generator, torch.Generator):
        return [torch.Generator().manual_seed(int(torch.randint(0, 2**62, (), generator=generator))) for _ in range(b)]
    gens = list(generator)
    if len(gens) != b:
        raise ValueError(f"got {len(gens)} generators for {b} captions; expected one per caption")
    return gens


def draw_dot_bins(n_bins: int, percentile: float, generators: Sequence[torch.Generator]) -> Tensor:
    """One bin per caption, uniform over the bins above ``percentile`` (the top half at 0.5), §2.2."""
    if not 0.0 <= percentile < 1.0:
        raise ValueError(f"dot percentile must lie in [0, 1), got {percentile!r}")
    first = min(math.floor(percentile * n_bins), n_bins - 1)
    return torch.stack([torch.randint(first, n_bins, (), generator=g) for g in generators])


def _draw(logits: Tensor, temperature: float, top_k: int | None, gens: Sequence[torch.Generator]) -> Tensor:
    """One code per row from ``softmax(logits / temperature)``, restricted to the ``top_k`` largest if given."""
    logits = logits.float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1).cpu()
    return torch.stack([torch.multinomial(probs[i], 1, generator=gens[i])[0] for i in range(len(gens))])


@torch.no_grad()
def sample_ar_prior(
    model: ARPrior,
    z_t: Tensor,
    tokens: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    dot_percentile: float | None = None,
    dot_bin: Tensor | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    use_cache: bool = True,
) -> ARSample:
    """Draw z_i code by code. The dot token comes from ``dot_bin`` if given, otherwise from the bins above
    ``dot_percentile`` (default ``config.dot_percentile``, the top half). Caption i depends on its generator only.

    ``use_cache`` (default) decodes incrementally with a key/value cache; ``False`` re-runs the whole sequence
    for every code (the reference the cache is tested against; same draws, several times slower).
    """
    import time

    start = time.perf_counter()
    c = model.config
    check_caption(z_t, tokens, mask, embed_dim=c.embed_dim, text_width=c.text_width, text_len=c.text_len)
    model.quantizer.check_fitted()
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if top_k is not None and not 1 <= top_k <= c.buckets:
        raise ValueError(f"top_k must lie in [1, {c.buckets}] (the buckets), got {top_k!r}")
    b = z_t.shape[0]
    device = next(model.parameters()).device
    gens = _per_row(generator, b)
    if dot_bin is None:
        p = c.dot_percentile if dot_percentile is None else dot_percentile
        dot_bin = draw_dot_bins(c.dot_bins, p, gens)
    if dot_bin.shape != (b,) or int(dot_bin.min()) < 0 or int(dot_bin.max()) >= c.dot_bins:
        raise ValueError(f"dot_bin must hold {b} bins in [0, {c.dot_bins}), got {dot_bin.tolist()}")
    z_t, tokens, mask, dot_bin = z_t.to(device), tokens.to(device), mask.to(device), dot_bin.to(device)
    codes = torch.zeros(b, 0, dtype=torch.long, device=device)
    if use_cache:  # the prefix once, then one position per code: O(K) positions instead of O(K^2)
        logits, cache = model.start_decoding(z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)
    for k in range(c.components):
        if not use_cache:  # the reference path: the whole sequence again for every code
            logits = model(codes, z_t=z_t, tokens=tokens, mask=mask, dot_bin=dot_bin)[:, -1]
        nxt = _draw(logits, temperature, top_k, gens).to(device)
        codes = torch.cat([codes, nxt[:, None]], dim=1)
        if use_cache and k + 1 < c.components:
            logits = model.decode_step(nxt, cache)
    z_i = model.quantizer.decode(codes)
    return ARSample(z_i, codes, dot_bin, time.perf_counter() - start)
