"""Training examples as in the paper: mixtures or random stem sums, real MP3 damage, 3-s crops."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import degrade
from .cache import Cache


def coded_pair(clean: np.ndarray, rate: int, bitrate: int, max_peak: float = 1.0,
               level_neutral: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(MP3-coded input, target), peak-normalised together (paper Sec. III-A).

    The encoder takes 16-bit PCM, so `clean` is scaled to at most `max_peak` for coding and
    the decoded signal scaled back. With `level_neutral` the decoded signal is also divided by
    the encoder's own level change (degrade.encoder_gain: LAME's CBR presets scale by 0.95), so a
    model trained on the pairs learns the codec's damage, not one encoder's level.
    """
    peak = float(np.abs(clean).max())
    gain = min(1.0, max_peak / peak) if peak > 0 else 1.0
    coded = degrade.mp3(clean * gain, rate, bitrate) / gain
    if level_neutral:
        coded = coded / degrade.encoder_gain(rate, bitrate)
    top = max(peak, float(np.abs(coded).max()), 1e-8)
    return torch.from_numpy(coded / top), torch.from_numpy(clean / top)


def darken(audio: np.ndarray, corner_hz: float | None, rate: int, order: int = 4) -> np.ndarray:
    """`audio` (channels, samples) lowpassed at `corner_hz` (Butterworth of `order`, zero phase, so
    falling 12 * order dB an octave: 48 by default, as steep as an encoder's lowpass): music that
    is dark at the source, whose empty high band a restorer should leave empty. None returns it as
    it is."""
    if corner_hz is None:
        return audio
    from scipy.signal import butter, sosfiltfilt

    sos = butter(order, corner_hz, fs=rate, output="sos")
    return sosfiltfilt(sos, audio, axis=-1).astype(audio.dtype)


@dataclass(frozen=True)
class DarkSource:
    """A share of targets lowpassed at the source (darken), the corner log-uniform in `hz`:
    teaches the model that a spectrum which ends below the codec's cutoff has nothing above it
    to restore."""

    probability: float = 0.0
    hz: tuple[float, float] = (1000.0, 8000.0)
    # > 0: a corner is kept at least this many octaves under its bitrate's codec cutoff (the
    # range is cut there; a bitrate with no room left gets no such example), so a dark source
    # never looks like bright music the codec cut at the same place
    octaves: float = 0.0
    # the bitrates (kbps) this kind of example is drawn at; empty: all of them
    bitrates: tuple[int, ...] = ()
    # False: a model told bitrates is always told this source's bitrate, so its "unknown" row
    # (WAV/FLAC input) never learns this kind's restraint, which stays with the told rows
    withheld: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.probability <= 1:
            raise ValueError(f"darken probability must be in [0, 1], got {self.probability}")
        if len(self.hz) != 2 or not 0 < self.hz[0] <= self.hz[1]:
            raise ValueError(f"darken hz must be (low, high) with 0 < low <= high, got {self.hz}")
        if self.octaves < 0:
            raise ValueError(f"darken octaves must be >= 0, got {self.octaves}")

    def corners(self, sample_rate: int, bitrate: int) -> tuple[float, float] | None:
        """The corner range left under this bitrate's codec cutoff, or None where there is no room
        (or the source is not drawn at this bitrate)."""
        if self.bitrates and bitrate not in self.bitrates:
            return None
        low, high = self.hz
        if self.octaves > 0:
            high = min(high, degrade.codec_cutoff_hz(sample_rate, bitrate) / 2 ** self.octaves)
        return (low, high) if high >= low else None


@dataclass(frozen=True)
class ExampleConfig:
    segment: float = 3.0
    bitrates: tuple[int, ...] = degrade.PAPER_BITRATES
    mixture_probability: float = 0.5
    max_stems: int = 8
    # stem sums that are a single stem, on top of the uniform 1..max_stems draw: a lone stem
    # teaches the model when an emptied band should stay empty
    single_stem_probability: float = 0.0
    gain_db: int = 10  # integer gains in [-gain_db, gain_db]
    # kinds of dark example, each drawn with its own probability (together at most 1), so one
    # run can mix e.g. low corners at every bitrate with high corners where the codec leaves room
    dark_sources: tuple[DarkSource, ...] = ()
    examples_per_epoch: int = 40000
    level_neutral: bool = False  # coded inputs without the encoder's level change (coded_pair)
    # with several caches, the share of examples drawn from each, in the caches' order (empty:
    # their tracks are pooled, each track as likely as any other, and a cache with stems also
    # supplies every stem sum: real mixtures pooled with a synthetic stem corpus come out mostly
    # synthetic)
    cache_shares: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.cache_shares and (min(self.cache_shares) < 0 or abs(sum(self.cache_shares) - 1) > 1e-6):
            raise ValueError(f"cache shares must be >= 0 and add up to 1, got {list(self.cache_shares)}")
        if self.dark_share > 1 + 1e-9:
            raise ValueError("the dark sources' probabilities add up to more than 1: "
                             f"{[s.probability for s in self.dark_sources]}")
        for source in self.dark_sources:
            unknown = sorted(set(source.bitrates) - set(self.bitrates))
            if unknown:
                raise ValueError(f"a dark source is kept to bitrates {unknown} kbps that this run "
                                 f"never draws (bitrates: {list(self.bitrates)})")

    @property
    def dark_share(self) -> float:
        """The share of examples drawn as some kind of dark source."""
        return sum(s.probability for s in self.dark_sources)


