"""VBR MP3s: what the default is told about them, and what each reading writes.

    python benchmarks/vbr.py --data corpus/real --split valid --out reports/vbr-real-valid.json
    python benchmarks/vbr.py --merge reports/vbr-real-valid.json reports/vbr-real2-valid.json \
        --out docs/evaluations/vbr-valid.json

The default is told an MP3's bitrate (`model.bitrate_classes`), which `apollo restore` reads from the
frame headers: for a VBR file, their mean (audio.mp3_bitrate). Its training pairs are all CBR, where
the bitrate sets LAME's lowpass; in VBR the -V quality sets it, so a VBR file's mean bitrate can say
little about where its band ends, and the dark-source rule (`model.dark_source_hz_told`) may take a
bright file for dark. Each excerpt of a split is coded by LAME at each --qualities -V (degrade.encode_mp3,
as `apollo degrade --vbr` codes), its mean bitrate read from the file's frame headers as `apollo
restore` reads it, and restored four ways: "as read" (told the mean, the rule read as for a CBR file:
how `apollo restore` read VBR files before Restorer.file_bitrate), "no rule" (told the mean, never
taken for dark: how it reads them now), "untold" (as its decoded WAV) and "by edge" (told the CBR
bitrate whose LAME lowpass lies nearest, on a log scale, the file's loudest frames' limit; no rule).
"no rule" is restored only where "as read" takes the file for dark (elsewhere they are the same).
Per row: the mean bitrate and the class it is told, the loudest frames' limit, the rule's verdict,
ViSQOL of each (and of the MP3 input) and the level from the limit to 16 kHz against the reference's.
The summary adds, per -V quality, "now" (no rule where as read took the file for dark, else as read)
and "edge if dark" (by edge there, else as read) over every row. --merge writes one report from
several, each (excerpt, quality) once.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
from probe_report import rounded, summarise, write_report

from apollo import Restorer, audio, degrade, metrics
from apollo.diagnostics import band_level_error
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import never_dark

RATE = 44100
TOP_HZ = 16000.0
SYSTEMS = ("mp3", "as_read", "no_rule", "untold", "by_edge")


def file_bitrate(data: bytes) -> float:
    """The mean bitrate `apollo restore` reads from these MP3 bytes' frame headers."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "coded.mp3"
        path.write_bytes(data)
        kbps = audio.mp3_bitrate(audio.probe(path))
    if kbps is None:
        raise RuntimeError("LAME's output read as no MP3")
    return kbps


def by_edge(limit_hz: float, classes: tuple[int, ...]) -> int:
    """The bitrate class whose LAME lowpass at 44.1 kHz lies nearest limit_hz on a log scale."""
    return min(classes, key=lambda k: abs(math.log2(degrade.codec_cutoff_hz(RATE, k) / limit_hz)))


def restore(restorer: Restorer, wav: np.ndarray, bitrate: float | None, bright: bool) -> np.ndarray:
    """Restores wav (at the model's rate) told `bitrate`; bright: never taken for dark at the source."""
    gain, limit, source = restorer.whole_input(lambda: [wav], wav.shape[0])
    if bright and source is not None:
        source = never_dark(source, restorer.model.config.window)
    blocks = restorer.restore_blocks(iter([wav]), wav.shape[0], band_limit=limit, gain=gain, bitrate=bitrate,
                                     source_limit=source)
    return np.concatenate(list(blocks), axis=1)


