"""Do the restorers over-fill dark music? Validation excerpts lowpassed at the source, then coded.

    python benchmarks/dark_probe.py --data corpus/real --corners 1500,3000 --bitrates 24 --threads 2 \
        --checkpoint default runs/candidates/dark-step150-n.safetensors runs/candidates/dark2-step150-n.safetensors \
        --out docs/evaluations/dark-probe.json

On the real-music test split one track decided the grown model's fate (docs/default-model.md): a
dark Opus track whose spectrum ends near 1.5 kHz, where the MP3 at 24 kbps already scores 4.6 and
both v2 and the grown model score 1.3-1.8 lower, because they write 2-8 kHz 7-17 dB louder than
the reference has it. No validation track is that dark (the darkest ends near 6.7 kHz), so the
validation split cannot see this failure. This probe makes dark music from the validation tracks:
each excerpt is lowpassed (apollo.data.examples.darken: 4th-order Butterworth, zero phase) at
each --corners frequency before the MP3 coding, and the models restore it as `apollo restore`
does. "none" is the excerpt as it is. With --untold the models are not told the bitrate (a WAV or
FLAC made from the MP3: a model told bitrates uses its "unknown" row). --orders sets how steep the
darkening is (Butterworth order, zero phase: 12 dB an octave per order; the default 4 falls 48 dB an
octave, as steep as an encoder's lowpass, which is what the codec-cut case looks like); "lossless" in
--bitrates restores the darkened excerpt itself, never coded (lossless music dark at the source, as
FLAC of an old recording or of audio resampled up from a low rate; untold, as `apollo restore` has no
bitrate for it).

Per (corner, kbps): ViSQOL of the MP3 and of each model, and each model's level against the
darkened reference in 2-4, 4-8 and 8-16 kHz (diagnostics.band_level_error: dB, 0 is right;
bands the darkened reference has nothing in are left out). The MP3 rows also carry the input's
band edge (`edge_hz`, metrics.cutoff_hz: where the restorer's input seems to end).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from probe_report import rounded, summarise, write_report

from apollo import Restorer, degrade, metrics
from apollo.data.examples import darken
from apollo.diagnostics import band_level_error
from apollo.evaluate import make_excerpts

RATE = 44100
BANDS = ((2000, 4000), (4000, 8000), (8000, 16000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder; its validation split unless --split train")
    parser.add_argument("--split", default="valid", choices=("train", "valid"),
                        help="tracks to probe (train: to look at a training track without touching validation)")
    parser.add_argument("--match", help="only the tracks whose name contains one of these (comma-separated)")
    parser.add_argument("--checkpoint", nargs="+", default=["default"], help="models to compare")
    parser.add_argument("--corners", default="none,1500,3000", help="lowpass corners in Hz ('none': as it is)")
    parser.add_argument("--bitrates", default="24,48", help="kbps, or 'lossless': no MP3 coding")
    parser.add_argument("--orders", default="4", help="Butterworth orders of the darkening (default 4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--untold", action="store_true",
                        help="do not tell the models the bitrate (models told bitrates use their 'unknown' row)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()

    restorers = {Path(c).stem: Restorer(c, device="cpu", threads=args.threads) for c in args.checkpoint}
    corners = [None if c == "none" else float(c) for c in args.corners.split(",")]
    orders = [int(o) for o in args.orders.split(",")]
    rows = []
    names = args.match.split(",") if args.match else None
    excerpts = {e.name: e for e in make_excerpts(args.data, RATE, split=args.split, match=names)}
    for excerpt in excerpts.values():
        for corner, order in ((c, o) for c in corners for o in orders if c is not None or o == orders[0]):
            clean = darken(excerpt.audio, corner, RATE, order)
            for kbps in (b if b == "lossless" else int(b) for b in args.bitrates.split(",")):
                coded = clean if kbps == "lossless" else degrade.mp3(clean, RATE, kbps)
                told = None if args.untold or kbps == "lossless" else kbps
                systems = {"input" if kbps == "lossless" else "mp3": coded}
                systems |= {name: r.restore(coded, RATE, bitrate=told)[0] for name, r in restorers.items()}
                for name, estimate in systems.items():
                    est, _ = metrics.align(clean, estimate, max_lag=2048)
                    row = {"excerpt": excerpt.name, "corner": corner or "none", "kbps": kbps, "system": name,
                           "visqol": metrics.visqol(clean, est, RATE)}
                    if len(orders) > 1:
                        row["order"] = order
                    if name in ("mp3", "input"):
                        row["edge_hz"] = metrics.cutoff_hz(coded, RATE)
                    levels = band_level_error(clean, est, RATE, BANDS)
                    row |= {f"level_{band}k": error for band, error in levels.items()}
                    rows.append(rounded(row))
                    print(excerpt.name.split("/")[-3][:24], corner, kbps, name, f"visqol={row['visqol']:.3f}",
                          " ".join(f"{v:+.1f}" for k, v in row.items() if k.startswith("level")), flush=True)
    keys = list(dict.fromkeys(k for row in rows for k in row if k in ("visqol", "edge_hz") or k.startswith("level_")))
    summary = summarise(rows, lambda r: f"{r['corner']}{'/order' + str(r['order']) if 'order' in r else ''}"
                                        f"/{r['kbps']}/{r['system']}", keys)
    command = (f"python benchmarks/dark_probe.py --data {args.data} --split {args.split}"
               f"{f' --match {args.match}' if args.match else ''} --checkpoint {' '.join(args.checkpoint)} "
               f"--corners {args.corners} --bitrates {args.bitrates}{' --untold' * args.untold}"
               f"{f' --orders {args.orders}' if args.orders != '4' else ''} --out {args.out}")
    write_report(args.out, command, rows, summary)


if __name__ == "__main__":
    main()