class TrainingExamples(Dataset):
    """Item i of epoch e draws from a generator seeded by (seed, e, i).

    So every example, in every worker, has its own bitrate, stems and gains (the released
    code froze the bitrate per worker), and a resumed run sees the same examples again.
    Each item is (degraded, target, bitrate, always_told): (2, samples) float tensors peak-normalised
    together, the kbps, and whether the source was lowpassed by a dark source that is never
    withheld (`DarkSource.withheld` false: the trainer tells this example its bitrate).
    """

    def __init__(self, cache: str | Path | Cache, config: ExampleConfig = ExampleConfig(), split: str | None = "train",
                 seed: int = 0, epoch: int = 0, length: int | None = None) -> None:
        self.cache = cache if isinstance(cache, Cache) else Cache(cache, split)
        if not self.cache.tracks:
            raise ValueError(f"no {split or ''} tracks in the cache {self.cache.root}")
        self.config = config
        self.seed = seed
        self.epoch = epoch
        self.length = length or config.examples_per_epoch
        self.samples = int(config.segment * self.cache.sample_rate)
        shares = config.cache_shares
        if shares and len(shares) != len(self.cache.roots):
            raise ValueError(f"{len(shares)} cache shares given for {len(self.cache.roots)} caches")
        # one (stem pool, tracks with a mixture) per cache with shares, else one for all of them
        self.pools = [self._pool([t for t in self.cache.tracks if t["cache"] == number])
                      for number in range(len(shares))] if shares else [self._pool(self.cache.tracks)]
        empty = [number for number, (stems, mixtures) in enumerate(self.pools)
                 if shares[number] > 0 and not (stems or mixtures)] if shares else []
        if empty:
            raise ValueError(f"no {split or ''} tracks in the cache {self.cache.roots[empty[0]]}, "
                             f"whose share is {shares[empty[0]]}")

    @staticmethod
    def _pool(tracks: list[dict]) -> tuple[list[tuple[dict, str]], list[dict]]:
        """Every (track, stem) and every track with a mixture: what one draw picks from."""
        return [(t, cat) for t in tracks for cat in t["stems"]], [t for t in tracks if "mixture" in t]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _crop(self, rng: np.random.Generator, track: dict) -> int:
        start, end = track["windows"][rng.integers(len(track["windows"]))]
        return int(rng.integers(start, max(start + 1, end - self.samples)))

    def draw(self, index: int) -> dict:
        """The random choices of one example (exposed for tests and logging)."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        cfg = self.config
        # the cache first, and only with shares, so a pooled recipe's examples stay the same
        number = 0
        if cfg.cache_shares:
            number = min(int(np.searchsorted(np.cumsum(cfg.cache_shares), rng.random(), side="right")),
                         len(self.pools) - 1)
        stem_pool, with_mixture = self.pools[number]
        if with_mixture and (not stem_pool or rng.random() < cfg.mixture_probability):
            track = with_mixture[rng.integers(len(with_mixture))]
            parts = [("mixture", track, self._crop(rng, track), 0)]
        else:
            # no extra draw at 0, so the released recipe's examples stay the same
            single = cfg.single_stem_probability > 0 and rng.random() < cfg.single_stem_probability
            count = 1 if single else int(rng.integers(1, cfg.max_stems + 1))
            picks = rng.integers(len(stem_pool), size=count)
            parts = []
            for p in picks:
                track, cat = stem_pool[p]
                parts.append((cat, track, self._crop(rng, track), int(rng.integers(-cfg.gain_db, cfg.gain_db + 1))))
        bitrate = int(cfg.bitrates[rng.integers(len(cfg.bitrates))])
        corner = None  # drawn last and only when asked, so the other draws stay as they were
        source = self._dark_source(rng)
        if source is not None:
            corners = source.corners(self.cache.sample_rate, bitrate)
            if corners is not None:
                corner = float(np.exp(rng.uniform(np.log(corners[0]), np.log(corners[1]))))
        always_told = corner is not None and not source.withheld
        return {"parts": parts, "bitrate": bitrate, "darken_hz": corner, "always_told": always_told}

    def _dark_source(self, rng: np.random.Generator) -> DarkSource | None:
        """One uniform draw picks a dark source by its probability, or none (no draw at all
        when every probability is 0, so undarkened recipes keep their examples)."""
        if self.config.dark_share <= 0:
            return None
        u, edge = rng.random(), 0.0
        for source in self.config.dark_sources:
            edge += source.probability
            if u < edge:
                return source
        return None

    def target(self, choice: dict) -> np.ndarray:
        total = np.zeros((2, self.samples), np.float32)
        for key, track, start, gain in choice["parts"]:
            if key == "mixture":
                audio = self.cache.read(track["mixture"], track["mixture_scale"], start, self.samples)
            else:
                audio = self.cache.read(track["stems"][key], track["scales"][key], start, self.samples)
            total += audio * np.float32(10 ** (gain / 20))
        return total

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, bool]:
        for attempt in range(10):
            choice = self.draw(index + attempt * self.length)
            clean = darken(self.target(choice), choice["darken_hz"], self.cache.sample_rate)
            if np.abs(clean).max() > 1e-4:
                break
        degraded, target = coded_pair(clean, self.cache.sample_rate, choice["bitrate"],
                                      level_neutral=self.config.level_neutral)
        return degraded, target, choice["bitrate"], choice["always_told"]
