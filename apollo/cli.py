"""The `apollo` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

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


def _collect(inputs: list[str], out_dir: Path, fmt: str) -> list[tuple[Path, Path | None, str | None]]:
    """(source, destination, error) for every input file; folders are searched recursively."""
    from .audio import AUDIO_EXTENSIONS

    jobs: list[tuple[Path, Path | None, str | None]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                           and out_dir.resolve() not in p.resolve().parents)
            if not files:
                jobs.append((path, None, f"{path}: folder holds no audio files"))
            jobs += [(p, out_dir / p.relative_to(path).with_suffix(f".{fmt}"), None) for p in files]
        elif path.exists():
            jobs.append((path, out_dir / f"{path.stem}.{fmt}", None))
        else:
            jobs.append((path, None, f"{path}: no such file or folder"))
    claimed: dict[Path, Path] = {}
    inputs_resolved = {src.resolve() for src, _, _ in jobs}
    for i, (src, dst, err) in enumerate(jobs):
        if dst is None or err:
            continue
        key = dst.resolve()
        if key in inputs_resolved:
            jobs[i] = (src, None, f"{src}: output {dst} would replace an input file; choose another -o")
        elif key in claimed:
            jobs[i] = (src, None, f"{src}: output {dst} is already the output of {claimed[key]}")
        else:
            claimed[key] = src
    return jobs


def _cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import Restorer
    from .audio import AudioError, probe

    fmt = args.format
    bits = args.bits or ("32f" if fmt == "wav" else "24")
    from .audio import subtype_for

    try:
        subtype_for(fmt, bits)
        restorer = Restorer(args.checkpoint, device=args.device, segment=args.segment, overlap=args.overlap,
                            batch_size=args.batch_size, clip=args.clip)
    except (AudioError, ValueError) as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 2
    jobs = _collect(args.inputs, Path(args.output), fmt)
    failed = 0
    durations = {}
    for src, dst, err in jobs:
        if err is None:
            try:
                durations[src] = probe(src).duration
            except AudioError:
                durations[src] = 0.0
    overall = tqdm(total=round(sum(durations.values()), 1), unit="s", desc="all files", disable=args.quiet,
                   position=0, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]")
    for src, dst, err in jobs:
        if err is None and dst is not None:
            bar = tqdm(total=round(durations.get(src, 0.0), 1), unit="s", desc=src.name[:40], disable=args.quiet,
                       position=1, leave=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{rate_fmt}]")

            def step(seconds: float, bar=bar) -> None:  # noqa: ANN001
                bar.update(seconds)
                overall.update(seconds)

            try:
                restorer.restore_file(src, dst, fmt=fmt, bits=bits, overwrite=args.overwrite, on_progress=step)
            except AudioError as error:
                err = str(error)
            finally:
                bar.close()
        if err is not None:
            failed += 1
            overall.clear()
            print(f"apollo: error: {err}", file=sys.stderr)
        elif not args.quiet:
            overall.write(f"restored {src} -> {dst}")
    overall.close()
    if failed:
        print(f"apollo: {failed} of {len(jobs)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="apollo", description="Restore MP3-damaged music with Apollo.")
    parser.add_argument("--version", action="version", version=f"apollo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="print a checkpoint's inferred config and parameter count")
    info.add_argument("checkpoint", help="checkpoint file (safetensors, pytorch_model.bin, .ckpt) or 'tiny-test'")
    info.set_defaults(func=_cmd_info)

    restore = sub.add_parser("restore", help="restore MP3-damaged audio files or folders",
                             description="Restore the high band and transients an MP3 encoder removed. "
                                         "Outputs are written at the model's sample rate.")
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)")
    restore.add_argument("-o", "--output", default="restored", help="output folder (default: ./restored)")
    restore.add_argument("--checkpoint", help="model weights (default: the shipped model); 'tiny-test' for a test model")
    restore.add_argument("--segment", type=float, default=10.0,
                         help="seconds restored per chunk; 0 = whole file at once (default: 10)")
    restore.add_argument("--overlap", type=float, default=0.05, help="crossfade seconds between chunks (default: 0.05)")
    restore.add_argument("--batch-size", type=int, default=1, help="chunks per forward pass (default: 1)")
    restore.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default: auto")
    restore.add_argument("--format", default="flac", choices=["flac", "wav"], help="output format (default: flac)")
    restore.add_argument("--bits", choices=["16", "24", "32f"], help="sample format (default: 24 for flac, 32f for wav)")
    restore.add_argument("--clip", default="rescale", choices=["rescale", "clamp", "none"],
                         help="samples beyond +-1: rescale the file, clamp, or keep (default: rescale)")
    restore.add_argument("--overwrite", action="store_true", help="replace existing output files")
    restore.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")
    restore.set_defaults(func=_cmd_restore)
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
