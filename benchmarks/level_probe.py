"""How the generator depends on the input level: the measurements behind ApolloConfig.normalize_peak.

    python benchmarks/level_probe.py --data corpus/real \
        --checkpoint runs/candidates/v2-step200.safetensors --level-checkpoint stream \
        --out docs/level_probe.json

1. For each validation excerpt (peak 0.9, as `apollo evaluate` makes them) at 24 and 128 kbps:
   ViSQOL, LSD and SI-SNR of --checkpoint restoring the MP3 as it is and at peak 1.
2. For each validation excerpt at 128 kbps: the 14-16 and 18-20 kHz level errors
   (apollo/diagnostics.py) of --level-checkpoint at the excerpt's level and 20 dB lower.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from apollo import degrade, metrics
from apollo.api import Restorer
from apollo.diagnostics import diagnose
from apollo.evaluate import make_excerpts

RATE = 44100


def _restore(restorer: Restorer, coded: np.ndarray, gain: float) -> np.ndarray:
    out, _ = restorer.restore(coded * gain, RATE)
    return out / gain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder; its validation split is used")
    parser.add_argument("--checkpoint", required=True, help="model for part 1 (its normalize_peak is ignored)")
    parser.add_argument("--level-checkpoint", default="stream", help="model for part 2 (default: stream)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    excerpts = make_excerpts(args.data, RATE, split="valid")
    part1 = Restorer(args.checkpoint, device="cpu", segment=0)
    part1.model.config = dataclasses.replace(part1.model.config, normalize_peak=False)
    peak_rows = []
    for e in excerpts:
        for kbps in (24, 128):
            coded = degrade.mp3(e.audio, RATE, kbps)
            row = {"excerpt": e.name, "kbps": kbps, "peak": float(np.abs(e.audio).max())}
            for name, gain in (("as_is", 1.0), ("peak_1", 1.0 / float(np.abs(coded).max()))):
                est, _ = metrics.align(e.audio, _restore(part1, coded, gain), max_lag=2048)
                s = metrics.score(e.audio, est, RATE, degraded=coded, with_visqol=True)
                row[name] = {k: round(float(s[k]), 3) for k in ("visqol", "lsd", "si_snr")}
            peak_rows.append(row)
            print(row, flush=True)
    part2 = Restorer(args.level_checkpoint, device="cpu", segment=0)
    level_rows = []
    for e in excerpts:
        row = {"excerpt": e.name}
        for name, scale in (("as_is", 1.0), ("minus_20_db", 0.1)):
            ref = e.audio * scale
            coded = degrade.mp3(ref, RATE, 128)
            est, _ = metrics.align(ref, part2.restore(coded, RATE)[0], max_lag=2048)
            d = diagnose(ref, est, RATE, metrics.cutoff_hz(coded, RATE))
            row[name] = {band: round(d[band], 2) for band in ("level_14-16k", "level_18-20k") if band in d}
        level_rows.append(row)
        print(row, flush=True)
    gains = [r["peak_1"]["visqol"] - r["as_is"]["visqol"] for r in peak_rows]
    result = {"command": "python benchmarks/level_probe.py --data " + args.data + " --checkpoint " + args.checkpoint
              + " --level-checkpoint " + args.level_checkpoint + " --out " + args.out,
              "visqol_gain_at_peak_1": {"min": min(gains), "max": max(gains), "mean": float(np.mean(gains))},
              "peak_normalisation": peak_rows, "level_20_db_lower": level_rows}
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
