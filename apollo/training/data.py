"""Training data plumbing: a resumable distributed sampler and procedurally generated examples."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .. import degrade
from ..data.examples import coded_pair


class ResumableSampler(Sampler[int]):
    """Epoch-seeded permutation, sharded by rank, that can start part-way through an epoch.

    Example indices depend only on (seed, epoch, position), so a resumed run feeds exactly the
    batches an uninterrupted one would have.
    """

    def __init__(self, length: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.length, self.seed, self.rank, self.world = length, seed, rank, world
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def shard(self) -> np.ndarray:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.length)
        per_rank = self.length // self.world
        return order[self.rank * per_rank:(self.rank + 1) * per_rank]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard()[self.start:].tolist())

    def __len__(self) -> int:
        return max(self.length // self.world - self.start, 0)


class SyntheticExamples(Dataset):
    """Generated music-like clips (harmonic notes up to 20 kHz, noise hits) with real MP3 damage.

    For the smoke recipe and tests: no files, no downloads, seeded per index.
    """

    def __init__(self, length: int, segment: float, sample_rate: int = 44100,
                 bitrates: tuple[int, ...] = degrade.PAPER_BITRATES, seed: int = 0,
                 level_neutral: bool = False) -> None:
        self.length, self.samples, self.rate = length, int(segment * sample_rate), sample_rate
        self.bitrates, self.seed, self.level_neutral = tuple(bitrates), seed, level_neutral
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def clean(self, rng: np.random.Generator) -> np.ndarray:
        n, rate = self.samples, self.rate
        t = np.arange(n) / rate
        out = np.zeros((2, n))
        for _ in range(int(rng.integers(2, 6))):
            f0 = 55 * 2 ** (rng.integers(0, 48) / 12)
            start = int(rng.integers(0, n // 2))
            env = np.zeros(n)
            env[start:] = np.exp(-(t[: n - start]) * rng.uniform(1, 6))
            harmonics = np.arange(1, int(20000 / f0) + 1)
            tone = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h ** rng.uniform(0.7, 1.5)
                       for h in harmonics[:60])
            pan = rng.uniform(0.2, 0.8)
            out += np.stack([pan, 1 - pan])[:, None] * env * tone * rng.uniform(0.1, 0.4)
        for _ in range(int(rng.integers(0, 8))):
            start = int(rng.integers(0, n))
            length = min(int(rate * rng.uniform(0.01, 0.1)), n - start)
            burst = rng.standard_normal((2, length)) * np.exp(-np.arange(length) / (0.2 * length + 1))
            out[:, start:start + length] += np.diff(burst, axis=1, prepend=0) * rng.uniform(0.05, 0.3)
        return out.astype(np.float32)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        """(degraded, target, bitrate, always_told) as TrainingExamples gives them; never darkened or told."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        clean = self.clean(rng)
        clean /= max(np.abs(clean).max(), 1e-6)
        bitrate = int(self.bitrates[rng.integers(len(self.bitrates))])
        degraded, target = coded_pair(clean, self.rate, bitrate, max_peak=0.9, level_neutral=self.level_neutral)
        return degraded, target, bitrate, False
