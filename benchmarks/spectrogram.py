"""Before/after spectrogram of one held-out excerpt: clean reference, MP3 input, restoration.

    python benchmarks/spectrogram.py --data corpus/synth --bitrate 32 \
        [--checkpoint PATH] [--excerpt 0] [--seconds 6] --out docs/default-model-spectrogram.png

The excerpt comes from the dataset's test split (the same excerpts `apollo evaluate --data`
scores); without --checkpoint the shipped default model restores it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from apollo import degrade, metrics
from apollo.api import Restorer
from apollo.audio import resample
from apollo.evaluate import make_excerpts

RATE = 44100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder; its test split is used")
    parser.add_argument("--checkpoint", default=None, help="model to show (default: the shipped model)")
    parser.add_argument("--bitrate", type=int, default=32)
    parser.add_argument("--excerpt", type=int, default=0, help="index among the test excerpts")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    excerpt = make_excerpts(args.data, RATE, seconds=args.seconds)[args.excerpt]
    ref = excerpt.audio
    coded = degrade.mp3(ref, RATE, args.bitrate)
    restored, rate = Restorer(args.checkpoint).restore(coded, RATE, bitrate=args.bitrate)
    restored, _ = metrics.align(ref, resample(restored, rate, RATE), max_lag=2048)
    panels = [("clean reference", ref), (f"MP3 {args.bitrate} kbps (input)", coded), ("apollo (restored)", restored)]
    levels = [metrics.db_spectrogram(audio.mean(0)) for _, audio in panels]
    top = float(levels[0].max())  # colour scale from the reference's loudest cell down 110 dB
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True, constrained_layout=True)
    for ax, (title, audio), level in zip(axes, panels, levels):
        lsd = metrics.lsd(ref, audio, RATE)
        image = ax.imshow(level, origin="lower", aspect="auto", cmap="magma", vmin=top - 110, vmax=top,
                          extent=(0, audio.shape[1] / RATE, 0, RATE / 2000))
        ax.set_title(title if audio is ref else f"{title}, LSD {lsd:.2f}", fontsize=10)
        ax.set_xlabel("seconds")
    axes[0].set_ylabel("kHz")
    fig.colorbar(image, ax=axes, label="dB", shrink=0.9)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=72)
    print(f"{excerpt.name}: wrote {args.out}")


if __name__ == "__main__":
    main()
