"""MP3s sampled under 44.1 kHz: what the dark-source rule took them for, and what the default writes.

    python benchmarks/half_rate.py --data corpus/real --split valid --out docs/evaluations/half-rate-valid.json

Each excerpt of a split is resampled to each --rates rate and coded there by LAME at each --bitrates
bitrate (as an encoder at that rate codes it; degrade.encode_mp3), decoded at its own rate and
restored three ways: "own rate" (`Restorer.restore(mp3, rate, bitrate)`, as `apollo restore` restores
the file; the rule reads its loudest frames against the input's own Nyquist, band_limit.at_own_rate),
"at 44.1 kHz" (the same audio resampled to 44.1 kHz first, which is how the rule read every input
before at_own_rate: its edges are an encoder's at 44.1 kHz) and "untold" (as its decoded WAV: no
rule). Only the rows whose two readings differ are restored and scored: where they agree, so do the
restorations. --corners lowpasses each excerpt first, as benchmarks/dark_probe.py does (music dark at the
source). Per row: the loudest frames' limit and whether each reading takes the input for dark, ViSQOL
(and of the MP3 input), and the 12-20 kHz level against the reference's.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe_report import rounded, summarise, write_report

from apollo import Restorer, audio, degrade, metrics
from apollo.data.examples import darken
from apollo.diagnostics import band_level_error
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import at_own_rate

RATE = 44100
BAND = (12000.0, 20000.0)


def _band_db(reference: np.ndarray, estimate: np.ndarray, name: str) -> dict[str, float]:
    """{db_12_20k_<name>: the estimate's 12-20 kHz level against the reference's (dB)}; empty where the
    reference has none there (music dark at the source)."""
    return {f"db_12_20k_{name}": v for v in band_level_error(reference, estimate, RATE, (BAND,)).values()}


def summary_of(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per (corner, rate, kbps): the share of pairs each reading takes for dark, and the means of the scored ones."""
    keys = ["dark_at_44k", "dark_own_rate", *(f"visqol_{n}" for n in ("mp3", "at_44k", "own_rate", "untold")),
            *(f"db_12_20k_{n}" for n in ("at_44k", "own_rate", "untold"))]
    return summarise(rows, lambda r: f"corner {r['corner']}, {r['rate']} Hz, {r['kbps']} kbps", keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--rates", default="16000,22050,24000,32000")
    parser.add_argument("--bitrates", default="64,96,128")
    parser.add_argument("--corners", default="none", help="lowpass corners in Hz ('none': as it is)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    restorer = Restorer(args.checkpoint, device="cpu", threads=args.threads)
    model, hz = restorer.model, RATE / restorer.model.config.window
    rows = []
    pairs = [(e, None if c == "none" else float(c)) for e in make_excerpts(args.data, RATE, split=args.split)
             for c in args.corners.split(",")]
    for excerpt, corner in pairs:
        ref = darken(excerpt.audio, corner, RATE)
        for rate in (int(r) for r in args.rates.split(",")):
            for kbps in (int(b) for b in args.bitrates.split(",")):
                data = degrade.encode_mp3(audio.resample(ref, RATE, rate), rate, kbps)
                coded, got = degrade.decode_mp3(data, vbr=False)
                delay = degrade.codec_delay(rate, ref.shape[0], kbps, None)  # aligned, as degrade.mp3 aligns
                coded = audio.fit_length(coded[:, delay:], round(ref.shape[1] * rate / RATE))
                up = audio.fit_length(audio.resample(coded, rate, RATE), ref.shape[1])
                _, _, loudest = restorer.whole_input(lambda up=up: [up], up.shape[0])  # as read at 44.1 kHz
                own = at_own_rate(loudest, got, RATE, model.config.window)
                row_index = model.bitrate_index(torch.tensor([kbps]), 1)
                row = {"excerpt": excerpt.name, "corner": corner or "none", "rate": got, "kbps": kbps,
                       "loudest_limit_hz": float(loudest[0]) * hz,
                       "dark_at_44k": bool(model.dark_rows(row_index, loudest)[0]),
                       "dark_own_rate": bool(model.dark_rows(row_index, own)[0])}
                rows.append(row)  # rounded when the report is written
                if row["dark_at_44k"] == row["dark_own_rate"]:
                    continue  # the same reading: the same restoration, not scored
                systems = {"mp3": up, "own_rate": restorer.restore(coded, got, bitrate=kbps)[0],
                           "at_44k": restorer.restore(up, RATE, bitrate=kbps)[0],
                           "untold": restorer.restore(coded, got)[0]}
                for name, y in systems.items():
                    y = audio.fit_length(y, ref.shape[1])
                    row[f"visqol_{name}"] = metrics.visqol(ref, y, RATE)
                    row |= _band_db(ref, y, name)
                print(rounded(row), flush=True)
    command = (f"python benchmarks/half_rate.py --data {args.data} --split {args.split} --checkpoint "
               f"{args.checkpoint} --rates {args.rates} --bitrates {args.bitrates} --corners {args.corners} "
               f"--threads {args.threads} --out {args.out}")
    write_report(args.out, command, [rounded(r) for r in rows], summary_of(rows))


if __name__ == "__main__":
    main()
