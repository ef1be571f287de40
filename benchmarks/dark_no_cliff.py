"""Which inputs the dark-source rule takes for dark, and on which of them its 90% band limit finds no cliff.

    python benchmarks/dark_no_cliff.py --data corpus/real --split test --out docs/evaluations/dark-no-cliff-test.json

For each excerpt of a split (as it is, or lowpassed at --corners as benchmarks/dark_probe.py does),
coded at each bitrate, the shipped default's own limits on the MP3 at peak 1 (as `Restorer` gives it):
the band limit (90% of the frames' levels) and the loudest frames' limit (99%). A pair is taken for
dark when the loudest frames' limit lies under the model's dark_source_hz_told for that bitrate; on
those, "no_cliff" says the band limit is the top bin, the case where the rule keeps the input above
the loudest frames' limit instead (docs/default-model.md, "Dark at the source", its last paragraph).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe_report import write_report

from apollo import degrade, load_model
from apollo.data.examples import darken
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import SOURCE_QUANTILE

RATE = 44100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--corners", default="none", help="lowpass corners in Hz ('none': as it is)")
    parser.add_argument("--bitrates", default="48,64,96,128")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    top = model.config.num_bins - 1
    corners = [None if c == "none" else float(c) for c in args.corners.split(",")]
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split=args.split):
        for corner in corners:
            clean = darken(excerpt.audio, corner, RATE)
            for kbps in (int(b) for b in args.bitrates.split(",")):
                coded = degrade.mp3(clean, RATE, kbps)
                x = torch.from_numpy(coded / max(float(np.abs(coded).max()), 1e-9)).float()
                levels = model.file_band_levels(x.shape[0])
                levels.add(x)
                limit, loudest = int(levels.limit()[0]), int(levels.limit(SOURCE_QUANTILE)[0])
                dark = bool(model.dark_rows(model.bitrate_index(torch.tensor([kbps]), 1), torch.tensor([loudest]))[0])
                rows.append({"excerpt": excerpt.name, "corner": corner or "none", "kbps": kbps, "limit_bin": limit,
                             "loudest_limit_bin": loudest, "dark": dark, "no_cliff": dark and limit == top})
    taken = [r for r in rows if r["dark"]]
    summary = {"pairs": len(rows), "taken_for_dark": len(taken), "no_cliff": sum(r["no_cliff"] for r in taken),
               "no_cliff_pairs": [f"{r['excerpt']} {r['corner']} {r['kbps']}" for r in taken if r["no_cliff"]]}
    command = (f"python benchmarks/dark_no_cliff.py --data {args.data} --split {args.split} --checkpoint "
               f"{args.checkpoint} --corners {args.corners} --bitrates {args.bitrates} --out {args.out}")
    write_report(args.out, command, rows, summary)


if __name__ == "__main__":
    main()
