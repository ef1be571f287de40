"""How far can a restorer follow the 8-16 kHz envelope from what the MP3 kept?

    python benchmarks/envelope_probe.py --data corpus/real --split valid --checkpoint default \
        --out docs/evaluations/envelope-probe-valid.json
    python benchmarks/envelope_probe.py --data corpus/real --split test --out docs/evaluations/envelope-probe-test.json

The issue "A default model that restores real music" asks for an 8-16 kHz envelope correlation
of 0.7 or more (apollo/diagnostics.py transient_following). At 24-48 kbps the encoder keeps
nothing above 4-8 kHz, so a restorer can only time its fill by what happens under the cutoff.
This probe measures how well that can work, per (excerpt, bitrate), as envelope correlations
with the reference's 8-16 kHz band:

- reference_kept: the reference's own top octave under the input's cutoff (cutoff / 2 to
  cutoff). A fill that moved exactly as that octave moves would score this.
- mp3_kept: the same octave of the MP3 input, which is what the restorer hears.
- reference_fit, mp3_fit: the best a fill could do with every kept octave at once. The 8-16 kHz
  envelope (dB) is fitted per excerpt by least squares to the envelopes of five octaves under
  the cutoff (the lowest one reaching down to 0 Hz), and this is the fit's correlation. Fitted
  on the excerpt it is scored on, so it is an upper bound for any fill whose level is a fixed
  linear mix of those envelopes.
- mp3_train_mix: one such mix for all excerpts, fitted on the train split (pooled, per bitrate):
  what a fixed rule that times the fill by the kept octaves would score.
- each --checkpoint: its restored 8-16 kHz band (the diagnostic itself).

No model is needed for any but the --checkpoint rows, so they can be measured on the test split
without scoring a model on it. Bitrates whose cutoff lies above 8 kHz are refused: there the octave under the
cutoff overlaps the band it is meant to foretell.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from probe_report import rounded, summarise, write_report

from apollo import Restorer, degrade, metrics
from apollo.diagnostics import TRANSIENT_BAND, band_envelope_db, band_frame_power, correlation, transient_following
from apollo.evaluate import make_excerpts

RATE = 44100
OCTAVES = 5


def octave_envelopes(x: np.ndarray, cutoff: float) -> np.ndarray:
    """The frame energy (dB, OCTAVES x frames) of the OCTAVES octaves under `cutoff`, each
    centred on its mean (the lowest octave reaches down to 0 Hz)."""
    edges = [cutoff / 2 ** k for k in range(OCTAVES + 1)][::-1]
    bands = [(0.0 if i == 0 else lo, hi) for i, (lo, hi) in enumerate(zip(edges, edges[1:]))]
    return centred(10 * np.log10(band_frame_power(x, RATE, bands) + 1e-12))


def target_envelope(reference: np.ndarray) -> np.ndarray:
    """The reference's 8-16 kHz frame energy (dB), centred on its mean."""
    return centred(band_envelope_db(reference, RATE))


def centred(x: np.ndarray) -> np.ndarray:
    return x - x.mean(-1, keepdims=True)


def mix_weights(pairs: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Least-squares weights of the octave envelopes for the target, pooled over (octaves, target) pairs."""
    design = np.concatenate([octaves.T for octaves, _ in pairs])
    return np.linalg.lstsq(design, np.concatenate([target for _, target in pairs]), rcond=None)[0]


def coded_excerpts(data: str, split: str, kbps: int) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, reference, MP3, its cutoff) for every excerpt of the split at one bitrate."""
    out = []
    for excerpt in make_excerpts(data, RATE, split=split):
        coded = degrade.mp3(excerpt.audio, RATE, kbps)
        cutoff = metrics.cutoff_hz(coded, RATE)
        if cutoff > TRANSIENT_BAND[0]:
            raise SystemExit(f"{kbps} kbps keeps up to {cutoff:.0f} Hz, into the band to foretell; "
                             "leave it out of --bitrates")
        out.append((excerpt.name, excerpt.audio, coded, cutoff))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--checkpoint", nargs="*", default=[], help="models whose fill to compare (none: data only)")
    parser.add_argument("--bitrates", default="24,32,48")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    restorers = {Path(c).stem: Restorer(c, device="cpu", threads=args.threads) for c in args.checkpoint}
    systems = ["reference_kept", "mp3_kept", "reference_fit", "mp3_fit", "mp3_train_mix", *restorers]
    rows = []
    for kbps in (int(b) for b in args.bitrates.split(",")):
        train = [(octave_envelopes(coded, cutoff), target_envelope(reference))
                 for _, reference, coded, cutoff in coded_excerpts(args.data, "train", kbps)]
        weights = mix_weights(train)
        for name, reference, coded, cutoff in coded_excerpts(args.data, args.split, kbps):
            kept = (cutoff / 2, cutoff)
            found = {"reference_kept": transient_following(reference, reference, RATE, estimate_band=kept),
                     "mp3_kept": transient_following(reference, coded, RATE, estimate_band=kept)}
            if not found["reference_kept"]:  # the reference has no 8-16 kHz band: nothing to follow
                continue
            for system, restorer in restorers.items():
                est, _ = metrics.align(reference, restorer.restore(coded, RATE, bitrate=kbps)[0], max_lag=2048)
                found[system] = transient_following(reference, est, RATE)
            target = target_envelope(reference)
            own, heard = octave_envelopes(reference, cutoff), octave_envelopes(coded, cutoff)
            row = {"excerpt": name, "kbps": kbps, "cutoff_hz": round(cutoff),
                   "reference_fit": correlation(own.T @ mix_weights([(own, target)]), target),
                   "mp3_fit": correlation(heard.T @ mix_weights([(heard, target)]), target),
                   "mp3_train_mix": correlation(heard.T @ weights, target)}
            row.update({system: value["envelope"] for system, value in found.items()})
            rows.append(rounded(row))
            print(name.split("/")[-3], kbps, {k: rows[-1][k] for k in systems}, flush=True)
    command = (f"python benchmarks/envelope_probe.py --data {args.data} --split {args.split} "
               + (f"--checkpoint {' '.join(args.checkpoint)} " if args.checkpoint else "")
               + f"--bitrates {args.bitrates} --out {args.out}")
    write_report(args.out, command, rows, summarise(rows, lambda r: str(r["kbps"]), systems))


if __name__ == "__main__":
    main()
