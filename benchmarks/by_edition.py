"""Splits an `apollo evaluate` report on the real-music corpus by edition: the means of each system at
each bitrate over edition 1's tracks, over the tracks edition 2 added, and over all of them.

Edition 1's tracks keep their splits in edition 2, so the first group compares with every result
measured on edition 1 before it (docs/real-music.md).

    python benchmarks/by_edition.py reports/real2-valid/results.csv --out docs/evaluations/x.json \
        [--systems mp3 default NAME ...]

A report resumed from an earlier one holds every earlier system's rows; --systems keeps the JSON to
the ones compared.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys

from probe_report import summarise, write_report

from apollo.data.realmusic import EDITIONS

KEYS = ("visqol", "si_snr", "lsd", "holes", "transient_envelope", "hop_comb")


def edition_of(excerpt: str) -> str:
    """'edition 1' for a track of edition 1's packages, else 'added in edition 2'."""
    return "edition 1" if excerpt.split("/", 1)[0] in EDITIONS[1] else "added in edition 2"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="results.csv of `apollo evaluate --data corpus/real2`")
    parser.add_argument("--out", required=True, help="JSON report")
    parser.add_argument("--systems", nargs="+", help="keep only these systems' rows (default: all)")
    args = parser.parse_args(argv)
    with open(args.results) as handle:
        rows = [{k: float(v) if k in KEYS else v for k, v in row.items()
                 if k in ("excerpt", "bitrate", "system", *KEYS) and v != ""} for row in csv.DictReader(handle)
                if not args.systems or row["system"] in args.systems]
    rows.sort(key=lambda r: (r["system"], int(r["bitrate"]), edition_of(r["excerpt"]), r["excerpt"]))
    summary = summarise(rows, lambda r: f"{r['system']} {r['bitrate']} kbps, {edition_of(r['excerpt'])}", KEYS)
    summary |= summarise(rows, lambda r: f"{r['system']} {r['bitrate']} kbps, all", KEYS)
    write_report(args.out, shlex.join(["python", "benchmarks/by_edition.py", *(argv or sys.argv[1:])]), rows, summary)


if __name__ == "__main__":
    main()
