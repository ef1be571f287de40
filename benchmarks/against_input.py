"""Where a model does harm: the excerpts of an `apollo evaluate` report on which a system scores
ViSQOL more than a margin under the MP3 input it was given, per system.

A mean over seven excerpts can rise while the model makes some of them worse than its input; a
user hears each song, not the mean. This counts the (excerpt, bitrate) pairs and lists them.

    python benchmarks/against_input.py reports/real-test-tturdark/results.csv --margin 0.05 \
        --out docs/evaluations/x.json
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys

INPUT = "mp3"


def harm(rows: list[dict[str, str]], margin: float) -> dict[str, dict]:
    """For each system but the input: pairs scored, pairs more than `margin` under the input, the
    largest loss, and those pairs (excerpt, kbps, ViSQOL difference)."""
    given = {(r["excerpt"], r["bitrate"]): float(r["visqol"]) for r in rows if r["system"] == INPUT}
    result: dict[str, dict] = {}
    for system in dict.fromkeys(r["system"] for r in rows if r["system"] != INPUT):
        diffs = [(r["excerpt"], int(r["bitrate"]), round(float(r["visqol"]) - given[(r["excerpt"], r["bitrate"])], 3))
                 for r in rows if r["system"] == system and (r["excerpt"], r["bitrate"]) in given]
        under = [d for d in diffs if d[2] < -margin]
        result[system] = {"pairs": len(diffs), "under_input": len(under),
                          "largest_loss": min((d[2] for d in diffs), default=0.0), "which": under}
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.csv of `apollo evaluate --data ...`")
    parser.add_argument("--margin", type=float, default=0.05, help="ViSQOL under the input that counts (default 0.05)")
    parser.add_argument("--out", required=True, help="JSON report")
    args = parser.parse_args(argv)
    with open(args.results) as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("visqol")]
    if not any(r["system"] == INPUT for r in rows):
        parser.error(f"{args.results} has no '{INPUT}' rows to compare with")
    report = {"command": shlex.join(["python", "benchmarks/against_input.py", *(argv or sys.argv[1:])]),
              "margin": args.margin, "systems": harm(rows, args.margin)}
    with open(args.out, "w") as handle:
        json.dump(report, handle, indent=1)
    for system, found in report["systems"].items():
        print(f"{system}: {found['under_input']} of {found['pairs']} more than {args.margin} under the input "
              f"(largest loss {found['largest_loss']})")


if __name__ == "__main__":
    main()
