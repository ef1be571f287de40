"""Where does an MP3 end: at the codec's lowpass, or earlier, because the music was dark at the source?

    python benchmarks/source_edges.py --data corpus/real2 --corners none,1500,3000 \
        --out docs/evaluations/source-edges-valid-real2.json

A told model knows the bitrate, so it knows where the encoder's lowpass cuts (degrade.codec_cutoff_hz,
measured on white noise). An input whose band limit lies far under that edge was dark before it was
coded, and the band above it is not the codec's damage. This measures, for an excerpt of each
validation (or --split train) track as it is and lowpassed at the source (data.examples.darken, as
benchmarks/dark_probe.py does), the band limit the generator itself finds (model.band_limit's rule,
which decides what is "above the limit"; --quantile sets the quantile of the frames' levels it
reads) as a fraction of the codec's edge at each bitrate. Per (corner, kbps): that fraction's
minimum, quartiles and maximum over the excerpts.

Each row also has `rolloff_db`: how far the level (at --quantile, channels averaged) falls from the
octave under the limit (0.5-0.6 of it) to the top of the band (0.85-1.0 of it). An encoder's lowpass
or its holes cut the music off where it stands; a source dark before the codec fades out before it
ends, which may tell the two apart where the limit alone cannot (32-48 kbps).

And `holes`: the share of cells in the 2 kHz under the limit far under their bin's median
(diagnostics.input_holes, no reference needed): an encoder's holes, many at a low bitrate in bright
music, few at a high one, asked whether it tells a bright low-bitrate MP3 from a dark high-bitrate
one that ends as low (on the training split: no; docs/default-model.md).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe_report import rounded, write_report

from apollo import degrade, load_model
from apollo.data.examples import darken
from apollo.diagnostics import input_holes
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import LEVEL_QUANTILE, input_levels, item_band_limit

RATE = 44100


def rolloff_db(level_db: torch.Tensor, limit: int) -> float:
    """Mean level (dB) over 0.5-0.6 of the limit bin less the mean over 0.85-1.0 of it."""
    low = level_db[int(0.5 * limit):int(0.6 * limit) + 1].mean()
    top = level_db[int(0.85 * limit):limit + 1].mean()
    return float(low - top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("train", "valid"),
                        help="tracks to measure (default valid; train to choose a threshold on data no score reads)")
    parser.add_argument("--corners", default="none,1500,3000", help="lowpass corners in Hz ('none': as it is)")
    parser.add_argument("--bitrates", default="24,32,48,64,96,128")
    parser.add_argument("--quantile", type=float, default=LEVEL_QUANTILE,
                        help=f"a bin's level is this quantile of its frames' levels (default {LEVEL_QUANTILE}, the "
                             "generator's; 0.99: the loudest frames, which the codec's holes do not empty)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    model = load_model("tiny-test")  # the band limit depends on the STFT only (window, hop), not on weights
    corners = [None if c == "none" else float(c) for c in args.corners.split(",")]
    bitrates = [int(b) for b in args.bitrates.split(",")]
    edges = {kbps: degrade.codec_cutoff_hz(RATE, kbps) for kbps in bitrates}
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split=args.split):
        for corner in corners:
            clean = darken(excerpt.audio, corner, RATE)
            for kbps in bitrates:
                coded = torch.from_numpy(degrade.mp3(clean, RATE, kbps))
                levels = input_levels(model.stft(coded), args.quantile)  # (channels, F)
                limit = int(item_band_limit(levels, coded.shape[0])[0])
                limit_hz = limit * RATE / model.config.window
                rolloff = rolloff_db(levels.mean(0), limit)
                holes = input_holes(coded.numpy(), RATE, limit_hz)
                rows.append(rounded({"excerpt": excerpt.name, "corner": corner or "none", "kbps": kbps,
                                     "limit_hz": limit_hz, "fraction": limit_hz / edges[kbps],
                                     "rolloff_db": rolloff, "holes": holes}))
                print(excerpt.name.split("/")[-3][:24], corner, kbps, f"{limit_hz:.0f} Hz",
                      f"{limit_hz / edges[kbps]:.2f} of {edges[kbps]:.0f}", f"rolloff {rolloff:.1f} dB",
                      f"holes {holes:.3f}", flush=True)
    summary = {}
    for corner in corners:
        for kbps in bitrates:
            chosen = [r for r in rows if r["corner"] == (corner or "none") and r["kbps"] == kbps]
            got = np.array([r["fraction"] for r in chosen])
            fall = np.array([r["rolloff_db"] for r in chosen])
            holes = np.array([r["holes"] for r in chosen])
            summary[f"{corner or 'none'}/{kbps}"] = rounded(
                {"codec_edge_hz": edges[kbps], "min": float(got.min()), "q25": float(np.quantile(got, 0.25)),
                 "median": float(np.median(got)), "q75": float(np.quantile(got, 0.75)), "max": float(got.max()),
                 "excerpts": len(got), "rolloff_db_min": float(fall.min()),
                 "rolloff_db_median": float(np.median(fall)), "rolloff_db_max": float(fall.max()),
                 "holes_min": float(holes.min()), "holes_median": float(np.median(holes)),
                 "holes_max": float(holes.max())})
    command = (f"python benchmarks/source_edges.py --data {args.data} --split {args.split} --corners {args.corners} "
               f"--bitrates {args.bitrates} --quantile {args.quantile} --out {args.out}")
    write_report(args.out, command, rows, summary)


if __name__ == "__main__":
    main()
