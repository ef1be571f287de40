"""A production chain for the synthetic corpus, so its stems and mixes sound produced, not rendered.

Per stem: a high-pass, EQ (shelves and a bell), compression, sometimes saturation (drums, bass,
guitar, keys) and a reverb send. Per mix: bus compression, then a mastering limiter at modern
loudness (an RMS of -14 to -9 dBFS, peaks at -1 dBFS). Every setting is drawn from the track's
generator, so a track renders the same on every machine. Pedalboard (the `[synth]` extra).
"""

from __future__ import annotations

import numpy as np

from ..optional import require

SATURATED = ("drums", "bass", "guitar", "other_keys", "other")  # where drive is common in production
CEILING = 10 ** (-1 / 20)  # -1 dBFS: the mastered mix's highest sample


def _pedalboard():  # noqa: ANN202
    return require("pedalboard", "synth", "the synthetic corpus's production chain")


def stem_chain(category: str, rng: np.random.Generator):  # noqa: ANN201 - a pedalboard.Pedalboard
    """The effects of one stem, drawn from rng."""
    pb = _pedalboard()
    effects = [
        pb.HighpassFilter(cutoff_frequency_hz=float(rng.uniform(20, 40 if category in ("bass", "drums") else 120))),
        pb.LowShelfFilter(cutoff_frequency_hz=float(rng.uniform(80, 250)), gain_db=float(rng.uniform(-4, 4))),
        pb.PeakFilter(cutoff_frequency_hz=float(np.exp(rng.uniform(np.log(200), np.log(6000)))),
                      gain_db=float(rng.uniform(-6, 6)), q=float(rng.uniform(0.5, 2.0))),
        pb.HighShelfFilter(cutoff_frequency_hz=float(rng.uniform(4000, 10000)), gain_db=float(rng.uniform(-4, 5))),
        pb.Compressor(threshold_db=float(rng.uniform(-30, -10)), ratio=float(rng.uniform(1.5, 6.0)),
                      attack_ms=float(rng.uniform(1, 30)), release_ms=float(rng.uniform(50, 300))),
    ]
    if category in SATURATED and rng.random() < 0.3:
        effects.append(pb.Distortion(drive_db=float(rng.uniform(2, 12))))
    if rng.random() < 0.6:
        effects.append(pb.Reverb(room_size=float(rng.uniform(0.1, 0.8)), damping=float(rng.uniform(0.2, 0.8)),
                                 wet_level=float(rng.uniform(0.05, 0.3)), dry_level=1.0,
                                 width=float(rng.uniform(0.5, 1.0))))
    return pb.Pedalboard(effects)


def process_stem(audio: np.ndarray, category: str, rate: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) stem -> the same length, produced."""
    out = stem_chain(category, rng)(np.ascontiguousarray(audio, np.float32), rate)
    return _fit(out, audio.shape[1])


def master(mix: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """(2, n) sum of stems -> a mastered mix: bus compression, gain to the drawn loudness, limiter."""
    pb = _pedalboard()
    bus = pb.Pedalboard([pb.Compressor(threshold_db=float(rng.uniform(-20, -8)), ratio=float(rng.uniform(1.5, 3.0)),
                                       attack_ms=float(rng.uniform(5, 30)), release_ms=float(rng.uniform(100, 400)))])
    out = bus(np.ascontiguousarray(mix, np.float32), rate)
    rms = float(np.sqrt(np.mean(out ** 2)))
    target = 10 ** (float(rng.uniform(-14, -9)) / 20)
    if rms > 1e-6:
        out = out * (target / rms)
    out = pb.Pedalboard([pb.Limiter(threshold_db=-1.0, release_ms=float(rng.uniform(50, 200)))])(out, rate)
    peak = float(np.abs(out).max())
    if peak > CEILING:  # the limiter's release lets a few peaks through: no sample may clip
        out = out * (CEILING / peak)
    return _fit(out, mix.shape[1])


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.shape[1] >= length:
        return x[:, :length]
    return np.pad(x, ((0, 0), (0, length - x.shape[1])))
