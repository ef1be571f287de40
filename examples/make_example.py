"""Makes examples/example.mp3: 8 s of synthesized full-band music, MP3-coded at 64 kbps.

The audio is generated here (additive-synthesis chords and bass, noise-burst hi-hats and
snare, a kick), so the project may redistribute it. Rerun to rebuild the committed file:

    python examples/make_example.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100


def synth(seconds: float = 8.0, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    out = np.zeros((2, n))
    beat = 60 / 112
    chords = [(220.0, 277.18, 329.63), (196.0, 246.94, 293.66), (174.61, 220.0, 261.63), (196.0, 246.94, 311.13)]
    for bar, chord in enumerate(chords * 2):
        start = int(bar * 4 * beat * RATE)
        if start >= n:
            break
        seg = np.arange(min(int(4 * beat * RATE), n - start)) / RATE
        env = np.exp(-seg * 0.6) * (1 - np.exp(-seg * 40))
        for i, f in enumerate(chord):
            tone = sum(np.sin(2 * np.pi * f * h * seg) / h ** 1.2 for h in range(1, 24) if f * h < 20000)
            pan = 0.3 + 0.2 * i
            out[0, start:start + seg.size] += 0.08 * (1 - pan) * env * tone
            out[1, start:start + seg.size] += 0.08 * pan * env * tone
        bass = np.sin(2 * np.pi * chord[0] / 2 * seg) + 0.3 * np.sin(2 * np.pi * chord[0] * seg)
        out[:, start:start + seg.size] += 0.12 * np.exp(-seg * 1.5) * bass
    for step in range(int(seconds / (beat / 2))):
        start = int(step * beat / 2 * RATE)
        length = min(int(0.05 * RATE), n - start)
        if length <= 0:
            break
        click = rng.standard_normal((2, length)) * np.exp(-np.arange(length) / (0.008 * RATE))
        hat = np.diff(click, axis=1, prepend=0)  # high-passed noise: cymbal-like, energy to 20 kHz
        out[:, start:start + length] += 0.05 * hat
        if step % 4 == 2:  # snare
            length = min(int(0.15 * RATE), n - start)
            decay = np.exp(-np.arange(length) / (0.03 * RATE))
            out[:, start:start + length] += 0.12 * rng.standard_normal((2, length)) * decay
        if step % 4 == 0:  # kick
            length = min(int(0.25 * RATE), n - start)
            k = np.arange(length) / RATE
            out[:, start:start + length] += 0.3 * np.sin(2 * np.pi * (50 + 80 * np.exp(-k * 30)) * k) * np.exp(-k * 12)
    return (0.8 * out / np.abs(out).max()).T.astype(np.float32)


def main() -> None:
    target = Path(__file__).with_name("example.mp3")
    sf.write(str(target), synth(), RATE, format="MP3", subtype="MPEG_LAYER_III", compression_level=0.88,
             bitrate_mode="CONSTANT")
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
