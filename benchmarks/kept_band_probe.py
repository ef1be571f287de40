"""Where does a GAN-trained generator lose ViSQOL: in the band the codec kept, or in the fill above it?

    python benchmarks/kept_band_probe.py --data corpus/real2 --kept default \
        --fill runs/candidates/nsimgan/nsimgan0-step100.safetensors --bitrates 24,32 \
        --out docs/evaluations/kept-band-probe-nsimgan0-step100.json

Every GAN continuation of the default so far took the hop-rate comb out of the fill and lost ViSQOL,
most at 32 kbps, where it also rewrote the band the codec kept (LSD under the cutoff +1 dB, 2-6 kHz
about 1 dB louder). Here both generators restore each validation excerpt as `apollo restore` does
(told the bitrate, every inference rule of their files), and the two restorations are spliced in the
`--kept` model's STFT at the input's band limit (the bin the generators' own emptied-band mask starts
above, apollo.model.band_limit.input_band_limit):

- kept, fill: each model alone, through the same STFT and inverse (as it restores, to rounding).
- kept+fill: the kept model under the band limit, the fill model above it.
- fill+kept: the fill model under the band limit, the kept model above it.

If kept+fill scores as the kept model does with the fill model's comb, the fill the GAN writes costs
nothing and its loss is all in the kept band; a training recipe can then hold that band.
Scored with `apollo evaluate`'s metrics and diagnostics on the excerpts it makes.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe_report import record_variant, summarise, write_report

from apollo import degrade
from apollo.api import Restorer
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import input_band_limit

RATE = 44100
KEYS = ("visqol", "lsd", "lsd_below", "lsd_high", "si_snr", "holes", "hop_comb", "transient_envelope",
        "level_2-4k", "level_4-6k", "level_6-8k", "level_8-11k", "level_11-14k", "level_14-16k")


def splice(model: torch.nn.Module, under: np.ndarray, above: np.ndarray, limit: int) -> np.ndarray:
    """(channels, samples) restorations -> one with `under`'s STFT bins up to `limit` and `above`'s
    beyond it, in `model`'s STFT (its window and hop; model.istft inverts model.stft)."""
    length = under.shape[-1]
    a = model.stft(torch.from_numpy(np.ascontiguousarray(under)).float())
    b = model.stft(torch.from_numpy(np.ascontiguousarray(above)).float())
    keep = (torch.arange(a.shape[2]) <= limit)[None, None, :, None]
    return model.istft(torch.where(keep, a, b), length).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder; its validation split is used")
    parser.add_argument("--kept", default="default", help="the generator whose kept band is spliced in")
    parser.add_argument("--fill", required=True, help="the generator whose fill above the band limit is spliced in")
    parser.add_argument("--bitrates", default="24,32")
    parser.add_argument("--match", default=None, help="only the tracks whose name contains this")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(1)

    kept = Restorer(args.kept, device="cpu", segment=0, threads=1)
    fill = Restorer(args.fill, device="cpu", segment=0, threads=1)
    model = kept.model
    if (fill.model.config.window, fill.model.config.hop) != (model.config.window, model.config.hop):
        raise SystemExit("--kept and --fill must share one STFT (window and hop)")
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split="valid", match=args.match):
        for kbps in (int(b) for b in args.bitrates.split(",")):
            coded = degrade.mp3(excerpt.audio, RATE, kbps)
            with torch.no_grad():
                limit = int(input_band_limit(model.stft(torch.from_numpy(coded).float()), channels=coded.shape[0])[0])
                a = kept.restore(coded, RATE, bitrate=kbps)[0]
                b = fill.restore(coded, RATE, bitrate=kbps)[0]
                variants = {"kept": splice(model, a, a, limit), "fill": splice(model, b, b, limit),
                            "kept+fill": splice(model, a, b, limit), "fill+kept": splice(model, b, a, limit)}
            for variant, y in variants.items():
                record_variant(rows, excerpt.audio, y, RATE, coded, excerpt=excerpt.name, kbps=kbps,
                               variant=variant, limit_hz=limit * RATE / model.config.window)
    command = (f"python benchmarks/kept_band_probe.py --data {args.data} --kept {args.kept} --fill {args.fill} "
               f"--bitrates {args.bitrates}{f' --match {args.match}' if args.match else ''} --out {args.out}")
    write_report(args.out, command, rows, summarise(rows, lambda r: f"{r['kbps']}/{r['variant']}", KEYS))


if __name__ == "__main__":
    main()
