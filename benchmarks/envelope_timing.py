"""Is a restored band's 8-16 kHz envelope late or too smooth, or does it follow the wrong things?

    python benchmarks/envelope_timing.py --data corpus/real2 --split valid --bitrate 24 --checkpoint default \
        --out docs/evaluations/envelope-timing-valid.json

The issue's envelope target (apollo/diagnostics.py transient_following: the Pearson correlation
of the reference's and the restoration's 8-16 kHz frame energy in dB) cannot tell a fill that is
shifted in time or smeared over frames from one that rises at the wrong moments. This measures,
per excerpt, the correlation at each lag of -4..4 frames (256 samples each) and against the
reference's envelope smoothed over 3 to 17 frames. A best lag away from 0 or a correlation that
grows with smoothing would say the fill is late or smeared; neither says the fill does not know
when the high band moves.
"""

from __future__ import annotations

import argparse

import numpy as np
from probe_report import rounded, summarise, write_report

from apollo import Restorer, degrade, metrics
from apollo.diagnostics import band_envelope_db, correlation, transient_following
from apollo.evaluate import make_excerpts

RATE = 44100
LAGS = range(-4, 5)
SMOOTHING = (3, 5, 9, 17)


def lagged(reference: np.ndarray, estimate: np.ndarray, lag: int) -> float:
    """Correlation with the estimate `lag` frames later than the reference (negative: earlier)."""
    n = min(reference.size, estimate.size)
    reference, estimate = reference[:n], estimate[:n]
    if lag >= 0:
        return correlation(reference[:n - lag], estimate[lag:])
    return correlation(reference[-lag:], estimate[:n + lag])


def smoothed(reference: np.ndarray, estimate: np.ndarray, frames: int) -> float:
    """Correlation with the reference's envelope averaged over `frames` frames (a moving mean)."""
    n = min(reference.size, estimate.size)
    return correlation(np.convolve(reference[:n], np.ones(frames) / frames, "same"), estimate[:n])


def timing_row(reference: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """r at lag 0, the best lag and its r, and r against each smoothing of the reference."""
    ref, est = band_envelope_db(reference, RATE), band_envelope_db(estimate, RATE)
    by_lag = {lag: lagged(ref, est, lag) for lag in LAGS}
    best = max(by_lag, key=by_lag.get)
    return {"r": by_lag[0], "best_lag": best, "r_best_lag": by_lag[best],
            **{f"r_smoothed_{k}": smoothed(ref, est, k) for k in SMOOTHING}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("valid", "test"))
    parser.add_argument("--bitrate", type=int, default=24)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args(argv)

    restorer = Restorer(args.checkpoint, device="cpu", threads=args.threads)
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split=args.split):
        if not transient_following(excerpt.audio, excerpt.audio, RATE):  # no 8-16 kHz band to follow
            continue
        coded = degrade.mp3(excerpt.audio, RATE, args.bitrate)
        estimate, _ = metrics.align(excerpt.audio, restorer.restore(coded, RATE, bitrate=args.bitrate)[0],
                                    max_lag=2048)
        rows.append(rounded({"excerpt": excerpt.name, **timing_row(excerpt.audio, estimate)}))
        print(excerpt.name.split("/")[-3], rows[-1]["r"], rows[-1]["best_lag"], flush=True)
    keys = [k for k in rows[0] if k != "excerpt"] if rows else []
    summary = summarise(rows, lambda r: "all", keys)
    if rows:
        summary["all"]["best_lag_0"] = sum(r["best_lag"] == 0 for r in rows)
    command = (f"python benchmarks/envelope_timing.py --data {args.data} --split {args.split} "
               f"--bitrate {args.bitrate} --checkpoint {args.checkpoint} --out {args.out}")
    write_report(args.out, command, rows, summary)


if __name__ == "__main__":
    main()
