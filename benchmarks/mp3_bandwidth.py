"""-20 dB bandwidth that apollo.degrade.mp3 leaves at each bitrate (stereo white noise, 44.1 kHz).

    python benchmarks/mp3_bandwidth.py
"""

from __future__ import annotations

import numpy as np

from apollo import degrade
from apollo.metrics import bandwidth_hz

RATE = 44100


def cutoff(y: np.ndarray) -> float:
    return bandwidth_hz(y, RATE, 20.0)  # the project's one bandwidth rule, at -20 dB


def main() -> None:
    noise = (0.1 * np.random.default_rng(0).standard_normal((2, 4 * RATE))).astype(np.float32)
    print("| bitrate (kbps) | " + " | ".join(str(k) for k in degrade.PAPER_BITRATES) + " |")
    print("| bandwidth (kHz) | " + " | ".join(f"{cutoff(degrade.mp3(noise, RATE, k)) / 1000:.1f}"
                                             for k in degrade.PAPER_BITRATES) + " |")


if __name__ == "__main__":
    main()
