"""The `apollo` command line: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import math
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from .audio import STDERR_LOCK, print_stderr
from .data.realmusic import EDITIONS
from .inference import PRECISIONS
from .optional import MissingExtra
from .states import CheckpointError


def _cmd_info(args: argparse.Namespace) -> int:
    from .pretrained import count_parameters, load_model

    model = load_model(args.checkpoint)
    config = model.config
    print(f"checkpoint: {args.checkpoint}")
    for key, value in config.to_dict().items():
        if key == "unknown":  # a whole second config: its size here, its fields in the file
            value = (f"a {config.unknown.num_blocks}-block generator, feature_dim {config.unknown.feature_dim}, "
                     "restores the inputs of unknown bitrate (WAV/FLAC)")
        print(f"  {key}: {value}")
    layout = ", ".join(f"{n} x {w} bins" for n, w in config.bands)
    print(f"  bands: {config.num_bands} ({layout}); window {config.window}, hop {config.hop}")
    print(f"parameters: {count_parameters(model):,}")
    return 0


LONG_ONE_PASS_SECONDS = 60.0  # --segment 0 beyond this: memory grows with the file (~1.6 GB a minute)


def _cmd_restore(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import Restorer, dark_source_message
    from .audio import AudioError, probe, subtype_for
    from .outputs import Claim, check_output, output_file, plan

    bad_output = check_output(args.inputs, args.output)
    if bad_output:
        return _fail(bad_output, 2)
    fmt = args.format or (Path(args.output).suffix.lower().lstrip(".") if output_file(args.inputs, args.output)
                          else "flac")
    if output_file(args.inputs, args.output) and Path(args.output).suffix.lower().lstrip(".") != fmt:
        return _fail(f"-o {args.output} does not end in .{fmt} (--format {fmt})", 2)
    bits = args.bits or ("32f" if fmt == "wav" else "24")
    if args.segment > 0 and 2 * args.overlap > args.segment:
        return _fail(f"--overlap {args.overlap:g} s is more than half of --segment {args.segment:g} s: "
                     "neighbouring chunks would crossfade over more than they keep", 2)
    try:
        subtype_for(fmt, bits)
        restorer = Restorer(args.checkpoint, device=args.device, segment=args.segment, overlap=args.overlap,
                            batch_size=args.batch_size, clip=args.clip, precision=args.precision,
                            compile=args.compile, threads=args.threads)
    except (AudioError, ValueError) as err:
        return _fail(str(err), 2)
    jobs = plan(args.inputs, args.output, fmt)
    bars = not args.quiet and sys.stderr.isatty()  # bars only on a terminal: logs get plain lines

    def say(message: str, error: bool = False) -> None:
        if error:
            with STDERR_LOCK:
                tqdm.write(message, file=sys.stderr)
        elif not args.quiet:
            tqdm.write(message, file=sys.stdout)

    infos = {}  # probed once: for the progress totals and for restoring
    for job in jobs:
        if job.error is None:
            try:
                infos[job.src] = probe(job.src)
            except AudioError:
                pass  # restore_file probes again and reports the error in its place
    unknown = [src for src, info in infos.items() if not info.is_mp3]
    if restorer.told_bitrate and args.bitrate is None and unknown and not args.quiet:
        # the dark-source rule and the per-bitrate fill need the bitrate, which only an MP3's frames carry
        which = (f"{unknown[0]} is not an MP3" if len(unknown) == 1 else
                 f"{unknown[0]} and {len(unknown) - 1} more input{'s' if len(unknown) > 2 else ''} are not MP3s")
        print_stderr(f"apollo: note: {which}, so the model is not told the bitrate and may fill music dark at the "
                     "source as if a codec had cut it; if decoded from a CBR MP3, --bitrate KBPS restores it as "
                     "that MP3")
    overall = tqdm(total=round(sum(i.duration for i in infos.values()), 1), unit="s", desc="all files",
                   disable=not bars, position=0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]")
    failed = skipped = 0
    for job in jobs:
        err = job.error
        if err is None and job.dst is not None:
            if job.dst.exists() and not args.overwrite:
                skipped += 1
                say(f"skipped {job.src}: {job.dst} exists (--overwrite replaces it)")
                overall.update(round(infos[job.src].duration, 1) if job.src in infos else 0)
                continue
            try:
                claim = Claim.take(job.dst)
            except OSError as error:
                failed += 1
                say(f"apollo: error: {job.dst.parent}: output folder is not writable ({error.strerror or error})",
                    error=True)
                continue
            if isinstance(claim, str) or (job.dst.exists() and not args.overwrite):
                # another run holds it, or finished it since we looked
                skipped += 1
                say(f"skipped {job.src}: {job.dst} " + (f"is being restored by {claim}" if isinstance(claim, str)
                                                         else "exists (--overwrite replaces it)"))
                if not isinstance(claim, str):
                    claim.release()
                continue
            duration = infos[job.src].duration if job.src in infos else 0.0
            if args.segment == 0 and duration > LONG_ONE_PASS_SECONDS:
                say(f"apollo: warning: --segment 0 restores {job.src} ({duration / 60:.1f} min) in one pass: memory "
                    "grows with its length (~1.6 GB a minute with the default model); --segment 10 keeps it flat",
                    error=True)
            bar = tqdm(total=round(duration, 1), unit="s", desc=job.src.name[:40], disable=not bars,
                       position=1, leave=False,
                       bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s [{rate_fmt}]")

            def step(seconds: float, bar=bar) -> None:  # noqa: ANN001
                bar.update(seconds)
                overall.update(seconds)

            def gain(peak: float, src=job.src) -> None:  # noqa: ANN001
                import math

                say(f"{src}: restored peak {peak:.3f}, whole file scaled by {-20 * math.log10(peak):.2f} dB "
                    "(--clip rescale; --clip clamp or none keep the level)")

            def dark(limit_hz: float, rule_hz: float, src=job.src) -> None:  # noqa: ANN001
                say(f"{src}: {dark_source_message(limit_hz, rule_hz)}")

            try:
                restorer.restore_file(job.src, job.dst, fmt=fmt, bits=bits, overwrite=args.overwrite,
                                      on_progress=step, info=infos.get(job.src), on_rescale=gain,
                                      bitrate=args.bitrate, on_dark=dark, out_rate=args.out_rate)
            except AudioError as error:
                err = str(error)
            finally:
                bar.close()
                claim.release()
        if err is not None:
            failed += 1
            say(f"apollo: error: {err}", error=True)
        else:
            say(f"restored {job.src} -> {job.dst}")
    overall.close()
    if skipped and not args.quiet:
        print_stderr(f"apollo: {skipped} of {len(jobs)} file(s) skipped (restored already, or by another run)")
    if failed:
        print_stderr(f"apollo: {failed} of {len(jobs)} file(s) failed")
    return 1 if failed else 0


def _cmd_stream(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from .api import resolve_device
    from .streaming import StreamingRestorer

    if args.channels < 1:
        return _fail("--channels must be at least 1", 2)
    torch.set_num_threads(args.threads)
    try:
        restorer = StreamingRestorer(args.checkpoint, device=resolve_device(args.device), channels=args.channels,
                                     compile=args.compile, bitrate=args.bitrate)
    except ValueError as err:
        return _fail(str(err), 2)
    rate = restorer.sample_rate
    if args.rate != rate:
        return _fail(f"--rate {args.rate}: the model restores {rate} Hz audio and apollo stream does not resample; "
                     f"convert the stream first, e.g. ffmpeg -i IN -ar {rate} -ac {args.channels} -f f32le -", 2)
    if not args.quiet:
        told = f", told {args.bitrate:g} kbps" if args.bitrate and restorer.model.config.bitrate_classes else ""
        print_stderr(f"apollo stream: {args.checkpoint}{told}, {rate} Hz, {args.channels} channel(s) of float32 "
                     f"little-endian PCM; latency {restorer.latency} samples ({restorer.latency_ms:.1f} ms)"
                     + (", trimmed from the output (--align)" if args.align else ""))
    frame_bytes = 4 * args.channels
    want = max(1, round(args.block_ms * rate / 1000)) * frame_bytes
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    skip = restorer.latency if args.align else 0
    pending = b""

    def write(block: np.ndarray) -> None:
        nonlocal skip
        cut = min(skip, block.shape[1])
        skip -= cut
        if block.shape[1] > cut:
            sink.write(np.ascontiguousarray(block[:, cut:].T, dtype="<f4").tobytes())
            sink.flush()

    try:
        while True:
            data = source.read1(want) if hasattr(source, "read1") else source.read(want)
            if not data:
                break
            pending += data
            usable = len(pending) - len(pending) % frame_bytes
            if usable:
                samples = np.frombuffer(pending[:usable], "<f4").reshape(-1, args.channels).T
                write(restorer.process(samples))
                pending = pending[usable:]
        write(restorer.flush())
    except BrokenPipeError:
        sys.stdout = None  # the reader went away: nothing left to write to, and nothing to report
        return 0
    if pending:
        return _fail(f"the input ended {len(pending)} byte(s) into a sample frame: is it interleaved float32 "
                     f"little-endian with {args.channels} channel(s)? (the complete frames were restored)", 1)
    return 0


def _cmd_web(args: argparse.Namespace) -> int:
    from .web import Service, require_web, serve

    if not 0 < args.port < 65536:
        return _fail(f"--port must be 1-65535, got {args.port}", 2)
    if args.max_upload_mb <= 0 or args.keep_minutes <= 0:
        return _fail("--max-upload-mb and --keep-minutes must be positive", 2)
    require_web()
    from .api import resolve_device

    try:
        resolve_device(args.device)  # now, not at the first upload
        service = Service(args.checkpoints, device=args.device, threads=args.threads,
                          max_upload_mb=args.max_upload_mb, keep_minutes=args.keep_minutes)
    except ValueError as err:
        return _fail(str(err), 2)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print_stderr(f"apollo web: http://{shown}:{args.port}/ (Ctrl-C stops it; uploads are deleted then)")
    serve(service, args.host, args.port)
    return 0


def _fail(message: str, code: int) -> int:
    print_stderr(f"apollo: error: {message}")
    return code


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
        return _fail(str(err), 1)
    if not args.quiet:
        what = f"VBR -V{args.vbr}" if args.vbr is not None else f"{args.bitrate} kbps"
        print(f"wrote {dst} ({what} MP3 damage)")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    try:
        return _data(args)
    except (FileNotFoundError, NotADirectoryError, ValueError, RuntimeError) as err:  # bad folders, no soundfonts
        return _fail(str(err), 1)


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from .data.synth import synth_corpus

        count = synth_corpus(args.out, args.hours, seed=args.seed, track_seconds=args.track_seconds,
                             workers=args.workers, progress=not args.quiet, instruments=args.instruments,
                             production=not args.no_production)
        print(f"{count} tracks in {args.out}")
        return 0
    if args.data_command == "instruments":
        from .data.drumkits import fetch_instruments

        kits, soundfonts = fetch_instruments(args.out, soundfont=not args.no_soundfont)
        print(f"{len(kits)} drum kits ({', '.join(k.name for k in kits)}); soundfonts: "
              f"{', '.join(f.name for f in soundfonts) or 'none'}; in {args.out}")
        return 0
    if args.data_command == "real":
        from .data.realmusic import build_corpus, summary

        packages = tuple(args.packages) if args.packages else EDITIONS[args.edition]
        manifest = build_corpus(args.out, packages, workers=args.workers, progress=not args.quiet)
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
            return _fail("--data needs --checkpoint and --out", 2)
        from .evaluate import evaluate_dataset

        bitrates = args.bitrates
        try:
            summary = evaluate_dataset(args.data, args.checkpoint, args.out, bitrates=bitrates, workers=args.workers,
                                       seconds=args.excerpt_seconds, per_track=args.per_track,
                                       with_visqol=not args.no_visqol, progress=not args.quiet,
                                       precisions=tuple(p for p in ("bf16", "int8", "untold") if getattr(args, p)),
                                       split=args.split, threads=args.threads)
        except ValueError as err:
            return _fail(str(err), 2)
        print((Path(args.out) / "table.md").read_text())
        return 0 if summary["count"] else 1
    if not (args.reference and args.estimate):
        return _fail("give --reference and --estimate, or --data", 2)
    try:
        ref, ref_info = read(args.reference)
        est, est_info = read(args.estimate)
        degraded, d_info = read(args.degraded) if args.degraded else (None, None)
    except AudioError as err:
        return _fail(str(err), 1)
    est = resample(est, est_info.sample_rate, ref_info.sample_rate)
    if est.shape[0] != ref.shape[0]:
        est = np.repeat(est.mean(0, keepdims=True), ref.shape[0], axis=0)
    est, lag = metrics.align(ref, est, max_lag=int(0.1 * ref_info.sample_rate))
    if degraded is not None:
        degraded = resample(degraded, d_info.sample_rate, ref_info.sample_rate)
    from .evaluate import score_aligned

    result = {"lag_fixed_samples": lag,
              **score_aligned(ref, est, ref_info.sample_rate, degraded, with_visqol=not args.no_visqol)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        for key, value in result.items():
            print(f"{key:18s} {value:.4f}" if isinstance(value, float) else f"{key:18s} {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import write_demo

    if args.excerpts < 1 or args.seconds <= 0:
        return _fail("--excerpts must be at least 1 and --seconds positive", 2)
    command = "apollo demo " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["demo"] else ""
    say = None if args.quiet else (lambda step: print_stderr(f"apollo demo: {step}"))
    try:
        write_demo(args.data, args.checkpoint, args.out, bitrates=args.bitrates, excerpts=args.excerpts,
                   seconds=args.seconds, split=args.split, with_visqol=not args.no_visqol, command=command,
                   on_step=say)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        return _fail(str(err), 2)
    if not args.quiet:
        print(f"wrote {Path(args.out) / 'index.html'}")
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import json

    from .benchmark import benchmark

    try:
        result = benchmark(args.checkpoint, args.config, seconds=args.seconds, device=args.device,
                           channels=args.channels, repeats=args.repeats, threads=args.threads,
                           precision=args.precision, batch=args.batch, compile=args.compile,
                           bitrate=args.bitrate)
    except ValueError as err:
        return _fail(str(err), 2)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"model {result['model']}: {result['parameters']:,} parameters, "
              f"{result['gmacs_per_second_stereo']} GMAC per stereo second")
        print(f"RTF {result['rtf']:.3f} ({result['ms_per_second']} ms per second of audio) on {result['device']}, "
              f"{result['precision']}, {result['threads']} threads, batch {result['batch']} x {result['seconds']} s x "
              f"{result['channels']} ch, median of {result['repeats']}; peak memory {result['peak_memory_mb']} MB"
              + (f"; told {result['bitrate']:g} kbps" if result["bitrate"] else ""))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import Trainer, dump_config, load_config, parse_overrides

    try:
        overrides = parse_overrides(args.set or [])
    except ValueError as err:
        return _fail(str(err), 2)
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    if not args.resume and (run_dir / "last.pt").exists():
        return _fail(f"{run_dir} already holds a run; pass --resume or choose another --run-dir", 2)
    try:
        config = load_config(args.config, overrides)
        trainer = Trainer(config, args.run_dir, resume=args.resume, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as err:
        return _fail(str(err), 2)
    if trainer.rank == 0:
        (run_dir / "config.yaml").write_text(dump_config(config))
    result = trainer.fit(time_limit=args.time_limit)
    if trainer.rank == 0 and not args.quiet:
        why = " at the time limit" if result["out_of_time"] else ""
        if math.isfinite(result["best_valid"]):
            kept = (f"best validation reconstruction {result['best_valid']:.4f}; "
                    f"weights: {run_dir / 'generator-best.safetensors'}")
        else:  # no epoch ended, so there is no best: say where the weights are
            kept = f"no validation yet (it runs at each epoch's end); weights: {run_dir / 'generator-last.safetensors'}"
        print(f"stopped{why} at step {result['step']} (epoch {result['epoch']}); {kept}")
    return 0


def _bitrates(text: str) -> tuple[int, ...]:
    from .degrade import MPEG1_KBPS, MPEG2_KBPS

    try:
        values = tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated kbps expected, e.g. 24,32,128; got {text!r}") from None
    wrong = [b for b in values if b not in (*MPEG1_KBPS, *MPEG2_KBPS)]
    if wrong:
        raise argparse.ArgumentTypeError(f"not MP3 bitrates: {', '.join(map(str, wrong))}")
    return values


def _positive(unit: str, short: str, zero: bool = False) -> Callable[[str], float]:
    """An argparse type for a finite number of `unit` that must be more than 0, or with `zero`
    at least 0 (`short`: its symbol). NaN and infinity are refused: float() takes them, and they
    would reach the code as a silent one-pass restore or an OverflowError."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number of {unit}: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"not a finite number of {unit}: {text!r}")
        if not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"must be {'at least' if zero else 'more than'} 0 {short}, got {text}")
        return value

    return parse


