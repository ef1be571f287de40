"""Spectrogram pictures for pages (apollo web, apollo demo): PNG, one fixed colour scale, flat memory.

Every picture maps -100..0 dB (re a full-scale sine) onto the same colours, so a before and an
after picture compare by eye; frequency is linear from 0 to half the sample rate, where the band
an MP3 encoder removed is plain to see. Written without an imaging library.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

SPECTROGRAM_FFT, SPECTROGRAM_HOP, SPECTROGRAM_ROWS, SPECTROGRAM_COLUMNS = 2048, 512, 256, 900
DB_RANGE = (-100.0, 0.0)  # one colour scale for every picture: dB re a full-scale sine
# "magma"-like ramp: dark for silence, bright for loud
PALETTE = np.array([(0, 0, 4), (40, 11, 84), (101, 21, 110), (159, 42, 99), (212, 72, 66), (245, 125, 21),
                    (250, 193, 39), (252, 255, 164)], np.float64)


def spectrogram_png(wav: np.ndarray, path: Path) -> None:
    """The spectrogram of a whole (channels, samples) array as a PNG file."""
    for _ in tee_spectrogram(iter([wav]), wav.shape[1], path):
        pass


def tee_spectrogram(blocks: Iterator[np.ndarray], frames: float, png: Path) -> Iterator[np.ndarray]:
    """Yields (channels, n) `blocks` unchanged while it draws their mono spectrogram into `png`
    (flat memory); `frames` is about how many samples they hold, for the picture's width."""
    total = max(1, int(frames - SPECTROGRAM_FFT) // SPECTROGRAM_HOP + 1)  # frames the STFT below will have
    columns = min(SPECTROGRAM_COLUMNS, total)
    power = np.zeros((columns, SPECTROGRAM_FFT // 2 + 1))
    counts = np.zeros(columns)
    window = np.hanning(SPECTROGRAM_FFT)
    scale = (window.sum() / 2) ** 2  # a full-scale sine reads 0 dB
    carry = np.zeros(0, np.float32)
    index = 0
    for block in blocks:
        yield block
        mono = np.concatenate([carry, block.mean(axis=0)])
        count = max(0, (len(mono) - SPECTROGRAM_FFT) // SPECTROGRAM_HOP + 1)
        if count:
            starts = np.arange(count) * SPECTROGRAM_HOP
            frames_ = mono[starts[:, None] + np.arange(SPECTROGRAM_FFT)] * window
            spec = np.abs(np.fft.rfft(frames_, axis=-1)) ** 2 / scale
            cols = np.minimum((index + np.arange(count)) * columns // total, columns - 1)
            np.add.at(power, cols, spec)
            np.add.at(counts, cols, 1)
            index += count
        carry = mono[count * SPECTROGRAM_HOP:]
    mean = power / np.maximum(counts, 1)[:, None]
    bins = mean[:, 1:].reshape(columns, SPECTROGRAM_ROWS, -1).mean(axis=-1)  # 1024 bins -> 256 rows
    db = 10 * np.log10(bins + 1e-12)
    level = np.clip((db - DB_RANGE[0]) / (DB_RANGE[1] - DB_RANGE[0]), 0, 1)
    index = np.round(level.T[::-1] * 255).astype(np.uint8)  # rows: high frequencies on top
    png.write_bytes(_png(index, _ramp(256)))


def _ramp(count: int) -> np.ndarray:
    """`count` RGB colours along PALETTE, dark (silence) to bright (loud)."""
    position = np.linspace(0, len(PALETTE) - 1, count)
    low = np.minimum(position.astype(int), len(PALETTE) - 2)
    frac = (position - low)[:, None]
    return np.round(PALETTE[low] * (1 - frac) + PALETTE[low + 1] * frac).astype(np.uint8)


def _png(index: np.ndarray, palette: np.ndarray) -> bytes:
    """A minimal 8-bit palette PNG of (rows, columns) colour indices (a third of RGB's size)."""
    height, width = index.shape
    raw = b"".join(b"\x00" + index[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"PLTE", palette.tobytes())
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
