"""The U-Net attention block's q/k/v layout: token-major (now) against channel-major (before), on a model's decoder.

SDPA's fused CPU kernel (and CUDA's flash and memory-efficient kernels) need unit stride along the head dimension.
The block used to split q, k and v out of its 1x1 convolution's channel-major output (B, 3C, N), which leaves stride
N there, so SDPA took its math path; it now computes them token-major (B, N, 3C). This script runs the bundled (or
any) decoder's forward both ways at one guided sampling step's batch, checks they agree, and prints the times and
their ratio (best of ``--repeats`` after a warm-up; both variants alternate so machine drift hits both alike).

    OMP_NUM_THREADS=2 python benchmarks/attention_layout.py
    python benchmarks/attention_layout.py --model DIR --device cuda --batch 96
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from measure import model_benchmark_parser, print_before_now, timed
from unclip.models import unet_blocks
from unclip.pipeline import UnCLIPPipeline


def channel_major_forward(self, x, context=None, context_mask=None):
    """The block's forward before the change, kept here as the reference."""
    b, c, h, w = x.shape
    qkv = self.qkv(self.norm(x).reshape(b, c, h * w))  # (B, 3C, N)
    q, k, v = qkv.reshape(b, 3, self.heads, c // self.heads, h * w).permute(1, 0, 2, 4, 3)  # stride N along d
    mask = None
    if context is not None and self.context_kv is not None:
        ck, cv = self.context_kv(context).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        k, v = torch.cat([ck, k], dim=2), torch.cat([cv, v], dim=2)
        if context_mask is not None:
            mask = torch.cat([context_mask, context_mask.new_ones(b, h * w)], dim=1)[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return x + self.proj(out.permute(0, 1, 3, 2).reshape(b, c, h * w)).reshape(b, c, h, w)


def main(argv: list[str] | None = None) -> None:
    p = model_benchmark_parser(
        __doc__, needs="", batch=12, batch_help="rows per forward (4 images x 3 guidance branches)", repeats=10
    )
    args = p.parse_args(argv)
    device = torch.device(args.device)
    decoder = UnCLIPPipeline.from_pretrained(args.model, device=args.device).decoder
    cfg, b = decoder.config, args.batch
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, 3, cfg.resolution, cfg.resolution, generator=g).to(device)
    t = torch.full((b,), 500, device=device)
    z_i = F.normalize(torch.randn(b, cfg.clip_dim, generator=g), dim=-1).to(device)
    text = torch.randn(b, 77, cfg.text_dim, generator=g).to(device)
    mask = (torch.arange(77)[None] < torch.randint(5, 30, (b, 1), generator=g)).to(device)  # captions of 5-30 tokens

    token_major = unet_blocks.AttentionBlock.forward
    variants = {"channel-major (before)": channel_major_forward, "token-major (now)": token_major}
    outputs, best = {}, dict.fromkeys(variants, float("inf"))
    with torch.no_grad():
        for name, forward in variants.items():  # warm-up, and the outputs to compare
            unet_blocks.AttentionBlock.forward = forward
            outputs[name] = decoder(x, t, z_i, text, mask)
        for _ in range(args.repeats):
            for name, forward in variants.items():
                unet_blocks.AttentionBlock.forward = forward
                best[name] = min(best[name], timed(lambda: decoder(x, t, z_i, text, mask), device))
    unet_blocks.AttentionBlock.forward = token_major
    diff = (outputs["token-major (now)"] - outputs["channel-major (before)"]).abs().max().item()
    header = f"decoder of {args.model} at {cfg.resolution} px, batch {b}, {args.device}"
    print_before_now(header, best, "forward", "outputs", diff)


if __name__ == "__main__":
    main()
