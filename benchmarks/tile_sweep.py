"""How fast a model restores with each CPU tile size (band_sequence.TILE_ELEMENTS), in turns.

    python benchmarks/tile_sweep.py [--checkpoint default] [--bitrate 24] [--rows 1024,2048,4096,8192,16384]
        [--seconds 10] [--rounds 4] [--threads 2] [--out docs/tile_sweep.json]

Each round times one restore_spectrum of the same stereo noise at every size in turn (after one
untimed call at that size), so every size sees the machine's drift alike; the report gives each
size's median over the rounds, and how far each size's output lies from the first size's (0.0: equal
to the bit). Sizes are given in rows of the model's features (rows x features = TILE_ELEMENTS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from apollo.model import band_sequence
from apollo.pretrained import load_model


def sweep(checkpoint: str, rows: list[int], seconds: float, rounds: int,
          bitrate: float | None) -> tuple[dict[int, list[float]], dict[int, float]]:
    """Seconds per restore_spectrum of `seconds` of stereo noise, per tile size in rows, one per round;
    and the largest difference of each size's output from the first size's (0.0: equal to the bit)."""
    model = load_model(checkpoint).eval()
    features = model.config.feature_dim
    torch.manual_seed(0)
    wav = 0.1 * torch.randn(2, int(44100 * seconds))
    told = None if bitrate is None else torch.tensor([bitrate])
    times: dict[int, list[float]] = {r: [] for r in rows}
    outputs: dict[int, torch.Tensor] = {}
    default = band_sequence.TILE_ELEMENTS
    try:
        with torch.no_grad():
            spec = model.stft(wav)
            for _ in range(rounds):
                for r in rows:
                    band_sequence.TILE_ELEMENTS = r * features
                    outputs[r] = model.restore_spectrum(spec, channels=2, bitrate=told)[0]
                    start = time.perf_counter()
                    model.restore_spectrum(spec, channels=2, bitrate=told)
                    times[r].append(time.perf_counter() - start)
    finally:
        band_sequence.TILE_ELEMENTS = default
    first = outputs[rows[0]]
    return times, {r: float((out - first).abs().max()) for r, out in outputs.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--bitrate", type=float, default=None, help="tell the model this bitrate (default: unknown)")
    parser.add_argument("--rows", default="1024,2048,4096,8192,16384")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [int(r) for r in args.rows.split(",")]
    times, differences = sweep(args.checkpoint, rows, args.seconds, args.rounds, args.bitrate)
    report = {"command": " ".join(["python benchmarks/tile_sweep.py", *argv]),
              "checkpoint": args.checkpoint, "bitrate": args.bitrate, "seconds_of_audio": args.seconds,
              "threads": args.threads,
              "median_seconds": {str(r): round(statistics.median(t), 3) for r, t in times.items()},
              "rounds": {str(r): [round(x, 3) for x in t] for r, t in times.items()},
              "max_abs_difference_from_first_size": {str(r): d for r, d in differences.items()}}
    for r in rows:
        print(f"{r:6d} rows: {report['median_seconds'][str(r)]:.3f} s  {report['rounds'][str(r)]}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
