"""Scores a model on the bundled example's music (examples/make_example.py) at each bitrate.

    python benchmarks/example_scores.py [--checkpoint PATH] [--seconds 4]

The music is synthesised, so the clean reference exists; it is coded by LAME at 24, 32, 64 and
128 kbps, restored (default: the shipped model) and scored against the reference.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from apollo import degrade, metrics
from apollo.api import Restorer

RATE = 44100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="model to score (default: the shipped model)")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    path = Path(__file__).resolve().parents[1] / "examples" / "make_example.py"
    spec = importlib.util.spec_from_file_location("make_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    clean = module.synth(seconds=args.seconds).T
    restorer = Restorer(args.checkpoint, device="cpu")
    print("kbps  ViSQOL mp3 -> model   LSD mp3 -> model   SI-SNR mp3 -> model")
    for kbps in (24, 32, 64, 128):
        coded = degrade.mp3(clean, RATE, kbps)
        restored, _ = restorer.restore(coded, RATE, bitrate=kbps)
        scores = [(f(clean, coded), f(clean, restored)) for f in (
            lambda r, e: metrics.visqol(r, e, RATE), lambda r, e: metrics.lsd(r, e, RATE), metrics.si_snr)]
        print(f"{kbps:4d}  " + "   ".join(f"{a:6.2f} -> {b:6.2f}" for a, b in scores))


if __name__ == "__main__":
    main()
