"""Energy-based silence removal as the authors did it before training."""

from __future__ import annotations

import numpy as np


def frame_power(x: np.ndarray, rate: int, frame_ms: float = 10.0) -> np.ndarray:
    """Mean power of consecutive frames of a (channels, samples) or (samples,) signal."""
    mono = x.mean(0) if x.ndim == 2 else x
    size = int(rate * frame_ms / 1000)
    frames = mono[: len(mono) // size * size].reshape(-1, size)
    return (frames.astype(np.float64) ** 2).mean(1)


def active_windows(x: np.ndarray, rate: int, window: float = 6.0, hop: float = 3.0, frame_ms: float = 10.0,
                   percentile: float = 15.0, silence_floor: float = 1e-10) -> list[tuple[int, int]]:
    """(start, end) samples of the windows worth training on.

    Threshold = the `percentile` of the power of non-silent frames; a window is kept when more
    than half of its frames exceed it.
    """
    power = frame_power(x, rate, frame_ms)
    voiced = power[power > silence_floor]
    if not voiced.size:
        return []
    threshold = np.percentile(voiced, percentile)
    active = (power >= threshold) & (power > silence_floor)  # >=: a steady tone is all active
    size = int(rate * frame_ms / 1000)
    per_window, per_hop = int(round(window * 1000 / frame_ms)), int(round(hop * 1000 / frame_ms))
    kept = []
    for start in range(0, max(len(active) - per_window, 0) + 1, per_hop):
        chunk = active[start:start + per_window]
        if len(chunk) == per_window and chunk.sum() > per_window / 2:
            kept.append((start * size, (start + per_window) * size))
    return kept
