"""Whether a candidate restores music dark at the source exactly as a base model does.

The bundled example, darkened at each corner (data.examples.darken) and coded at each bitrate, is
restored told that bitrate by both; and the plain example coded at the first bitrate untold. A change
to a told gain that its gate (fill_gain_from_hz_told) or the dark-source rule holds back must leave
these outputs the same to the bit (docs/default-model.md, "v14's told fill gains chosen again", rule 0):

    python benchmarks/dark_identity.py BASE CANDIDATE [CANDIDATE ...] [--corners 1500,3000] [--bitrates 24,32,48]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from apollo import Restorer, audio
from apollo.data.examples import darken
from apollo.degrade import mp3

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "example.mp3"
RATE = 44100


def example_music() -> np.ndarray:
    """The bundled example, decoded, at 44.1 kHz: (channels, samples)."""
    wav, info = audio.read(EXAMPLE)
    return audio.resample(wav, info.sample_rate, RATE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("base")
    parser.add_argument("candidates", nargs="+")
    parser.add_argument("--corners", default="1500,3000")
    parser.add_argument("--bitrates", default="24,32,48")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wav = example_music()
    bitrates = [int(k) for k in args.bitrates.split(",")]
    inputs = [(f"dark {hz} Hz, {kbps} kbps told", mp3(darken(wav, float(hz), RATE), RATE, kbps), kbps)
              for hz in args.corners.split(",") for kbps in bitrates]
    inputs.append((f"as it is, {bitrates[0]} kbps untold", mp3(wav, RATE, bitrates[0]), None))
    base = Restorer(args.base, device="cpu")
    expected = [base.restore(coded, RATE, bitrate=kbps)[0] for _, coded, kbps in inputs]
    holds = True
    for path in args.candidates:
        restorer = Restorer(path, device="cpu")
        for (name, coded, kbps), want in zip(inputs, expected):
            same = bool(np.array_equal(restorer.restore(coded, RATE, bitrate=kbps)[0], want))
            holds &= same
            print(f"{path}: {name}: identical: {same}")
    print("holds" if holds else "FAILS")
    return 0 if holds else 1


if __name__ == "__main__":
    raise SystemExit(main())
