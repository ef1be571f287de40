"""Splits an `apollo evaluate` report on the real-music corpus by edition: the means of each system at
each bitrate over edition 1's tracks, over the tracks each later edition added, and over all of them,
with each mean's standard error.

Every edition keeps the tracks of the ones before it in the same splits, so the first group compares
with every result measured on edition 1 before it (docs/real-music.md). The standard errors say how
far two groups' means (the training and the validation split's, say) may differ by chance.

    python benchmarks/by_edition.py reports/real2-valid/results.csv [MORE/results.csv ...] \\
        --out docs/evaluations/x.json [--systems mp3 default NAME ...] [--bitrates 24 32 ...]

A report resumed from an earlier one holds every earlier system's rows; --systems keeps the JSON to
the ones compared.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys

from probe_report import standard_errors, summarise, write_report

from apollo.data.realmusic import EDITIONS
from apollo.evaluate import DIAGNOSTICS

KEYS = ("visqol", "si_snr", "lsd", *DIAGNOSTICS)


def edition_of(excerpt: str) -> str:
    """'edition 1' for a track of edition 1's packages, else 'added in edition N' for the first
    edition that has its package."""
    package = excerpt.split("/", 1)[0]
    first = min((n for n, packages in EDITIONS.items() if package in packages), default=None)
    if first == 1:
        return "edition 1"
    return f"added in edition {first}" if first else "in no edition"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+",
                        help="results.csv of `apollo evaluate --data corpus/real2` (several are read as one: "
                             "reports of different splits or corpora, say)")
    parser.add_argument("--out", required=True, help="JSON report")
    parser.add_argument("--systems", nargs="+", help="keep only these systems' rows (default: all)")
    parser.add_argument("--bitrates", nargs="+", help="keep only these bitrates' rows (default: all)")
    args = parser.parse_args(argv)
    rows = []
    for path in args.results:
        with open(path) as handle:
            rows += [{k: float(v) if k in KEYS else v for k, v in row.items()
                      if k in ("excerpt", "bitrate", "system", *KEYS) and v not in ("", "nan")}
                     for row in csv.DictReader(handle)
                     if (not args.systems or row["system"] in args.systems)
                     and (not args.bitrates or row["bitrate"] in args.bitrates)]
    rows.sort(key=lambda r: (r["system"], int(r["bitrate"]), edition_of(r["excerpt"]), r["excerpt"]))

    def by_edition(r: dict) -> str:
        return f"{r['system']} {r['bitrate']} kbps, {edition_of(r['excerpt'])}"

    def overall(r: dict) -> str:
        return f"{r['system']} {r['bitrate']} kbps, all"

    summary = summarise(rows, by_edition, KEYS) | summarise(rows, overall, KEYS)
    errors = standard_errors(rows, by_edition, KEYS) | standard_errors(rows, overall, KEYS)
    write_report(args.out, shlex.join(["python", "benchmarks/by_edition.py", *(argv or sys.argv[1:])]), rows,
                 summary, standard_errors=errors)


if __name__ == "__main__":
    main()
