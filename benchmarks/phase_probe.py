"""Does ViSQOL reward removing the hop-rate comb? The same magnitudes with other phases.

    python benchmarks/phase_probe.py --data corpus/real --checkpoint default \
        --out docs/evaluations/phase-probe.json

The comb (apollo/diagnostics.py hop_comb) comes from the phase of the generated band: with a
20-ms window and a 10-ms hop, a bin whose phase stays put from frame to frame adds up only at
multiples of 100 Hz. Every GAN continuation that removed it also changed the band's level, so
its ViSQOL could not tell the two apart. Here the generator runs once per (validation excerpt,
bitrate), and only the phase of the bins above the input's band limit changes:

- none: the generator's output as it is (what `apollo restore` writes).
- random: a random phase per bin and frame (seeded): noise with the generated magnitudes.
  Incoherent frames overlap-add to a quieter band, so:
- random_level: the same, 2.5 dB louder, the level of `none` within ~1 dB per band.
- jitter: the generator's phases, each frame shifted in time by up to +-5 ms (a linear phase):
  a frame keeps its shape, the hop-periodic repetition goes.
- copy: each bin takes the phase of a kept bin an even number of bins below (spectral band
  replication's patching): the kept band's own transients and time structure, shifted up.
- drift, drift_model (not in the default --variants): every bin a steady tone a little off its
  centre, constant from frame to frame (a phase advance of pi k + e_k per hop, e_k fixed per bin
  within +-pi/2, so +-25 Hz): the frames overlap-add coherently as the generator's own steady
  phase does, but the tones no longer sit on multiples of 100 Hz. drift starts every bin at a
  random phase; drift_model adds the advance to the generator's phases (its within-frame timing).
- smooth3, smooth5 (not in the default --variants): the generator's phases, each bin's magnitude the
  mean of its own over 3 or 5 frames centred on it: a fill that fluctuates less from frame to frame.
- quieter, louder (not in the default --variants): the generator's output, band 3 dB quieter or
  louder: how ViSQOL weighs the level of the fill on its own.

Scored with `apollo evaluate`'s metrics and diagnostics on the excerpts it makes (peak 0.9,
restored at peak 1 as the model's normalize_peak does).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from probe_report import record_variant, summarise, write_report

from apollo import degrade
from apollo.api import level_gain
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import input_band_limit
from apollo.pretrained import load_model

RATE = 44100
VARIANTS = ("none", "random", "random_level", "jitter", "copy")
LOUDER_DB = 2.5  # random_level: what incoherent overlap-add takes off the generated band
STEP_DB = 3.0  # quieter, louder
KEYS = ("visqol", "lsd", "si_snr", "hop_comb", "transient_envelope", "level_8-11k", "level_11-14k",
        "level_14-16k")


def copied_phase(spec: torch.Tensor, limit: int) -> torch.Tensor:
    """Unit phasors (T, F) above `limit` from the kept bins: bin k takes bin k - s, s a multiple
    of an even patch width about half the kept band wide (even, so a steady tone's phase still
    advances by the right amount per hop: pi per bin at half-window hops)."""
    frames, bins = spec.shape
    patch = 2 * max(limit // 4, 1)
    k = torch.arange(limit + 1, bins)
    source = spec[:, k - patch * ((k - limit - 1) // patch + 1)]
    out = torch.ones_like(spec)
    out[:, k] = source / source.abs().clamp_min(1e-12)
    return out


def rephase(spec: torch.Tensor, out: torch.Tensor, limit: int, variant: str, window: int, hop: int,
            seed: int = 0) -> torch.Tensor:
    """The restored spectrum (T, F) complex with `variant`'s phase above bin `limit`."""
    if variant == "none":
        return out
    above = torch.arange(out.shape[1]) > limit
    if variant in ("smooth3", "smooth5"):
        width = int(variant[-1])
        padded = torch.nn.functional.pad(out.abs().T[None], (width // 2, width // 2), mode="replicate")[0]
        smooth = padded.unfold(-1, width, 1).mean(-1).T  # (T, F)
        return torch.where(above, smooth.to(out.dtype) * out / out.abs().clamp_min(1e-12), out)
    if variant in ("quieter", "louder"):
        return torch.where(above, out * 10 ** ((STEP_DB if variant == "louder" else -STEP_DB) / 20), out)
    g = torch.Generator().manual_seed(seed)
    magnitude = out.abs()
    if variant in ("random", "random_level"):
        phase = torch.exp(2j * np.pi * torch.rand(out.shape, generator=g, dtype=torch.float64)).to(out.dtype)
        if variant == "random_level":
            magnitude = magnitude * 10 ** (LOUDER_DB / 20)
    elif variant == "jitter":
        shift = (torch.rand(out.shape[0], 1, generator=g, dtype=torch.float64) - 0.5) * hop
        bins = torch.arange(out.shape[1], dtype=torch.float64)
        phase = out / out.abs().clamp_min(1e-12) * torch.exp(-2j * np.pi * bins * shift / window).to(out.dtype)
    elif variant in ("drift", "drift_model"):
        k = torch.arange(out.shape[1], dtype=torch.float64)
        offset = (torch.rand(out.shape[1], generator=g, dtype=torch.float64) - 0.5) * np.pi  # e_k
        t = torch.arange(out.shape[0], dtype=torch.float64)[:, None]
        advance = torch.exp(1j * (np.pi * k + offset) * t).to(out.dtype)
        if variant == "drift":
            start = torch.exp(2j * np.pi * torch.rand(out.shape[1], generator=g, dtype=torch.float64)).to(out.dtype)
            phase = start * advance
        else:
            phase = out / out.abs().clamp_min(1e-12) * advance
    elif variant == "copy":
        phase = copied_phase(spec, limit)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return torch.where(above, magnitude * phase, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder; its validation split is used")
    parser.add_argument("--checkpoint", default="default", help="the generator (default: the shipped one)")
    parser.add_argument("--bitrates", default="24,32,48")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--told", action="store_true",
                        help="tell a model with bitrate rows the bitrate, as apollo restore does for an MP3 "
                             "(default: its unknown row, as in the first probes)")
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.checkpoint).eval()
    window, hop = model.config.window, model.config.hop
    variants = args.variants.split(",")
    rows = []
    for excerpt in make_excerpts(args.data, RATE, split="valid"):
        for kbps in (int(b) for b in args.bitrates.split(",")):
            coded = degrade.mp3(excerpt.audio, RATE, kbps)
            gain = level_gain(float(np.abs(coded).max()))
            x = torch.from_numpy(coded * gain).float()  # (channels, samples): one row per channel
            with torch.no_grad():
                spec = model.stft(x)
                told = torch.tensor([kbps]) if args.told else None
                out, _ = model.restore_spectrum(spec, channels=x.shape[0], bitrate=told)
                limit = int(input_band_limit(spec, channels=x.shape[0])[0])
                spec_c, out_c = torch.view_as_complex(spec.contiguous()), torch.view_as_complex(out.contiguous())
                for variant in variants:
                    new = torch.stack([rephase(s, o, limit, variant, window, hop, seed=c)
                                       for c, (s, o) in enumerate(zip(spec_c, out_c))])
                    y = model.istft(torch.view_as_real(new), x.shape[1]).numpy() / gain
                    record_variant(rows, excerpt.audio, y, RATE, coded, excerpt=excerpt.name, kbps=kbps,
                                   variant=variant, limit_hz=limit * RATE / window)
    command = (f"python benchmarks/phase_probe.py --data {args.data} --checkpoint {args.checkpoint} "
               f"--bitrates {args.bitrates} --variants {args.variants}{' --told' if args.told else ''} "
               f"--out {args.out}")
    write_report(args.out, command, rows, summarise(rows, lambda r: f"{r['kbps']}/{r['variant']}", KEYS))


if __name__ == "__main__":
    main()
