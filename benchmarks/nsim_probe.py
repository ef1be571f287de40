"""Does training.losses.nsim_loss rank restorations as ViSQOL does? For validation excerpts and
bitrates: ViSQOL and nsim_loss of the MP3 input and of one model with its fill above the band limit
as shipped, 6 dB louder, 6 dB quieter and removed (model.fill_gain_db_told, no gate).

    python benchmarks/nsim_probe.py --data corpus/real2 --every 4 --bitrates 24,48 \
        --out docs/evaluations/nsim-probe.json

A loss meant to stand in for ViSQOL in training should order these as ViSQOL does, per excerpt:
the fill level ViSQOL prefers differs from excerpt to excerpt (docs/default-model.md, "ViSQOL's
similarity as a loss").
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys

import numpy as np
import torch

from apollo import degrade, metrics
from apollo.api import Restorer
from apollo.evaluate import make_excerpts
from apollo.training.losses import nsim_loss

RATE = 44100
FILL_DB = {"louder": 6.0, "quieter": -6.0, "no_fill": -120.0}  # added to the shipped told gains


def variants(restorer: Restorer) -> dict[str, object]:
    """The model's config as shipped and with its told fill gains moved by FILL_DB (gate removed)."""
    shipped = restorer.model.config
    told = shipped.fill_gain_db_told or tuple(0.0 for _ in shipped.bitrate_classes)
    out = {"shipped": shipped}
    for name, db in FILL_DB.items():
        out[name] = dataclasses.replace(shipped, fill_gain_db_told=tuple(g + db for g in told),
                                        fill_gain_from_hz_told=())
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder (its validation split is used)")
    parser.add_argument("--checkpoint", default="default", help="a model told bitrates (default: default)")
    parser.add_argument("--every", type=int, default=4, help="every n-th validation excerpt (default 4)")
    parser.add_argument("--bitrates", default="24,48", help="comma-separated kbps (default 24,48)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    excerpts = make_excerpts(args.data, RATE, split="valid")[:: args.every]
    if not excerpts:
        parser.error(f"{args.data}: no validation excerpts")
    restorer = Restorer(args.checkpoint, device="cpu", segment=0, threads=args.threads)
    if not restorer.model.config.bitrate_classes:
        parser.error(f"{args.checkpoint}: not told bitrates, so its told fill gains cannot be moved")
    configs = variants(restorer)
    rows = []
    for excerpt in excerpts:
        reference = torch.from_numpy(excerpt.audio)[None]
        for kbps in (int(b) for b in args.bitrates.split(",")):
            mp3 = degrade.mp3(excerpt.audio, RATE, kbps)
            outputs = {"mp3": mp3}
            for name, config in configs.items():
                restorer.model.config = config
                outputs[name] = restorer.restore(mp3, RATE, bitrate=kbps)[0]
            for system, audio in outputs.items():
                estimate, _ = metrics.align(excerpt.audio, audio, max_lag=2048)
                loss = nsim_loss(torch.from_numpy(np.ascontiguousarray(estimate))[None], reference, RATE)
                rows.append({"excerpt": excerpt.name, "bitrate": kbps, "system": system,
                             "visqol": round(metrics.visqol(excerpt.audio, estimate, RATE), 4),
                             "nsim_loss": round(loss.item(), 4)})
                print(json.dumps(rows[-1]), flush=True)
    pairs = agreements(rows)
    report = {"command": shlex.join(["python", "benchmarks/nsim_probe.py", *(argv or sys.argv[1:])]),
              "pairs": len(pairs), "agree": sum(pairs), "rows": rows}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"nsim_loss orders {sum(pairs)} of {len(pairs)} pairs of systems as ViSQOL does")


def agreements(rows: list[dict]) -> list[bool]:
    """For each (excerpt, bitrate) and each pair of its systems whose ViSQOL differs by more than
    0.02: whether the lower nsim_loss goes with the higher ViSQOL."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["excerpt"], row["bitrate"]), []).append(row)
    out = []
    for members in groups.values():
        for i, a in enumerate(members):
            for b in members[i + 1:]:
                if abs(a["visqol"] - b["visqol"]) > 0.02:
                    out.append((a["visqol"] > b["visqol"]) == (a["nsim_loss"] < b["nsim_loss"]))
    return out


if __name__ == "__main__":
    main()
