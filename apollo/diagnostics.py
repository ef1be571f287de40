"""Why a restoration falls short: five measurements of the failure modes seen on real recordings.

Signals are (channels, samples) or (samples,) arrays at one rate, aligned; each measure runs on the
mono downmix. `cutoff` is the degraded input's band edge (metrics.cutoff_hz).

- band_level_error: the restored band's level against the reference, per frequency band (dB).
- holes: the share of active cells just under the cutoff that the restoration leaves empty.
- transient_following: whether the 8-16 kHz energy moves with the reference's, frame by frame.
- hop_comb: the share of the high band's energy on the hop-rate harmonics (a buzz at rate / hop).
- LSD below and above the cutoff is metrics.lsd with max_hz / min_hz.

Bands the reference does not have (SILENT_BAND_DB) have no level error and no envelope.
"""

from __future__ import annotations

import numpy as np

# the bands of band_level_error, in Hz
LEVEL_BANDS = ((2000, 4000), (4000, 6000), (6000, 8000), (8000, 11000), (11000, 14000), (14000, 16000),
               (16000, 18000), (18000, 20000))
# a reference band this far under the reference's whole power is silent: at or under 16-bit
# dither for music near full scale, or emptied by a lowpass upstream (some real-music excerpts
# have nothing above 14 or 18 kHz). Its level error is left out, as any fill over nothing is an
# unbounded dB error that swamps a mean over excerpts; LSD above the cutoff still counts the fill.
SILENT_BAND_DB = 90.0
HOLE_SPAN_HZ = 2000.0  # holes are counted in this span under the cutoff
HOLE_DB = 20.0  # a cell this far under the reference is a hole
ACTIVE_DB = 40.0  # a reference cell within this of the span's loudest cell is active
TRANSIENT_BAND = (8000.0, 16000.0)
COMB_WIDTH_HZ = 10.0  # energy within this of a multiple of rate / hop counts as on the comb
COMB_HOP = 441  # the generator's hop at 44.1 kHz: its frame rate is 100 Hz


def _mono(x: np.ndarray) -> np.ndarray:
    return np.atleast_2d(np.asarray(x, np.float64)).mean(0)