_positive_seconds = _positive("seconds", "seconds")
_seconds_or_zero = _positive("seconds", "seconds", zero=True)
_positive_ms = _positive("milliseconds", "ms")
_positive_minutes = _positive("minutes", "minutes")
_positive_hours = _positive("hours", "hours")
_positive_mb = _positive("megabytes", "MB")


def _count(unit: str) -> Callable[[str], int]:
    """An argparse type for a whole number of at least 1 (threads, worker processes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number of {unit}: {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
        return value

    return parse


def _kbps(text: str) -> float:
    """The argparse type of --bitrate: kbps between 8 and 320, the range MP3 allows."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of kbps: {text!r}") from None
    if not 8 <= value <= 320:
        raise argparse.ArgumentTypeError(f"{text} kbps: MP3 bitrates are 8-320")
    return value


def _output_rate(text: str) -> int | str:
    """The argparse type of restore's --out-rate: model, input, or a sample rate in Hz."""
    from .api import NAMED_RATES, check_output_hz

    if text in NAMED_RATES:
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not model, input or a rate in Hz: {text!r}") from None
    try:
        return check_output_hz(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


_thread_count = _count("threads")
_worker_count = _count("worker processes")


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
    info.add_argument("checkpoint", nargs="?", default="default",
                      help="checkpoint file (safetensors, pytorch_model.bin, .ckpt) or a built-in model: default "
                           "(the shipped one, when no checkpoint is given), stream (the causal one), tiny-test")
    info.set_defaults(func=_cmd_info)

    restore = sub.add_parser("restore", help="restore MP3-damaged audio files or folders",
                             description="Restore the high band and transients an MP3 encoder removed. "
                                         "Outputs are written at the model's sample rate unless --out-rate "
                                         "says otherwise.")
    restore.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files or folders (searched recursively)")
    restore.add_argument("-o", "--output", default="restored",
                         help="output folder, mirroring input folders (default: ./restored); with one input file "
                              "also an output file name ending in .flac or .wav")
    restore.add_argument("--checkpoint",
                         help="model weights: a file (safetensors, the authors' pytorch_model.bin, .ckpt) or a "
                              "built-in model: default (the shipped one; the default), stream (causal), tiny-test "
                              "(random weights, for tests)")
    restore.add_argument("--segment", type=_seconds_or_zero, default=10.0,
                         help="seconds restored per chunk; 0 = whole file at once (default: 10)")
    restore.add_argument("--overlap", type=_seconds_or_zero, default=0.05,
                         help="crossfade seconds between chunks (default: 0.05)")
    restore.add_argument("--batch-size", type=int, default=1, help="chunks per forward pass (default: 1)")
    restore.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default: auto")
    restore.add_argument("--threads", type=_thread_count,
                         help="CPU threads for the model (default: the cores other programs leave idle, "
                              "re-checked before every chunk)")
    restore.add_argument("--format", choices=["flac", "wav"],
                         help="output format (default: flac, or the extension of -o NAME.wav)")
    restore.add_argument("--bits", choices=["16", "24", "32f"],
                         help="sample format (default: 24 for flac, 32f for wav)")
    restore.add_argument("--bitrate", type=_kbps, metavar="KBPS",
                         help="the CBR MP3 bitrate the inputs were decoded from, for WAV or FLAC made from an MP3 "
                              "(default: read from an MP3's frame headers, and its encoder's lowpass from its LAME "
                              "tag, else unknown; leave it out for a VBR MP3's WAV); models not told the bitrate "
                              "(all but the default) ignore it")
    restore.add_argument("--out-rate", type=_output_rate, default="model", metavar="{model,input,HZ}",
                         help="output sample rate: model (the model's, which it restores at: 44100 for the built-in "
                              "models), input (each file's own; under the model's rate it cuts the restored band "
                              "at half that rate), or a rate in Hz (default: model)")
    restore.add_argument("--clip", default="rescale", choices=["rescale", "clamp", "none"],
                         help="samples beyond +-1: rescale the file, clamp, or keep (default: rescale)")
    _add_speed_options(restore)
    restore.add_argument("--overwrite", action="store_true",
                         help="replace existing output files (default: skip them, so a rerun finishes the job)")
    restore.add_argument("-q", "--quiet", action="store_true", help="no progress bars or messages")
    restore.set_defaults(func=_cmd_restore)

    deg = sub.add_parser("degrade", help="apply real MP3 damage (LAME encode + decode, zero lag)",
                         description="Encode a file with LAME and decode it again, aligned to the input (zero lag, "
                                     "same length and rate), or write the MP3 stream itself.")
    deg.add_argument("input", help="audio file to damage (any format `apollo restore` reads)")
    deg.add_argument("output", help=".wav/.flac: decoded and aligned audio; .mp3: the encoded stream")
    rate = deg.add_mutually_exclusive_group()
    rate.add_argument("--bitrate", type=int, default=128, help="CBR kbps, 8-320 (default: 128)")
    rate.add_argument("--vbr", type=int, choices=range(10), metavar="0-9", help="LAME VBR quality -V instead of CBR")
    deg.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    deg.add_argument("-q", "--quiet", action="store_true", help="no message on success")
    deg.set_defaults(func=_cmd_degrade)

    data = sub.add_parser("data", help="build training data")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    synth = data_sub.add_parser("synth", help="render an offline multi-stem corpus with FluidSynth")
    synth.add_argument("--out", required=True, help="corpus folder to write (one folder of stems per track)")
    synth.add_argument("--hours", type=_positive_hours, default=1.0, help="total length of the corpus (default: 1)")
    synth.add_argument("--seed", type=int, default=0, help="seed of every random choice (default: 0)")
    synth.add_argument("--track-seconds", type=_positive_seconds, default=30.0,
                       help="length of each track (default: 30)")
    synth.add_argument("--workers", type=_worker_count, default=2, help="tracks rendered in parallel (default: 2)")
    synth.add_argument("--instruments", help="recorded drum kits and the lossless soundfont (apollo data instruments "
                                             "--out DIR): used beside the system soundfonts")
    synth.add_argument("--no-production", action="store_true",
                       help="no production chain (EQ, compression, saturation, reverb, mastering)")
    synth.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    inst = data_sub.add_parser("instruments", help="fetch recorded drum kits (hydrogen-drumkits) and the lossless "
                                                   "MuseScore soundfont from Debian (resumable)")
    inst.add_argument("--out", required=True, help="folder, e.g. corpus/instruments")
    inst.add_argument("--no-soundfont", action="store_true", help="only the drum kits (the soundfont is 330 MB)")
    real = data_sub.add_parser("real", help="fetch DFSG-free recorded music from Debian and keep the full-band "
                                            "tracks (resumable)")
    real.add_argument("--out", required=True, help="corpus folder, e.g. corpus/real")
    real.add_argument("--edition", type=int, choices=sorted(EDITIONS), default=1,
                      help="which checked package set: 1, the music packages (the corpus of every result "
                           "before 2026-11-27); 2, those and the soundtracks of 10 game data packages; 3, "
                           "those and 13 more game soundtracks (docs/real-music.md; default: 1)")
    real.add_argument("--packages", nargs="+", metavar="PACKAGE",
                      help="Debian packages to use instead of an edition's")
    real.add_argument("--workers", type=_worker_count, default=2, help="files measured in parallel (default: 2)")
    real.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    prep = data_sub.add_parser("prepare", help="silence-trimmed training cache from a dataset folder")
    prep.add_argument("source", help="MUSDB18-HQ, MoisesDB(-like), the real-music corpus or a folder of lossless "
                                     "mixtures")
    prep.add_argument("--out", required=True, help="cache folder to write or extend (resumable)")
    prep.add_argument("--layout", default="auto", choices=["auto", "musdb", "moisesdb", "folder", "real"],
                      help="how to read SOURCE (default: auto, from its files)")
    prep.add_argument("--workers", type=_worker_count, default=1, help="tracks decoded in parallel (default: 1)")
    prep.add_argument("--sample-rate", type=int, default=44100, help="rate of the cache, the model's (default: 44100)")
    prep.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    data.set_defaults(func=_cmd_data)

    ev = sub.add_parser("evaluate", help="score restorations (SDR, SI-SNR, LSD, ViSQOL) or run the paper's evaluation",
                        description="Two modes. One file: --reference and --estimate (and --degraded) print its "
                                    "scores. A dataset: --data, --checkpoint and --out degrade its excerpts at each "
                                    "bitrate, restore them with each model and write the paper's tables and plots.")
    ev.add_argument("--reference", help="one file: the clean reference")
    ev.add_argument("--estimate", help="one file: the file to score (aligned to the reference first)")
    ev.add_argument("--degraded", help="one file: the MP3-damaged input, for LSD above its cutoff")
    ev.add_argument("--json", action="store_true", help="one file: print the scores as JSON")
    ev.add_argument("--data", help="dataset: folder whose test (or --split valid) excerpts are degraded, restored and "
                                   "scored")
    ev.add_argument("--checkpoint", nargs="+", help="dataset: models to evaluate (files or built-in names)")
    ev.add_argument("--bitrates", default=(24, 32, 48, 64, 96, 128), type=_bitrates,
                    help="dataset: comma-separated MP3 kbps (default: the paper's 24,32,48,64,96,128)")
    ev.add_argument("--out", help="dataset: report folder (CSV, JSON, Markdown table, plots); resumable")
    ev.add_argument("--workers", type=_worker_count, default=2,
                    help="dataset: parallel worker processes (default: 2)")
    ev.add_argument("--threads", type=_thread_count,
                    help="dataset: CPU threads per worker (default: 1 with several workers, else PyTorch's choice); "
                         "e.g. --workers 1 --threads 1 beside a training run")
    ev.add_argument("--excerpt-seconds", type=_positive_seconds, default=10.0,
                    help="dataset: excerpt length (default: 10)")
    ev.add_argument("--per-track", type=int, default=1, help="dataset: excerpts per track and group (default: 1)")
    ev.add_argument("--split", choices=("test", "valid"), default="test",
                    help="tracks to score with --data: test (the report) or valid (to choose among candidates)")
    ev.add_argument("--no-visqol", action="store_true", help="both: skip ViSQOL (the slow metric)")
    ev.add_argument("--bf16", action="store_true", help="also score each model in bfloat16 (name-bf16)")
    ev.add_argument("--int8", action="store_true", help="also score each model's int8 CPU path (name-int8)")
    ev.add_argument("--untold", action="store_true",
                    help="also score each model without telling it the MP3's bitrate, as WAV/FLAC input is "
                         "restored (name-untold; the same as name for models not told bitrates)")
    ev.add_argument("-q", "--quiet", action="store_true", help="dataset: no progress bar")
    ev.set_defaults(func=_cmd_evaluate)

    demo = sub.add_parser("demo", help="a static page of examples: reference / MP3 / restored players, "
                                       "spectrograms and scores per bitrate",
                          description="Like the paper's project page: picks excerpts of a dataset's test (or valid) "
                                      "split, makes each an MP3 at each bitrate, restores it with each model and "
                                      "writes a self-contained folder (index.html, Ogg Vorbis audio, spectrograms, "
                                      "demo.json with the scores).")
    demo.add_argument("--data", required=True, help="dataset folder (as for apollo evaluate --data)")
    demo.add_argument("--checkpoint", nargs="+", default=["default"], help="models to show (default: default)")
    demo.add_argument("--out", required=True, help="a new (or empty) folder for the page")
    demo.add_argument("--bitrates", default=(24, 48, 128), type=_bitrates, help="MP3 kbps (default: 24,48,128)")
    demo.add_argument("--excerpts", type=int, default=2, help="excerpts, spread over the split (default: 2)")
    demo.add_argument("--seconds", type=_positive_seconds, default=5.0, help="excerpt length (default: 5)")
    demo.add_argument("--split", choices=("test", "valid"), default="test", help="default: test")
    demo.add_argument("--no-visqol", action="store_true", help="skip ViSQOL (the slow metric)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    demo.set_defaults(func=_cmd_demo)

    bench = sub.add_parser("benchmark", help="parameters, MACs, RTF and peak memory of a model")
    which = bench.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="model weights to time (a file or a built-in name)")
    which.add_argument("--config", help="a built-in config with random weights: apollo-v1, apollo-paper, tiny")
    bench.add_argument("--seconds", type=_positive_seconds, default=10.0,
                       help="length of each timed clip (default: 10)")
    bench.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default: cpu)")
    bench.add_argument("--channels", type=int, default=2, help="channels per clip (default: 2, stereo)")
    bench.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up; the median counts "
                                                              "(default: 5)")
    bench.add_argument("--batch", type=int, default=1, help="clips per forward pass (GPU throughput; default: 1)")
    bench.add_argument("--threads", type=_thread_count, help="CPU threads for the model (default: PyTorch's choice)")
    bench.add_argument("--bitrate", type=_kbps, metavar="KBPS",
                       help="time the path of an MP3 input of this bitrate, told to the model as apollo restore "
                            "tells it (default: unknown, as WAV/FLAC input); models not told bitrates ignore it")
    _add_speed_options(bench)
    bench.add_argument("--json", action="store_true", help="print the result as JSON")
    bench.set_defaults(func=_cmd_benchmark)

    stream = sub.add_parser(
        "stream", help="restore a live stream: raw float32 PCM from stdin to stdout, with a fixed delay",
        description="Restore a live stream with a causal model. Reads interleaved float32 little-endian PCM "
                    "from stdin and writes the restored stream in the same format to stdout as the input "
                    "arrives: the output is the input restored and delayed by the model's latency (the STFT "
                    "window, 20 ms with the built-in model). Example: ffmpeg -i http://radio/stream.mp3 "
                    "-f f32le -ar 44100 -ac 2 - | apollo stream | ffplay -f f32le -ar 44100 -ch_layout stereo -")
    stream.add_argument("--checkpoint", default="stream",
                        help="a causal model: a file or the built-in 'stream' (default); non-causal models are "
                             "refused")
    stream.add_argument("--rate", type=int, default=44100,
                        help="sample rate of the input; must be the model's (default: 44100)")
    stream.add_argument("--channels", type=int, default=2, help="interleaved channels (default: 2)")
    stream.add_argument("--bitrate", type=_kbps, metavar="KBPS",
                        help="the MP3 bitrate the stream was decoded from (an internet radio stream states it), "
                             "told to causal models trained with bitrate classes (the built-in stream model ignores "
                             "it); default: unknown")
    stream.add_argument("--block-ms", type=_positive_ms, default=10.0, metavar="MS",
                        help="most milliseconds of input read per step (default: 10); smaller blocks add no "
                             "latency, larger ones save overhead")
    stream.add_argument("--align", action="store_true",
                        help="drop the first latency samples, so that the output lines up with the input and has "
                             "its length (for files; a live player does not need it)")
    stream.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"], help="default: cpu")
    stream.add_argument("--threads", type=_thread_count, default=1,
                        help="CPU threads (default: 1; one core keeps the built-in model in real time)")
    stream.add_argument("--compile", action="store_true",
                        help="torch.compile the per-frame step: ~30 s to start, then ~1.5x faster")
    stream.add_argument("-q", "--quiet", action="store_true", help="no start-up line on stderr")
    stream.set_defaults(func=_cmd_stream)

    web = sub.add_parser("web", help="a local page: restore files, compare before and after, download",
                         description="Serve a page that restores dropped files, shows before/after spectrograms "
                                     "and an A/B player, and offers the result for download. Opens no browser; "
                                     "needs pip install \"apollo-restore[web]\".")
    web.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default: 127.0.0.1, this computer only; 0.0.0.0 exposes it to "
                          "the network on purpose)")
    web.add_argument("--port", type=int, default=8000, help="default: 8000")
    web.add_argument("--checkpoints", metavar="DIR",
                     help="also offer the checkpoint files in this server folder (the page picks by file name)")
    web.add_argument("--max-upload-mb", type=_positive_mb, default=500.0, help="largest upload (default: 500)")
    web.add_argument("--keep-minutes", type=_positive_minutes, default=60.0,
                     help="delete finished jobs and their files after this long (default: 60; all go at exit)")
    web.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"], help="default: auto")
    web.add_argument("--threads", type=_thread_count, help="CPU threads for the model (default: the idle cores)")
    web.set_defaults(func=_cmd_web)

    train = sub.add_parser("train", help="train a generator with the paper's GAN recipe (torchrun for many GPUs)")
    train.add_argument("--config", required=True,
                       help="YAML recipe, e.g. configs/apollo-paper.yaml, or a run's own config.yaml")
    train.add_argument("--run-dir", required=True, help="folder for checkpoints, metrics, samples")
    train.add_argument("--resume", action="store_true", help="continue from run-dir/last.pt")
    train.add_argument("--threads", type=_thread_count, help="CPU threads for training, e.g. 1 to leave a core free "
                                                   "(default: PyTorch's choice)")
    train.add_argument("--time-limit", type=_positive_seconds, metavar="SECONDS",
                       help="stop cleanly (checkpoint written) after this many seconds of training")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set schedule.max_steps=100")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    train.set_defaults(func=_cmd_train)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup path runs the same way."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    parser = build_parser()
    args = parser.parse_args(argv)
    handled = (signal.SIGTERM, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, _raise_terminated) for sig in handled}
    try:
        return args.func(args)
    except (CheckpointError, MissingExtra) as err:
        return _fail(str(err), 2)
    except KeyboardInterrupt as err:
        signum = err.signum if isinstance(err, Terminated) else signal.SIGINT
        print_stderr(f"apollo: interrupted ({signal.Signals(signum).name}); finished outputs are kept, "
                     "partial ones removed")
        return 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
