"""The overall level a model gives back, per encoding: LAME's CBR presets scale the input by 0.95
(up to 128 kbps; 0.97 at 192, none at 320 or VBR), and a model trained only on CBR pairs learns
to undo it everywhere. This measures, for validation excerpts, the least-squares gain that maps
the (aligned) MP3 and each model's restoration back onto the reference: 1.0 is level-neutral.

    python benchmarks/gain_probe.py --data corpus/real2 --excerpts 6 --checkpoint default \
        --out docs/evaluations/gain-probe.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

import numpy as np

from apollo import degrade, metrics
from apollo.api import Restorer
from apollo.evaluate import make_excerpts

RATE = 44100
ENCODINGS = ("cbr48", "cbr128", "cbr192", "vbr2", "vbr5")


def coded(audio: np.ndarray, encoding: str) -> np.ndarray:
    """The MP3-decoded excerpt: "cbrN" is CBR at N kbps, "vbrQ" LAME -V Q."""
    if encoding.startswith("cbr"):
        return degrade.mp3(audio, RATE, int(encoding[3:]))
    if encoding.startswith("vbr"):
        return degrade.mp3(audio, RATE, None, vbr=int(encoding[3:]))
    raise ValueError(f"unknown encoding {encoding!r}: cbrN or vbrQ")


def gain_back(reference: np.ndarray, estimate: np.ndarray) -> float:
    """The least-squares gain g minimising |reference - g * estimate| after alignment."""
    est, _ = metrics.align(reference, estimate, max_lag=2048)
    return float((reference * est).sum() / max(float((est * est).sum()), 1e-20))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder (its validation split is used)")
    parser.add_argument("--checkpoint", nargs="+", default=["default"], help="models (files or built-in names)")
    parser.add_argument("--excerpts", type=int, default=6, help="validation excerpts (default 6)")
    parser.add_argument("--encodings", default=",".join(ENCODINGS),
                        help=f"comma-separated (default {','.join(ENCODINGS)})")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    encodings = args.encodings.split(",")
    excerpts = make_excerpts(args.data, split="valid")[: args.excerpts]
    if not excerpts:
        parser.error(f"{args.data}: no validation excerpts")
    models = {c: Restorer(c, device="cpu", segment=0, threads=args.threads) for c in args.checkpoint}
    gains: dict[str, dict[str, list[float]]] = {s: {e: [] for e in encodings} for s in ("mp3", *models)}
    for excerpt in excerpts:
        for encoding in encodings:
            mp3 = coded(excerpt.audio, encoding)
            gains["mp3"][encoding].append(gain_back(excerpt.audio, mp3))
            for name, restorer in models.items():
                # a model told bitrates gets CBR's; a VBR file's (its frames' mean) is not known here
                kbps = int(encoding[3:]) if encoding.startswith("cbr") else None
                gains[name][encoding].append(gain_back(excerpt.audio, restorer.restore(mp3, RATE, bitrate=kbps)[0]))
    report = {"command": shlex.join(["python", "benchmarks/gain_probe.py", *(argv or sys.argv[1:])]),
              "excerpts": [e.name for e in excerpts],
              "mean_gain_back": {s: {e: round(float(np.mean(v)), 4) for e, v in per.items()}
                                 for s, per in gains.items()},
              "gain_back": {s: {e: [round(x, 4) for x in v] for e, v in per.items()} for s, per in gains.items()}}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print("gain back (1.0 = the reference's level)", *encodings, sep="\t")
    for system, per in report["mean_gain_back"].items():
        print(system, *(f"{per[e]:.4f}" for e in encodings), sep="\t")


if __name__ == "__main__":
    main()
