"""Time of one EMA update of the bundle's networks, this tree's EMA against another checkout's (a ratio per network).

The EMA runs after every optimizer step. Updating it tensor by tensor costs one kernel launch per tensor (310 for
the compact decoder), which on an accelerator bounds a small network's step; this tree updates each list of
tensors with fused ``torch._foreach_*`` kernels. Also checks that both give bit-identical shadows.

    python benchmarks/ema_update.py [--device cuda] [--baseline-src /tmp/base/src] [--repeats 50]

Without --baseline-src only this tree is timed. CPU times are process CPU time (run it with OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

from measure import timed  # noqa: E402
from unclip.train.ema import EMA  # noqa: E402
from unclip.train.stage import get_stage  # noqa: E402

NETWORKS = [("decoder", "compact"), ("upsampler", "compact"), ("clip", "small")]


def baseline_ema(src: Path) -> type:
    spec = importlib.util.spec_from_file_location("baseline_ema", src / "unclip" / "train" / "ema.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.EMA


def seconds_per_update(cls: type, net: torch.nn.Module, device: torch.device, repeats: int) -> float:
    ema = cls(net, 0.999, 0.0)
    for _ in range(5):
        ema.update(net)
    return min(timed(lambda: [ema.update(net) for _ in range(repeats)], device, "cpu") for _ in range(3)) / repeats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline-src", type=Path)
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    device = torch.device(args.device)
    classes = {"this tree": EMA}
    if args.baseline_src:
        classes["baseline"] = baseline_ema(args.baseline_src.resolve())
    print(f"torch {torch.__version__}, device {device}, best of 3 × {args.repeats} updates")
    for stage, preset in NETWORKS:
        st = get_stage(stage)
        net = st.build(st.presets()[preset].model).to(device)
        tensors, params = len(net.state_dict()), sum(q.numel() for q in net.parameters())
        ms = {name: 1e3 * seconds_per_update(cls, net, device, args.repeats) for name, cls in classes.items()}
        line = f"{stage}/{preset}: {params / 1e6:.1f} M parameters in {tensors} tensors; "
        line += ", ".join(f"{name} {v:.2f} ms" for name, v in ms.items())
        if "baseline" in ms:
            a, b = EMA(net, 0.999, 0.0), classes["baseline"](net, 0.999, 0.0)
            with torch.no_grad():
                for q in net.parameters():
                    q.add_(torch.randn_like(q))
            a.update(net)
            b.update(net)
            same = all(torch.equal(a.shadow[k], b.shadow[k]) for k in a.shadow)
            line += f"; baseline / this {ms['baseline'] / ms['this tree']:.2f}x; identical shadows: {same}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
