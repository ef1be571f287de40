"""The `apollo` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .states import CheckpointError


def _cmd_info(args: argparse.Namespace) -> int:
    from .pretrained import count_parameters, load_model

    model = load_model(args.checkpoint)
    config = model.config
    print(f"checkpoint: {args.checkpoint}")
    for key, value in config.to_dict().items():
        print(f"  {key}: {value}")
    layout = ", ".join(f"{n} x {w} bins" for n, w in config.bands)
    print(f"  bands: {config.num_bands} ({layout}); window {config.window}, hop {config.hop}")
    print(f"parameters: {count_parameters(model):,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="apollo", description="Restore MP3-damaged music with Apollo.")
    parser.add_argument("--version", action="version", version=f"apollo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a checkpoint's inferred config and parameter count")
    info.add_argument("checkpoint", help="checkpoint file (safetensors, pytorch_model.bin, .ckpt) or 'tiny-test'")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CheckpointError as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("apollo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
