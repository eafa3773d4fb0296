"""``unclip`` console script.

Each command group lives in its own module exposing ``register(subparsers)``; that module adds its parser and
sets ``func`` to a handler taking the parsed namespace and returning an exit code. Command modules import
only argparse at top level and import the library inside their handlers, so ``unclip --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import unclip

# Command-group modules, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "unclip.cli.demo",
    "unclip.cli.generate",
    "unclip.cli.serve",
    "unclip.cli.train",
    "unclip.cli.models",
    "unclip.cli.data",
    "unclip.cli.judge",
    "unclip.cli.eval",
    "unclip.cli.report",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unclip",
        description="unCLIP: text-to-image with CLIP latents (Ramesh et al., 2022).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"unclip {unclip.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    show_warning = warnings.formatwarning
    # A warning for the user (a caption truncated to the context) is one line too, not the source line that raised it.
    warnings.formatwarning = lambda message, *_, **__: f"unclip {args.command}: warning: {message}\n"
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError) as err:
        # Bad input (a value, a missing or unreadable file, an unwritable --out) is reported in one line that names
        # it; tracebacks are for bugs.
        print(f"unclip {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"unclip {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning = show_warning


if __name__ == "__main__":
    raise SystemExit(main())
