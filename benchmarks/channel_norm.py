"""ChannelNorm (the upsamplers' per-pixel LayerNorm) now against before, and the upsampler forward with each.

Before: ``x.var(dim=1)`` and ``x.mean(dim=1)`` on NCHW, a reduction across the strided channel dimension that took a
third of the upsampler's forward on the CPU. Now: two passes reusing the centred values on NCHW, and PyTorch's fused
``layer_norm`` on a channels-last input (each pixel's channels adjacent). Prints per-call times for one norm at the
upsampler's widths and for the whole upsampler of a model at one sampling step's batch, in both memory layouts
(best of ``--repeats``; the variants alternate), and the largest difference between the outputs. Last, one
training step of the upsampler (``--train-batch`` images) with the norm's hand-written backward against autograd
through the same expression: time, peak memory and the largest gradient difference.

    OMP_NUM_THREADS=2 python benchmarks/channel_norm.py
"""

from __future__ import annotations

import platform

import torch

from measure import model_benchmark_parser, peak_mib, start_peak, timed
from unclip.models import unet_blocks
from unclip.models.memory_format import set_channels_last
from unclip.pipeline import UnCLIPPipeline


def before_forward(self, x):
    """ChannelNorm's forward before the change, kept here as the reference."""
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, keepdim=True, unbiased=False)
    return (x - mean) * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def expression_forward(self, x):
    """Session 19's NCHW forward, differentiated by autograd (which keeps the centred and the normalized input)."""
    centred = x - x.mean(dim=1, keepdim=True)
    var = (centred * centred).mean(dim=1, keepdim=True)
    return centred * torch.rsqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


def _train_race(up, batch: int, device, repeats: int) -> None:
    """One training step of the upsampler (forward, loss, backward) with each backward: time and peak memory."""
    up.train()
    size, low = up.config.resolution, up.config.resolution // up.config.factor
    g = torch.Generator().manual_seed(0)
    x, low_res = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, low, low, generator=g)
    x, low_res, t = x.to(device), low_res.to(device), torch.full((batch,), 300, device=device)
    variants = {"autograd (before)": expression_forward, "hand-written (now)": unet_blocks.ChannelNorm.forward}
    now = unet_blocks.ChannelNorm.forward
    best = {name: (float("inf"), float("inf")) for name in variants}
    grads = {}
    for _ in range(repeats + 1):  # the first round warms the allocator up
        for name, forward in variants.items():
            unet_blocks.ChannelNorm.forward = forward
            up.zero_grad(set_to_none=True)
            base = start_peak(device)
            seconds = timed(lambda: up(x, t, low_res).float().pow(2).mean().backward(), device)
            best[name] = (min(best[name][0], seconds), min(best[name][1], peak_mib(device, base)))
            grads[name] = [p.grad.clone() for p in up.parameters() if p.grad is not None]
    unet_blocks.ChannelNorm.forward = now
    a, b = grads.values()
    diff = max((u - v).abs().max().item() for u, v in zip(a, b, strict=True))
    print(f"  upsampler training step, {size} px, batch {batch}, NCHW:")
    for name, (seconds, mib) in best.items():
        print(f"    {name:20s} {seconds:7.2f} s, peak {mib:7.0f} MiB")
    (t0, m0), (t1, m1) = best.values()
    print(f"    ratio now / before: time {t1 / t0:.2f}, peak memory {m1 / m0:.2f}; gradients differ by {diff:.1e}")


def _race(variants: dict, call, device, repeats: int) -> tuple[dict, float]:
    """Best seconds per variant (forward swapped in turn) and the largest output difference from the first."""
    now = unet_blocks.ChannelNorm.forward
    outputs, best = {}, dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        for name, forward in variants.items():
            unet_blocks.ChannelNorm.forward = forward
            outputs[name] = call()
        for _ in range(repeats):
            for name, forward in variants.items():
                unet_blocks.ChannelNorm.forward = forward
                best[name] = min(best[name], timed(call, device))
    unet_blocks.ChannelNorm.forward = now
    first = next(iter(outputs.values()))
    return best, max((o - first).abs().max().item() for o in outputs.values())


def main(argv: list[str] | None = None) -> None:
    p = model_benchmark_parser(__doc__, needs="with an upsampler", batch=4, batch_help="images per forward", repeats=6)
    p.add_argument("--train-batch", type=int, default=16, help="images in the training-step race")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    variants = {"before": before_forward, "now": unet_blocks.ChannelNorm.forward}
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads, {platform.machine()}")

    up = UnCLIPPipeline.from_pretrained(args.model, device=args.device).upsamplers[0]
    size, low = up.config.resolution, up.config.resolution // up.config.factor
    g = torch.Generator().manual_seed(0)
    unet = up.config.unet
    for level, mult in enumerate(unet.channel_mult):  # each level's width at its own resolution
        width, res = unet.model_channels * mult, size // 2**level
        norm = unet_blocks.ChannelNorm(width).to(device)
        x = (torch.randn(args.batch, width, res, res, generator=g) * 3 + 1).to(device)
        for layout in (torch.contiguous_format, torch.channels_last):
            xl = x.contiguous(memory_format=layout)
            best, diff = _race(variants, lambda xl=xl, norm=norm: norm(xl), device, args.repeats)
            _report(f"ChannelNorm({width}) on {tuple(x.shape)}, {_name(layout)}", best, diff)
    x = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    t = torch.full((args.batch,), 300, device=device)
    low_res = torch.randn(args.batch, 3, low, low, generator=g).to(device)
    for layout in (torch.contiguous_format, torch.channels_last):
        set_channels_last(up, layout == torch.channels_last)
        best, diff = _race(variants, lambda: up(x, t, low_res), device, args.repeats)
        _report(f"upsampler {low}->{size} px, batch {args.batch}, {_name(layout)}", best, diff)
    set_channels_last(up, False)
    _train_race(up, args.train_batch, device, 2)


def _report(what: str, best: dict, diff: float) -> None:
    before, now = best["before"] * 1e3, best["now"] * 1e3
    print(f"  {what:52s} before {before:7.2f} ms, now {now:7.2f} ms, ratio {now / before:.2f}; diff {diff:.1e}")


def _name(layout: torch.memory_format) -> str:
    return "channels-last" if layout == torch.channels_last else "NCHW"


if __name__ == "__main__":
    main()
