"""Would a second, stricter gate for a louder told fill gain ViSQOL? Read on excerpts no choice has scored.

    python -c "from apollo.evaluate import evaluate_dataset; evaluate_dataset('corpus/real2', ['default', \
        'runs/candidates/level14/g5.safetensors'], 'reports/real2-train-level14', bitrates=(24,), split='train', \
        threads=1, progress=False)"
    python benchmarks/source_edges.py --data corpus/real2 --split train --corners none --bitrates 24 \
        --quantile 0.99 --out reports/source-edges-train-real2-q99-24.json
    python benchmarks/second_gate.py reports/real2-train-level14/results.csv \
        reports/source-edges-train-real2-q99-24.json --base default --louder g5 --bitrate 24 \
        --out docs/evaluations/second-gate-train-real2-24.json

Given the rows of `apollo evaluate` for a model (--base) and the same model with a louder fill (--louder),
and each excerpt's fraction of the encoder's edge that its loudest frames reach (benchmarks/source_edges.py,
the gate's own reading), it reports, for each threshold among the fractions at or above --from, the mean
change in ViSQOL over all excerpts had only those reaching it been given the louder fill; each excerpt is
restored either as --base or as --louder, so the figure is exact. Only excerpts with every system's row
count (a run stopped early leaves its last ones out).
"""

from __future__ import annotations

import argparse
import csv
import json


def thresholds(changes: dict[str, float], fractions: dict[str, float], start: float) -> list[dict]:
    """Per threshold (each fraction >= start that an excerpt reaches): how many reach it and the mean
    change over all excerpts of giving the louder fill to those alone."""
    out = []
    for t in sorted({f for f in fractions.values() if f >= start}):
        reach = [k for k in changes if fractions[k] >= t]
        mean = sum(changes[k] for k in reach) / len(changes)
        out.append({"from_fraction": t, "reach": len(reach), "mean_change": mean})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="results.csv of apollo evaluate (both models scored)")
    parser.add_argument("edges", help="JSON of benchmarks/source_edges.py for the same split")
    parser.add_argument("--base", default="default")
    parser.add_argument("--louder", required=True)
    parser.add_argument("--bitrate", type=int, default=24)
    parser.add_argument("--from", dest="start", type=float, default=0.9, help="lowest threshold (the first gate)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    scores: dict[str, dict[str, float]] = {}
    with open(args.results) as handle:
        for row in csv.DictReader(handle):
            if int(row["bitrate"]) == args.bitrate:
                scores.setdefault(row["excerpt"], {})[row["system"]] = float(row["visqol"])
    changes = {k: v[args.louder] - v[args.base] for k, v in scores.items() if {args.base, args.louder} <= set(v)}
    with open(args.edges) as handle:
        fractions = {r["excerpt"]: r["fraction"] for r in json.load(handle)["rows"]
                     if r["kbps"] == args.bitrate and r["corner"] == "none"}
    rows = thresholds(changes, fractions, args.start)
    report = {"excerpts": len(changes), "mean_change_all": sum(changes.values()) / len(changes),
              "thresholds": rows, "best": max(rows, key=lambda r: r["mean_change"]) if rows else None}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
