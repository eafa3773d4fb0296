"""Decoder and upsampler U-Nets against DALLE2-pytorch's ``Unet`` at a matched configuration (issue 7, item 6).

For each case (a preset at a resolution and batch) it measures, for our network and for ``dalle2_pytorch.Unet``
built to the same shape:

* training step: forward + backward + AdamW step, on an MSE stand-in loss (the diffusion loss itself is a few
  element-wise ops and costs nothing next to the U-Net);
* sampling step: one forward under ``no_grad`` on the batch a sampler would send, i.e. the classifier-free
  guidance branches stacked (3 for the decoder: nothing, z_i, z_i + caption; 1 for the upsamplers);
* peak memory of each, in a fresh subprocess per (case, model, mode);
* parameter counts;

and prints a Markdown table with the ratio ours / theirs (below 1: ours is faster or smaller). Times are the
best of ``--repeats`` runs, ours and theirs interleaved (alternating which goes first) so a load change on a
shared machine hits both alike.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` over building the model and two steps, minus what was
allocated before (the inputs, which are left out). On the CPU, the resident-set high-water mark (``VmHWM``, reset
through ``/proc/self/clear_refs``) over the same span, minus the resident set before it: it counts parameters,
gradients, optimizer state and the largest set of live activations, plus whatever the allocator keeps; it is
only comparable between rows of one run.

DALLE2-pytorch needs torchvision, which does not import beside the project's torch, so this runs in its own
virtual environment holding both packages under one torch (DESIGN.md §5)::

    make bench-setup        # creates .venv-bench (torch 2.14.1, torchvision, dalle2-pytorch 1.15.6, unclip -e)
    .venv-bench/bin/python benchmarks/decoder_unet.py                      # CPU, 1 thread, default cases
    .venv-bench/bin/python benchmarks/decoder_unet.py --device cuda --cases decoder-small decoder-base \\
        --decoder-batch 32 --upsampler-batch 16 --upsampler-sample-batch 4 --repeats 20

"Matched" means: the same base width and channel multipliers, the same number of residual blocks per level
(as the constructor argument; the block layouts differ, see docs/benchmarks.md), self-attention at the same
levels with the same head width, z_i conditioning on (4 tokens, and added to the timestep embedding), caption
token states of the same length and width, learned-variance output channels, the same 3×3 input and output
convolutions and nearest-neighbour upsampling (``--theirs-defaults`` keeps DALLE2-pytorch's own defaults
instead). Conditioning widths and attention internals follow each library's own design.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from measure import peak_mib, start_peak, timed
from unclip.models.decoder import Decoder, DecoderConfig
from unclip.models.memory_format import set_channels_last
from unclip.models.presets import decoder_preset, upsampler_preset
from unclip.models.upsampler import Upsampler, UpsamplerConfig

# (z_i size, caption width) of the CLIP each decoder preset is trained with (train/decoder_stage.py).
CLIP_SIZES = {"tiny": (32, 64), "small": (256, 256), "base": (512, 512)}
CASES = ("decoder-tiny", "decoder-small", "decoder-base", "upsampler-tiny", "upsampler-small", "upsampler-base")
DEFAULT_CASES = ("decoder-tiny", "decoder-small", "upsampler-small")
SETUP_HINT = (
    "dalle2_pytorch is not importable with this interpreter. It needs torchvision, which does not install beside "
    "the project's torch, so the benchmark runs in a separate environment:\n"
    "    make bench-setup\n    .venv-bench/bin/python benchmarks/decoder_unet.py"
)


@dataclass(frozen=True)
class Case:
    name: str  # e.g. "decoder-small"
    kind: str  # "decoder" or "upsampler"
    preset: str
    train_size: int  # side of the training images (the crop, for an upsampler)
    sample_size: int  # side of the images of a sampling step
    batch: int  # training batch
    sample_batch: int  # images per sampling step, before the guidance branches are stacked
    branches: int  # classifier-free guidance branches stacked into one forward

    def label(self) -> str:
        if self.kind == "decoder":
            return f"{self.name} {self.train_size} px, B={self.batch}, sample {self.branches}×{self.sample_batch}"
        return (
            f"{self.name} ×4, train crop {self.train_size} px B={self.batch}, "
            f"sample {self.sample_size} px B={self.sample_batch}"
        )


def make_case(name: str, args: argparse.Namespace) -> Case:
    kind, preset = name.split("-", 1)
    if kind == "decoder":
        r = args.decoder_resolution
        return Case(name, kind, preset, r, r, args.decoder_batch, args.decoder_batch, 3)
    return Case(
        name, kind, preset, args.upsampler_crop, args.upsampler_resolution, args.upsampler_batch,
        args.upsampler_sample_batch or args.upsampler_batch, 1,
    )  # fmt: skip


# --- model configurations -------------------------------------------------------------------------------------


def our_config(case: Case, args: argparse.Namespace) -> DecoderConfig | UpsamplerConfig:
    if case.kind == "decoder":
        clip_dim, text_dim = CLIP_SIZES[case.preset]
        return decoder_preset(case.preset, clip_dim=clip_dim, text_dim=text_dim, resolution=case.train_size)
    return upsampler_preset(case.preset, resolution=case.sample_size, factor=4)


def their_kwargs(cfg: DecoderConfig | UpsamplerConfig, args: argparse.Namespace) -> dict[str, Any]:
    """``dalle2_pytorch.Unet`` arguments for the network closest to ours that its options allow."""
    u = cfg.unet
    levels = len(u.channel_mult)
    # Their stage i works at width dims[i] and (going up) dims[i + 1], with dims = [dim, dim * mults...];
    # a GroupNorm count of gcd(32, widths) matches our make_norm.
    dims = [u.model_channels] + [u.model_channels * m for m in u.channel_mult]
    groups = tuple(math.gcd(32, dims[i], dims[i + 1]) for i in range(levels))
    kw: dict[str, Any] = {
        "dim": u.model_channels,
        "dim_mults": tuple(u.channel_mult),
        "num_resnet_blocks": u.num_res_blocks,
        "channels": 3,
        "channels_out": u.out_channels,
        "attn_dim_head": u.head_channels,
        # Their heads are one number for every attention layer; ours are width / head_channels, so take the
        # middle block's (the widest, and present in both).
        "attn_heads": max(1, u.model_channels * u.channel_mult[-1] // u.head_channels),
    }
    if not args.theirs_defaults:
        kw |= {
            "init_cross_embed": False,  # ours: one 3×3 input convolution
            "init_conv_kernel_size": 3,
            "pixel_shuffle_upsample": False,  # ours: nearest neighbour + 3×3 convolution
            "final_conv_kernel_size": 3,  # ours: 3×3 output convolution
            "resnet_groups": groups,
        }
    if isinstance(cfg, DecoderConfig):
        # cond_dim stays at their default (dim): with cond_dim == image_embed_dim their Unet skips the projection
        # of z_i to tokens and breaks (see docs/benchmarks.md).
        cond_dim = u.model_channels
        if cond_dim == cfg.clip_dim:
            raise ValueError(f"clip_dim {cfg.clip_dim} equals DALLE2-pytorch's cond_dim; their Unet mishandles that")
        kw |= {
            "self_attn": tuple(level in u.attention_levels for level in range(levels)),
            "image_embed_dim": cfg.clip_dim,
            "cond_on_image_embeds": True,
            "add_image_embeds_to_time": True,
            "num_image_tokens": cfg.clip_tokens,
            "cond_dim": cond_dim,
            "cond_on_text_encodings": cfg.text_dim is not None,
            "text_embed_dim": cfg.text_dim,
            "max_text_len": args.text_len,
        }
    else:
        kw |= {"self_attn": False, "lowres_cond": True, "cond_on_image_embeds": False}
    return kw


def build(which: str, case: Case, args: argparse.Namespace) -> nn.Module:
    cfg = our_config(case, args)
    if which == "ours":
        return Decoder(cfg) if isinstance(cfg, DecoderConfig) else Upsampler(cfg)
    from dalle2_pytorch import Unet

    return Unet(**their_kwargs(cfg, args))


# --- steps -----------------------------------------------------------------------------------------------------


def make_inputs(case: Case, cfg: DecoderConfig | UpsamplerConfig, mode: str, args: argparse.Namespace, device):
    """Random inputs of a training step (``mode="train"``) or a sampling step, shared by ours and theirs."""
    g = torch.Generator().manual_seed(0)
    size = case.train_size if mode == "train" else case.sample_size
    b = case.batch if mode == "train" else case.sample_batch * case.branches
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    inputs: dict[str, Tensor] = {
        "x": torch.randn(b, 3, size, size, generator=g).to(device, memory_format=fmt),
        "t": torch.randint(0, 1000, (b,), generator=g).float().to(device),
    }
    if isinstance(cfg, DecoderConfig):
        inputs["z_i"] = torch.randn(b, cfg.clip_dim, generator=g).to(device)
        if cfg.text_dim:
            inputs["text"] = torch.randn(b, args.text_len, cfg.text_dim, generator=g).to(device)
        if mode == "train":  # App. C dropout rates, drawn per sample
            u = torch.rand(2, b, generator=g)
            inputs["drop_z_i"], inputs["drop_text"] = (u[0] < cfg.p_drop_z_i).to(device), (u[1] < 0.5).to(device)
        else:  # the nested guidance branches [nothing, z_i, z_i + caption] (decoder.guidance_conditions)
            n = case.sample_batch
            yes, no = torch.ones(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
            inputs["drop_z_i"] = torch.cat([yes, no, no]).to(device)
            inputs["drop_text"] = torch.cat([yes, yes, no]).to(device)
    else:
        low = size // cfg.factor
        inputs["low_res"] = torch.randn(b, 3, low, low, generator=g).clamp(-1, 1).to(device, memory_format=fmt)
    out_channels = cfg.unet.out_channels
    inputs["target"] = torch.randn(b, out_channels, size, size, generator=g).to(device)
    return inputs


def forward_fn(which: str, model: nn.Module, cfg, inputs: dict[str, Tensor], mode: str) -> Callable[[], Tensor]:
    x, t = inputs["x"], inputs["t"]
    if which == "ours":
        if isinstance(cfg, DecoderConfig):
            text = inputs.get("text")
            mask = None if text is None else torch.ones(text.shape[:2], dtype=torch.bool, device=x.device)
            kw = {k: inputs[k] for k in ("drop_z_i", "drop_text")}
            return lambda: model(x, t, inputs["z_i"], text, mask, **kw)
        return lambda: model(x, t, inputs["low_res"])
    if isinstance(cfg, DecoderConfig):
        # Their Unet drops conditions with a probability per call, not per sample; training uses App. C's rates.
        # A guided sampling step of theirs is two forwards of B (forward_with_cond_scale); we time one forward
        # of the same stacked batch as ours, so the work is the same.
        drops = {"image_cond_drop_prob": 0.1, "text_cond_drop_prob": 0.5} if mode == "train" else {}
        return lambda: model(x, t, image_embed=inputs["z_i"], text_encodings=inputs.get("text"), **drops)
    size = (x.shape[-2], x.shape[-1])

    def upsample() -> Tensor:  # their Decoder resizes the condition before the Unet; ours does it inside
        low = F.interpolate(inputs["low_res"], size=size, mode="bicubic", align_corners=False)
        return model(x, t, image_embed=None, lowres_cond_img=low)

    return upsample


def make_step(
    which: str, case: Case, mode: str, args: argparse.Namespace, device, inputs: dict[str, Tensor] | None = None
) -> tuple[nn.Module, Callable]:
    cfg = our_config(case, args)
    inputs = make_inputs(case, cfg, mode, args, device) if inputs is None else inputs
    model = build(which, case, args).to(device)
    if args.channels_last:
        # Ours through the library's switch (hooks convert inputs and output), as `--channels-last` runs it.
        model = set_channels_last(model) if which == "ours" else model.to(memory_format=torch.channels_last)
    forward = forward_fn(which, model, cfg, inputs, mode)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    if mode == "train":
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def train_step() -> None:
            with amp:
                out = forward()
            F.mse_loss(out.float(), inputs["target"]).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return model, train_step
    model.eval()

    def sample_step() -> None:
        with torch.no_grad(), amp:
            forward()

    return model, sample_step


# --- measurement -----------------------------------------------------------------------------------------------


def peak_memory_mib(which: str, case: Case, mode: str, args: argparse.Namespace) -> float:
    """Run in a fresh process: peak memory of building the model and taking two steps, above the start."""
    device = torch.device(args.device)
    if which == "theirs":
        import dalle2_pytorch  # noqa: F401  (its imports must not count)
    inputs = make_inputs(case, our_config(case, args), mode, args, device)  # not counted either
    base = start_peak(device)
    _model, step = make_step(which, case, mode, args, device, inputs)
    for _ in range(2):  # the second training step is the steady state (AdamW's moments exist)
        step()
    return peak_mib(device, base)


def memory_in_subprocess(which: str, case: Case, mode: str, args: argparse.Namespace) -> float:
    cmd = [sys.executable, __file__, "--child", json.dumps([which, case.name, mode]), *args.passthrough]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"memory run {which}/{case.name}/{mode} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"])


def best_times(case: Case, mode: str, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    steps = {w: make_step(w, case, mode, args, device)[1] for w in ("ours", "theirs")}
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for r in range(args.repeats):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        for w in order:
            times[w].append(timed(steps[w], device, args.clock))
    return {w: min(v) for w, v in times.items()}


def count_params(which: str, case: Case, args: argparse.Namespace) -> int:
    return sum(p.numel() for p in build(which, case, args).parameters())


# --- report ----------------------------------------------------------------------------------------------------


def fmt_ratio(a: float, b: float) -> str:
    return f"**{a / b:.2f}**" if b > 0 else "n/a"


def run_case(case: Case, args: argparse.Namespace, device: torch.device) -> list[str]:
    print(f"... {case.label()}", file=sys.stderr, flush=True)
    params = {w: count_params(w, case, args) for w in ("ours", "theirs")}
    train = best_times(case, "train", args, device)
    sample = best_times(case, "sample", args, device)
    mem = {
        (w, m): (memory_in_subprocess(w, case, m, args) if not args.no_memory else float("nan"))
        for w in ("ours", "theirs")
        for m in ("train", "sample")
    }
    rows = []
    for w, name in (("ours", "unclip"), ("theirs", "DALLE2-pytorch")):
        rows.append(
            f"| {case.label()} | {name} | {params[w] / 1e6:.2f} M | {train[w] * 1e3:.1f} | {sample[w] * 1e3:.1f} "
            f"| {mem[w, 'train']:.0f} | {mem[w, 'sample']:.0f} |"
        )
    rows.append(
        f"| {case.label()} | ours / theirs | {fmt_ratio(params['ours'], params['theirs'])} "
        f"| {fmt_ratio(train['ours'], train['theirs'])} | {fmt_ratio(sample['ours'], sample['theirs'])} "
        f"| {fmt_ratio(mem['ours', 'train'], mem['theirs', 'train'])} "
        f"| {fmt_ratio(mem['ours', 'sample'], mem['theirs', 'sample'])} |"
    )
    for row in rows:
        print(row, flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(DEFAULT_CASES))
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (torch.set_num_threads); 0 leaves torch's")
    p.add_argument(
        "--clock",
        choices=("auto", "wall", "cpu"),
        default="auto",
        help="CPU timing: wall time, or process CPU time (auto: CPU time when --threads 1, else wall)",
    )
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model and mode; the best is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model and mode first")
    p.add_argument("--decoder-resolution", type=int, default=64)
    p.add_argument("--decoder-batch", type=int, default=8, help="training batch and images per sampling step")
    p.add_argument("--upsampler-crop", type=int, default=64, help="training crop side (1/4 of the output)")
    p.add_argument("--upsampler-resolution", type=int, default=256, help="output side of a sampling step")
    p.add_argument("--upsampler-batch", type=int, default=4)
    p.add_argument("--upsampler-sample-batch", type=int, default=0, help="0: as --upsampler-batch")
    p.add_argument("--text-len", type=int, default=32, help="caption tokens given to the decoders")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast for both models")
    p.add_argument("--channels-last", action="store_true", help="channels-last weights and inputs for both (GPU)")
    p.add_argument("--theirs-defaults", action="store_true", help="keep DALLE2-pytorch's stem/upsample defaults")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.clock == "auto":
        args.clock = "cpu" if args.device == "cpu" and args.threads == 1 else "wall"
    argv = sys.argv[1:] if argv is None else argv
    # What a memory subprocess needs to rebuild the same case: every option but --child.
    args.passthrough = [a for i, a in enumerate(argv) if a != "--child" and (i == 0 or argv[i - 1] != "--child")]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda given but torch sees no GPU")
    if args.child:
        which, name, mode = json.loads(args.child)
        print(json.dumps({"peak_mib": peak_memory_mib(which, make_case(name, args), mode, args)}))
        return
    if importlib.util.find_spec("dalle2_pytorch") is None:
        raise SystemExit(SETUP_HINT)
    import dalle2_pytorch  # noqa: F401  (imported here so a missing torchvision fails before any timing)

    device = torch.device(args.device)
    torch.manual_seed(0)
    where = (
        f"{torch.cuda.get_device_name()} (CUDA events)"
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s), {args.clock} clock"
    )
    memory = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "VmHWM - VmRSS (fresh process)"
    print(
        f"torch {torch.__version__}, dalle2-pytorch {version('dalle2-pytorch')}, {where}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}; bf16={args.bf16}, channels_last={args.channels_last}, "
        f"theirs_defaults={args.theirs_defaults}; best of {args.repeats} after {args.warmup} warm-up; "
        f"peak memory: {memory}\n"
    )
    print("| case | model | params | train step (ms) | sample step (ms) | train peak (MiB) | sample peak (MiB) |")
    print("|---|---|---|---|---|---|---|")
    t0 = time.perf_counter()
    for name in args.cases:
        run_case(make_case(name, args), args, device)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nwall {time.perf_counter() - t0:.0f} s, load at end {os.getloadavg()[0]:.2f}, CPU {usage.ru_utime:.0f} s")


if __name__ == "__main__":
    main()
