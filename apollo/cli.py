"""The `apollo` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .data.realmusic import MUSIC_PACKAGES
from .precision import PRECISIONS
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
    from .audio import AudioError, probe, subtype_for

    fmt = args.format
    bits = args.bits or ("32f" if fmt == "wav" else "24")
    if args.threads is not None:
        if args.threads < 1:
            print("apollo: error: --threads must be at least 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        subtype_for(fmt, bits)
        restorer = Restorer(args.checkpoint, device=args.device, segment=args.segment, overlap=args.overlap,
                            batch_size=args.batch_size, clip=args.clip, precision=args.precision,
                            compile=args.compile)
    except (AudioError, ValueError) as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 2
    jobs = _collect(args.inputs, Path(args.output), fmt)
    failed = 0
    infos = {}  # probed once: for the progress totals and for restoring
    for src, _, err in jobs:
        if err is None:
            try:
                infos[src] = probe(src)
            except AudioError:
                pass  # restore_file probes again and reports the error in its place
    overall = tqdm(total=round(sum(i.duration for i in infos.values()), 1), unit="s", desc="all files", disable=args.quiet,
                   position=0, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]")
    for src, dst, err in jobs:
        if err is None and dst is not None:
            bar = tqdm(total=round(infos[src].duration if src in infos else 0.0, 1), unit="s", desc=src.name[:40], disable=args.quiet,
                       position=1, leave=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{rate_fmt}]")

            def step(seconds: float, bar=bar) -> None:  # noqa: ANN001
                bar.update(seconds)
                overall.update(seconds)

            try:
                restorer.restore_file(src, dst, fmt=fmt, bits=bits, overwrite=args.overwrite, on_progress=step,
                                      info=infos.get(src))
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


def _cmd_degrade(args: argparse.Namespace) -> int:
    import numpy as np
    import soundfile as sf

    from . import degrade
    from .audio import AudioError, check_destination, read, resample
    from .states import atomic_write

    src, dst = Path(args.input), Path(args.output)
    try:
        check_destination(src, dst, args.overwrite)
        wav, info = read(src)
        kbps = None if args.vbr is not None else args.bitrate
        if dst.suffix.lower() == ".mp3":
            if wav.shape[0] > 2:
                raise AudioError(f"{src}: an .mp3 output holds at most 2 channels")
            rate = degrade.encode_rate(info.sample_rate, kbps)
            coded = resample(wav, info.sample_rate, rate)
            coded = coded / max(float(np.abs(coded).max()), 1.0)
            data = degrade.encode_mp3(coded, rate, kbps, args.vbr)

            def write(tmp: str) -> None:
                Path(tmp).write_bytes(data)
        else:
            peak = float(np.abs(wav).max())
            scale = peak if peak > 1 else 1.0
            out = degrade.mp3(wav / scale, info.sample_rate, kbps, args.vbr) * scale
            fmt = dst.suffix.lstrip(".").upper() or "WAV"
            if fmt not in ("WAV", "FLAC"):
                raise AudioError(f"{dst}: output must end in .wav, .flac or .mp3")

            def write(tmp: str) -> None:
                sf.write(tmp, out.T, info.sample_rate, subtype="FLOAT" if fmt == "WAV" else "PCM_24", format=fmt)
        atomic_write(dst, write)
    except (AudioError, ValueError) as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 1
    if not args.quiet:
        what = f"VBR -V{args.vbr}" if args.vbr is not None else f"{args.bitrate} kbps"
        print(f"wrote {dst} ({what} MP3 damage)")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from .data.synth import synth_corpus

        count = synth_corpus(args.out, args.hours, seed=args.seed, track_seconds=args.track_seconds,
                             workers=args.workers, progress=not args.quiet)
        print(f"{count} tracks in {args.out}")
        return 0
    if args.data_command == "real":
        from .data.realmusic import build_corpus, summary

        try:
            manifest = build_corpus(args.out, tuple(args.packages), workers=args.workers, progress=not args.quiet)
        except (RuntimeError, ValueError) as err:
            print(f"apollo: error: {err}", file=sys.stderr)
            return 1
        for row in summary(manifest):
            print(f"{row['package']}: {row['kept']} of {row['files']} files kept, {row['minutes']} min "
                  f"(train {row['train']}, valid {row['valid']}, test {row['test']})")
        return 0
    from .data.cache import prepare

    index = prepare(args.source, args.out, layout=args.layout, sample_rate=args.sample_rate, progress=not args.quiet,
                    workers=args.workers)
    import json

    tracks = json.loads(Path(index).read_text())["tracks"]
    splits = {s: sum(t["split"] == s for t in tracks) for s in ("train", "valid", "test")}
    print(f"{index}: {len(tracks)} tracks ({', '.join(f'{k} {v}' for k, v in splits.items())})")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    import numpy as np

    from . import metrics
    from .audio import AudioError, read, resample

    if args.data:
        if not args.checkpoint or not args.out:
            print("apollo: error: --data needs --checkpoint and --out", file=sys.stderr)
            return 2
        from .evaluate import evaluate_dataset

        bitrates = tuple(int(b) for b in args.bitrates.split(","))
        try:
            summary = evaluate_dataset(args.data, args.checkpoint, args.out, bitrates=bitrates, workers=args.workers,
                                       seconds=args.excerpt_seconds, per_track=args.per_track,
                                       with_visqol=not args.no_visqol, progress=not args.quiet,
                                       precisions=tuple(p for p in ("bf16", "int8") if getattr(args, p)),
                                       split=args.split)
        except ValueError as err:
            print(f"apollo: error: {err}", file=sys.stderr)
            return 2
        print((Path(args.out) / "table.md").read_text())
        return 0 if summary["count"] else 1
    if not (args.reference and args.estimate):
        print("apollo: error: give --reference and --estimate, or --data", file=sys.stderr)
        return 2
    try:
        ref, ref_info = read(args.reference)
        est, est_info = read(args.estimate)
        degraded, d_info = read(args.degraded) if args.degraded else (None, None)
    except AudioError as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 1
    est = resample(est, est_info.sample_rate, ref_info.sample_rate)
    if est.shape[0] != ref.shape[0]:
        est = np.repeat(est.mean(0, keepdims=True), ref.shape[0], axis=0)
    est, lag = metrics.align(ref, est, max_lag=int(0.1 * ref_info.sample_rate))
    if degraded is not None:
        degraded = resample(degraded, d_info.sample_rate, ref_info.sample_rate)
    result = {"lag_fixed_samples": lag, **metrics.score(ref, est, ref_info.sample_rate, degraded=degraded,
                                                         with_visqol=not args.no_visqol)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:18s} {value:.4f}" if isinstance(value, float) else f"{key:18s} {value}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import json

    from .benchmark import benchmark

    try:
        result = benchmark(args.checkpoint, args.config, seconds=args.seconds, device=args.device,
                           channels=args.channels, repeats=args.repeats, threads=args.threads,
                           precision=args.precision, batch=args.batch, compile=args.compile)
    except ValueError as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"model {result['model']}: {result['parameters']:,} parameters, "
              f"{result['gmacs_per_second_stereo']} GMAC per stereo second")
        print(f"RTF {result['rtf']:.3f} ({result['ms_per_second']} ms per second of audio) on {result['device']}, "
              f"{result['precision']}, {result['threads']} threads, batch {result['batch']} x {result['seconds']} s x "
              f"{result['channels']} ch, median of {result['repeats']}; peak memory {result['peak_memory_mb']} MB")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import yaml

    from .training import Trainer, load_config

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        if not _ or not key:
            print(f"apollo: error: --set takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        overrides[key] = yaml.safe_load(value)
    run_dir = Path(args.run_dir)
    if not args.resume and (run_dir / "last.pt").exists():
        print(f"apollo: error: {run_dir} already holds a run; pass --resume or choose another --run-dir",
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.config, overrides)
        trainer = Trainer(config, args.run_dir, resume=args.resume, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        print(f"apollo: error: {err}", file=sys.stderr)
        return 2
    if trainer.rank == 0:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    result = trainer.fit(time_limit=args.time_limit)
    if trainer.rank == 0 and not args.quiet:
        why = " at the time limit" if result["out_of_time"] else ""
        print(f"stopped{why} at step {result['step']} (epoch {result['epoch']}); best validation "
              f"reconstruction {result['best_valid']:.4f}; weights: {run_dir / 'generator-best.safetensors'}")
    return 0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return value


def _add_speed_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32: exact; bf16: bfloat16 autocast (GPU, or a CPU with AVX-512 BF16), ~1.4x "
                             "faster on CPU; int8: CPU only, dynamic int8 linear layers, ~1.5x faster. The reduced "
                             "precisions lose a little quality (default: fp32)")
    parser.add_argument("--int8", dest="precision", action="store_const", const="int8",
                        help="same as --precision int8")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the band-sequence blocks: on a GPU, or with --precision bf16 on a "
                             "CPU (there each new chunk length first costs ~40 s of compiling, for ~15%% less time)")


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
    restore.add_argument("--threads", type=int,
                         help="CPU threads for the model (default: PyTorch's choice, one per physical core)")
    restore.add_argument("--format", default="flac", choices=["flac", "wav"], help="output format (default: flac)")
    restore.add_argument("--bits", choices=["16", "24", "32f"], help="sample format (default: 24 for flac, 32f for wav)")
    restore.add_argument("--clip", default="rescale", choices=["rescale", "clamp", "none"],
                         help="samples beyond +-1: rescale the file, clamp, or keep (default: rescale)")
    _add_speed_options(restore)
    restore.add_argument("--overwrite", action="store_true", help="replace existing output files")
    restore.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")
    restore.set_defaults(func=_cmd_restore)

    deg = sub.add_parser("degrade", help="apply real MP3 damage (LAME encode + decode, zero lag)")
    deg.add_argument("input")
    deg.add_argument("output", help=".wav/.flac: decoded and aligned audio; .mp3: the encoded stream")
    rate = deg.add_mutually_exclusive_group()
    rate.add_argument("--bitrate", type=int, default=128, help="CBR kbps, 8-320 (default: 128)")
    rate.add_argument("--vbr", type=int, choices=range(10), metavar="0-9", help="LAME VBR quality -V instead of CBR")
    deg.add_argument("--overwrite", action="store_true")
    deg.add_argument("-q", "--quiet", action="store_true")
    deg.set_defaults(func=_cmd_degrade)

    data = sub.add_parser("data", help="build training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="render an offline multi-stem corpus with FluidSynth")
    synth.add_argument("--out", required=True)
    synth.add_argument("--hours", type=float, default=1.0)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--track-seconds", type=float, default=30.0)
    synth.add_argument("--workers", type=int, default=2)
    synth.add_argument("-q", "--quiet", action="store_true")
    real = data_sub.add_parser("real", help="fetch DFSG-free recorded music from Debian and keep the full-band "
                                            "tracks (resumable)")
    real.add_argument("--out", required=True, help="corpus folder, e.g. corpus/real")
    real.add_argument("--packages", nargs="+", default=list(MUSIC_PACKAGES), metavar="PACKAGE",
                      help="Debian packages to use (default: every checked music package)")
    real.add_argument("--workers", type=int, default=2, help="files measured in parallel (default: 2)")
    real.add_argument("-q", "--quiet", action="store_true")
    prep = data_sub.add_parser("prepare", help="silence-trimmed training cache from a dataset folder")
    prep.add_argument("source", help="MUSDB18-HQ, MoisesDB(-like) or a folder of lossless mixtures")
    prep.add_argument("--out", required=True)
    prep.add_argument("--layout", default="auto", choices=["auto", "musdb", "moisesdb", "folder", "real"])
    prep.add_argument("--workers", type=int, default=1, help="tracks decoded in parallel (default: 1)")
    prep.add_argument("--sample-rate", type=int, default=44100)
    prep.add_argument("-q", "--quiet", action="store_true")
    data.set_defaults(func=_cmd_data)

    ev = sub.add_parser("evaluate", help="score restorations (SDR, SI-SNR, LSD, ViSQOL) or run the paper's evaluation")
    ev.add_argument("--reference", help="clean reference file")
    ev.add_argument("--estimate", help="file to score (aligned to the reference first)")
    ev.add_argument("--degraded", help="the MP3-damaged input, for LSD above its cutoff")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--data", help="dataset folder: degrade its test excerpts, restore and score them")
    ev.add_argument("--checkpoint", nargs="+", help="models to evaluate with --data")
    ev.add_argument("--bitrates", default="24,32,48,64,96,128")
    ev.add_argument("--out", help="report folder (CSV, JSON, Markdown table, plots); resumable")
    ev.add_argument("--workers", type=int, default=2)
    ev.add_argument("--excerpt-seconds", type=float, default=10.0)
    ev.add_argument("--per-track", type=int, default=1, help="excerpts per track and group")
    ev.add_argument("--split", choices=("test", "valid"), default="test",
                    help="tracks to score with --data: test (the report) or valid (to choose among candidates)")
    ev.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (slow)")
    ev.add_argument("--bf16", action="store_true", help="also score each model in bfloat16 (name-bf16)")
    ev.add_argument("--int8", action="store_true", help="also score each model's int8 CPU path (name-int8)")
    ev.add_argument("-q", "--quiet", action="store_true")
    ev.set_defaults(func=_cmd_evaluate)

    bench = sub.add_parser("benchmark", help="parameters, MACs, RTF and peak memory of a model")
    which = bench.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint")
    which.add_argument("--config", help="a built-in config: apollo-v1, apollo-paper, tiny")
    bench.add_argument("--seconds", type=float, default=10.0)
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--channels", type=int, default=2)
    bench.add_argument("--repeats", type=int, default=5)
    bench.add_argument("--batch", type=int, default=1, help="clips per forward pass (GPU throughput; default: 1)")
    bench.add_argument("--threads", type=int)
    _add_speed_options(bench)
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(func=_cmd_benchmark)

    train = sub.add_parser("train", help="train a generator with the paper's GAN recipe (torchrun for many GPUs)")
    train.add_argument("--config", required=True, help="YAML recipe, e.g. configs/apollo-paper.yaml")
    train.add_argument("--run-dir", required=True, help="folder for checkpoints, metrics, samples")
    train.add_argument("--resume", action="store_true", help="continue from run-dir/last.pt")
    train.add_argument("--time-limit", type=_positive_seconds, metavar="SECONDS",
                       help="stop cleanly (checkpoint written) after this many seconds of training")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set schedule.max_steps=100")
    train.add_argument("-q", "--quiet", action="store_true")
    train.set_defaults(func=_cmd_train)
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