def summary_of(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per -V quality and over all rows: mean bitrate, the share taken for dark, and the means of the
    scored systems and of "now" and "edge if dark" (see the module's docstring)."""
    derived = []
    for row in rows:
        row = dict(row)
        for key in ("visqol", "db_to_16k"):
            if f"{key}_as_read" in row:
                row[f"{key}_now"] = row.get(f"{key}_no_rule", row[f"{key}_as_read"]) if row["dark"] \
                    else row[f"{key}_as_read"]
                if row["dark"] and f"{key}_by_edge" in row:
                    row[f"{key}_edge_if_dark"] = row[f"{key}_by_edge"]
                elif not row["dark"]:
                    row[f"{key}_edge_if_dark"] = row[f"{key}_as_read"]
        derived.append(row)
    names = (*SYSTEMS, "now", "edge_if_dark")
    keys = ["kbps", "told", "loudest_limit_hz", "dark", *(f"visqol_{n}" for n in names),
            *(f"db_to_16k_{n}" for n in names)]
    return summarise(derived, lambda r: f"V{r['quality']}", keys) | summarise(derived, lambda r: "all", keys)


def merge(paths: list[str], out: str) -> None:
    """One report from several runs' reports: each (excerpt, quality) row once, the first run's."""
    rows, seen, commands = [], set(), []
    for path in paths:
        with open(path) as handle:
            report = json.load(handle)
        commands.append(report["command"])
        for row in report["rows"]:
            if (row["excerpt"], row["quality"]) not in seen:
                seen.add((row["excerpt"], row["quality"]))
                rows.append(row)
    command = " && ".join(commands) + f" && python benchmarks/vbr.py --merge {' '.join(paths)} --out {out}"
    write_report(out, command, rows, summary_of(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset folder")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="reports of earlier runs to write as one")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--qualities", default="0,1,2,3,4,5,6,7,8,9", help="LAME -V qualities")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out)
        return
    if not args.data:
        parser.error("--data is needed (or --merge)")
    torch.set_num_threads(args.threads)
    restorer = Restorer(args.checkpoint, device="cpu", threads=args.threads)
    model = restorer.model
    classes, hz = model.config.bitrate_classes, RATE / model.config.window
    if not classes:
        parser.error(f"{args.checkpoint} is not told the bitrate: nothing to compare")
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split=args.split):
        ref = excerpt.audio
        for quality in (int(q) for q in args.qualities.split(",")):
            data = degrade.encode_mp3(ref, RATE, None, vbr=quality)
            kbps = file_bitrate(data)
            coded, _ = degrade.decode_mp3(data)
            delay = degrade.codec_delay(RATE, ref.shape[0], None, quality)
            coded = audio.fit_length(coded[:, delay:], ref.shape[1])
            _, _, loudest = restorer.whole_input(lambda c=coded: [c], coded.shape[0])
            row_index = model.bitrate_index(torch.tensor([kbps]), 1)
            limit_hz = float(loudest[0]) * hz
            row = {"excerpt": excerpt.name, "quality": quality, "kbps": kbps,
                   "told": classes[int(row_index[0]) - 1], "loudest_limit_hz": limit_hz,
                   "dark": bool(model.dark_rows(row_index, loudest)[0]), "by_edge": by_edge(limit_hz, classes)}
            systems = {"mp3": coded, "as_read": restore(restorer, coded, kbps, bright=False),
                       "untold": restore(restorer, coded, None, bright=False),
                       "by_edge": restore(restorer, coded, row["by_edge"], bright=True)}
            if row["dark"]:
                systems["no_rule"] = restore(restorer, coded, kbps, bright=True)
            band = ((min(limit_hz, TOP_HZ - 1000.0), TOP_HZ),)
            for name, y in systems.items():
                y = audio.fit_length(y, ref.shape[1])
                row[f"visqol_{name}"] = metrics.visqol(ref, y, RATE)
                row |= {f"db_to_16k_{name}": v for v in band_level_error(ref, y, RATE, band).values()}
            rows.append(row)
            print(rounded(row), flush=True)
    command = (f"python benchmarks/vbr.py --data {args.data} --split {args.split} --checkpoint {args.checkpoint} "
               f"--qualities {args.qualities} --threads {args.threads} --out {args.out}")
    write_report(args.out, command, [rounded(r) for r in rows], summary_of(rows))


if __name__ == "__main__":
    main()
