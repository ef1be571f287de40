"""Does the kept band foretell how loud the music is above the cutoff, better than the model's fill?

    python benchmarks/level_foretell.py --data corpus/real2 corpus/real --checkpoint default \
        --bitrates 24,32 --out docs/evaluations/level-foretell-v13.json

A louder told fill (docs/default-model.md, "The band-level target with the told fill gain") gains
ViSQOL on the validation excerpts whose fill is short of the reference and loses it on those whose
fill is already as loud or louder, so a gain per input could serve both, if something the input holds
tells them apart. This reads the simplest such cue: the kept band's slope. For each validation
excerpt and bitrate, in each band from 4 to 16 kHz above the input's cutoff (bands silent in the
reference left out, as apollo.diagnostics does), it compares three levels (dB, long-term Welch
power of the mono downmix):

- reference: the clean excerpt's;
- model: the checkpoint's restoration, told the bitrate (as `apollo restore` restores an MP3);
- extrapolated: a straight line in dB against log2 frequency, fitted to the MP3 input's spectrum over
  the top octave of its kept band (half the cutoff up to 0.97 of it), carried on above the cutoff.

It reports each estimate's mean and mean absolute error against the reference, and how well the
extrapolation and the kept band's slope foretell the model's own error (the reference's level less
the model's): a correlation near 0 means no gain rule read from them can follow the music.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from apollo import degrade, metrics
from apollo.api import Restorer
from apollo.audio import resample
from apollo.diagnostics import LEVEL_BANDS, _band_power, _silent
from apollo.evaluate import make_excerpts

RATE = 44100
BANDS = tuple((lo, hi) for lo, hi in LEVEL_BANDS if lo >= 4000 and hi <= 16000)  # 4-6 ... 14-16 kHz


def extrapolate(freqs: np.ndarray, power: np.ndarray, cutoff: float) -> tuple[np.ndarray, float]:
    """The kept band's top octave as a straight line in dB against log2 f, over every frequency,
    and its slope (dB an octave)."""
    fit = (freqs >= cutoff / 2) & (freqs < cutoff * 0.97)
    slope, offset = np.polyfit(np.log2(freqs[fit]), 10 * np.log10(power[fit] + 1e-20), 1)
    return 10 ** ((slope * np.log2(np.maximum(freqs, 1.0)) + offset) / 10), float(slope)


def band_db(freqs: np.ndarray, power: np.ndarray, lo: float, hi: float) -> float:
    return float(10 * np.log10(power[(freqs >= lo) & (freqs < hi)].sum() + 1e-20))


def rows_for(restorer: Restorer, audio: np.ndarray, bitrate: int) -> list[dict]:
    """One row per band above the cutoff that the reference has: the three levels and the slope."""
    coded = degrade.mp3(audio, RATE, bitrate)
    out, out_rate = restorer.restore(coded, RATE, bitrate=bitrate)
    restored = resample(out, out_rate, RATE)
    cutoff = metrics.cutoff_hz(coded, RATE)
    freqs, ref = _band_power(audio, RATE)  # the diagnostics' own spectrum and silent-band rule
    _, kept = _band_power(coded, RATE)
    _, model = _band_power(restored, RATE)
    line, slope = extrapolate(freqs, kept, cutoff)
    rows = []
    for lo, hi in BANDS:
        in_band = (freqs >= lo) & (freqs < hi)
        if lo < cutoff or _silent(ref[in_band].sum(), ref.sum()):
            continue
        reference = band_db(freqs, ref, lo, hi)
        rows.append({"bitrate": bitrate, "band": f"{lo // 1000}-{hi // 1000}", "reference": reference,
                     "model": band_db(freqs, model, lo, hi), "extrapolated": band_db(freqs, line, lo, hi),
                     "slope": slope})
    return rows


def summarise(rows: list[dict]) -> dict:
    ref = np.array([r["reference"] for r in rows])
    model = np.array([r["model"] for r in rows])
    out: dict = {"bands": len(rows)}
    for name in ("model", "extrapolated"):
        err = np.array([r[name] for r in rows]) - ref
        out[name] = {"mean_error_db": float(err.mean()), "mean_abs_error_db": float(np.abs(err).mean()),
                     "correlation_with_reference": float(np.corrcoef(ref, ref + err)[0, 1])}
    shortfall = ref - model  # what a per-input gain would have to add
    extra = np.array([r["extrapolated"] for r in rows]) - model
    out["foretells_model_error"] = {
        "extrapolated_minus_model": float(np.corrcoef(shortfall, extra)[0, 1]),
        "slope": float(np.corrcoef(shortfall, [r["slope"] for r in rows])[0, 1])}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", required=True, help="dataset folders; their validation splits are used")
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--bitrates", default="24,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    restorer = Restorer(args.checkpoint, device="cpu", segment=0, threads=args.threads)
    bitrates = [int(b) for b in args.bitrates.split(",")]
    rows: list[dict] = []
    for data in args.data:
        for excerpt in make_excerpts(data, RATE, 10.0, 1, "valid"):
            for bitrate in bitrates:
                found = rows_for(restorer, excerpt.audio, bitrate)
                rows += [{"data": data, "excerpt": excerpt.name, **r} for r in found]
            print(excerpt.name, flush=True)
    report = {"command": "python benchmarks/level_foretell.py " + " ".join(
                  f"--{k} {' '.join(v) if isinstance(v, list) else v}" for k, v in vars(args).items()),
              "checkpoint": args.checkpoint, "overall": summarise(rows),
              "by_bitrate": {str(b): summarise([r for r in rows if r["bitrate"] == b]) for b in bitrates},
              "rows": rows}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps({k: report[k] for k in ("overall", "by_bitrate")}, indent=1))


if __name__ == "__main__":
    main()