def _band_power(x: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.signal import welch

    return welch(_mono(x), rate, nperseg=min(4096, x.shape[-1]))


def _silent(band_power: float, total_power: float) -> bool:
    """Whether a reference band is silent: SILENT_BAND_DB or more under the reference's whole power."""
    return band_power <= max(total_power * 10 ** (-SILENT_BAND_DB / 10), 1e-20)


def band_level_error(reference: np.ndarray, estimate: np.ndarray, rate: int,
                     bands: tuple[tuple[float, float], ...] = LEVEL_BANDS) -> dict[str, float]:
    """Per band 'lo-hi' (kHz): 10 log10 of the estimate's over the reference's long-term power.

    Negative: the restored band is too quiet (0 is right). Bands above Nyquist or silent in the
    reference (SILENT_BAND_DB under its whole power) are left out.
    """
    freqs, ref = _band_power(reference, rate)
    _, est = _band_power(estimate, rate)
    out = {}
    for lo, hi in bands:
        keep = (freqs >= lo) & (freqs < hi)
        if hi > rate / 2 or not keep.any() or _silent(ref[keep].sum(), ref.sum()):
            continue
        out[f"{lo / 1000:g}-{hi / 1000:g}"] = float(10 * np.log10((est[keep].sum() + 1e-20) / ref[keep].sum()))
    return out


def _spectrogram_db(x: np.ndarray, rate: int, n_fft: int = 2048, hop: int = 512) -> tuple[np.ndarray, np.ndarray]:
    from .metrics import db_spectrogram

    return np.arange(n_fft // 2 + 1) * rate / n_fft, db_spectrogram(_mono(x), n_fft, hop, floor=1e-12)


def holes(reference: np.ndarray, estimate: np.ndarray, rate: int, cutoff: float) -> float:
    """Share of active cells in the HOLE_SPAN_HZ under `cutoff` where the estimate is more than
    HOLE_DB under the reference (0: none; the codec's holes left as they are: up to 1)."""
    freqs, ref = _spectrogram_db(reference, rate)
    _, est = _spectrogram_db(estimate, rate)
    span = (freqs >= cutoff - HOLE_SPAN_HZ) & (freqs < cutoff)
    if not span.any():
        return 0.0
    ref, est = ref[span], est[span]
    active = ref > ref.max() - ACTIVE_DB
    if not active.any():
        return 0.0
    return float(np.mean(est[active] < ref[active] - HOLE_DB))


def input_holes(x: np.ndarray, rate: int, limit: float) -> float:
    """Share of an input's cells in the HOLE_SPAN_HZ under `limit` more than HOLE_DB under their
    bin's median level, in the frames and bins where the music plays (within ACTIVE_DB of the
    loudest): the holes an MP3 encoder leaves under its lowpass, read without a reference. Asked
    whether it tells a bright low-bitrate MP3 from music dark at the source coded higher that ends
    as low: on the training split it does not (docs/default-model.md, "Do the encoder's holes tell
    them apart?")."""
    freqs, level = _spectrogram_db(x, rate)
    span = (freqs >= limit - HOLE_SPAN_HZ) & (freqs < limit)
    if not span.any() or level.shape[-1] == 0:
        return 0.0
    frames = 10 * np.log10(np.mean(10 ** (level / 10), axis=0))  # each frame's whole level: a hole is no pause
    level = level[span][:, frames > frames.max() - ACTIVE_DB]  # (bins, frames)
    median = np.median(level, axis=1)
    level = level[median > median.max() - ACTIVE_DB]
    median = np.median(level, axis=1, keepdims=True)
    return float(np.mean(level < median - HOLE_DB))


def band_frame_power(x: np.ndarray, rate: int, bands: list[tuple[float, float]]) -> np.ndarray:
    """Each band's power per frame (len(bands), frames): 1024-sample frames, hop 256, mono."""
    from scipy.signal import stft

    freqs, _, spec = stft(_mono(x), rate, nperseg=1024, noverlap=768, boundary=None, padded=False)
    power = np.abs(spec) ** 2
    return np.stack([power[(freqs >= lo) & (freqs < min(hi, rate / 2))].sum(0) for lo, hi in bands])


def band_envelope_db(x: np.ndarray, rate: int, band: tuple[float, float] = TRANSIENT_BAND) -> np.ndarray:
    """The band's frame energy in dB (band_frame_power): the envelope transient_following correlates."""
    return 10 * np.log10(band_frame_power(x, rate, [band])[0] + 1e-12)


def transient_following(reference: np.ndarray, estimate: np.ndarray, rate: int,
                        band: tuple[float, float] = TRANSIENT_BAND,
                        estimate_band: tuple[float, float] | None = None) -> dict[str, float]:
    """Pearson correlations of the band's frame energy (dB, band_frame_power) and of its onsets
    (the rises of that envelope) between estimate and reference (1: follows).

    `estimate_band` (default: `band`) compares another band of the estimate with the reference's
    `band`: how well a kept band foretells the envelope of the band a restorer has to write.
    Empty where the reference's band is silent (SILENT_BAND_DB under its whole power): there
    is no envelope to follow, only dither or a lowpass's leak, as with band_level_error.
    """
    ref_band, ref_all = band_frame_power(reference, rate, [band, (0.0, rate / 2)])
    if _silent(ref_band.sum(), ref_all.sum()):
        return {}
    ref = 10 * np.log10(ref_band + 1e-12)
    est = band_envelope_db(estimate, rate, estimate_band or band)
    onsets_ref, onsets_est = np.maximum(np.diff(ref), 0), np.maximum(np.diff(est), 0)
    return {"envelope": correlation(ref, est), "onsets": correlation(onsets_ref, onsets_est)}


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; 0 where either side is constant or too short."""
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def hop_comb(estimate: np.ndarray, rate: int, cutoff: float, hop: int = COMB_HOP,
             top_hz: float = 20000.0) -> float:
    """Share of the estimate's energy from `cutoff` to `top_hz` that lies within COMB_WIDTH_HZ
    of a multiple of rate / hop, at 1 Hz resolution. Noise gives 2 x 10 / 100 = ~0.2; a band
    whose phase repeats every hop gives up to 1."""
    from scipy.signal import welch

    x = _mono(estimate)
    freqs, power = welch(x, rate, nperseg=min(rate, x.size))
    keep = (freqs >= cutoff) & (freqs < min(top_hz, rate / 2))
    if not keep.any() or power[keep].sum() <= 1e-20:
        return 0.0
    step = rate / hop
    distance = np.abs(freqs - np.round(freqs / step) * step)
    return float(power[keep & (distance <= COMB_WIDTH_HZ)].sum() / power[keep].sum())


def diagnose(reference: np.ndarray, estimate: np.ndarray, rate: int, cutoff: float) -> dict[str, float]:
    """Every diagnostic as flat numbers (for tables and CSV columns)."""
    from .metrics import lsd

    out = {"lsd_below": lsd(reference, estimate, rate, max_hz=cutoff),
           "holes": holes(reference, estimate, rate, cutoff)}
    for name, value in transient_following(reference, estimate, rate).items():
        out[f"transient_{name}"] = value
    out["hop_comb"] = hop_comb(estimate, rate, cutoff)
    for band, error in band_level_error(reference, estimate, rate).items():
        out[f"level_{band}k"] = error
    return out
