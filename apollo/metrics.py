"""Quality metrics as the paper and the released evaluation compute them.

Signals are (channels, samples) or (samples,) float arrays at the same rate. SDR and SI-SNR use
zero-mean signals and are averaged over channels; LSD is in dB; ViSQOL runs in audio mode at
48 kHz on the mono downmix.
"""

from __future__ import annotations

import numpy as np

from .audio import fit_length, resample

EPS = 1e-8


def _checked(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as 2-D float64 arrays of one shape."""
    ref = np.atleast_2d(np.asarray(reference, np.float64))
    est = np.atleast_2d(np.asarray(estimate, np.float64))
    if ref.shape != est.shape:
        raise ValueError(f"reference {ref.shape} and estimate {est.shape} differ in shape")
    return ref, est


def _pair(reference: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ref, est = _checked(reference, estimate)
    return ref - ref.mean(-1, keepdims=True), est - est.mean(-1, keepdims=True)


def sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(|s|^2 / |s - s_hat|^2), zero-mean, averaged over channels (dB)."""
    ref, est = _pair(reference, estimate)
    num = (ref**2).sum(-1)
    den = ((ref - est) ** 2).sum(-1)
    return float(np.mean(10 * np.log10((num + EPS) / (den + EPS))))


def si_snr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant SNR: the estimate's projection on the reference vs the rest (dB)."""
    ref, est = _pair(reference, estimate)
    scale = (est * ref).sum(-1, keepdims=True) / ((ref**2).sum(-1, keepdims=True) + EPS)
    target = scale * ref
    noise = est - target
    return float(np.mean(10 * np.log10(((target**2).sum(-1) + EPS) / ((noise**2).sum(-1) + EPS))))


def _power_spectrogram(x: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    from scipy.signal import stft

    _, _, spec = stft(x, nperseg=n_fft, noverlap=n_fft - hop, boundary=None, padded=False)
    return np.abs(spec) ** 2  # (..., bins, frames)


def db_spectrogram(x: np.ndarray, n_fft: int = 2048, hop: int = 512, floor: float = 1e-10) -> np.ndarray:
    """Power spectrogram in dB, (..., bins, frames): the one LSD compares, for plots of it."""
    return 10 * np.log10(_power_spectrogram(x, n_fft, hop) + floor)


def lsd(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, min_hz: float = 0.0,
        n_fft: int = 2048, hop: int = 512, max_hz: float | None = None) -> float:
    """Log-spectral distance (dB): RMS over bins from min_hz up to (not including) max_hz of the
    log-power difference, averaged over frames and channels."""
    ref, est = _checked(reference, estimate)
    freqs = np.arange(n_fft // 2 + 1) * sample_rate / n_fft
    keep = (freqs >= min_hz) & (freqs < (np.inf if max_hz is None else max_hz))
    if not keep.any():
        return 0.0
    diff = db_spectrogram(ref, n_fft, hop)[..., keep, :] - db_spectrogram(est, n_fft, hop)[..., keep, :]
    return float(np.mean(np.sqrt(np.mean(diff**2, axis=-2))))


def average_spectrum_db(mono: np.ndarray, sample_rate: int, floor: float = 1e-20) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, level in dB) of a signal's average spectrum, smoothed over ~50 Hz.

    The smoothing does not zero-pad the edges, which would fake a cliff at Nyquist.
    """
    from scipy.ndimage import uniform_filter1d
    from scipy.signal import welch

    freqs, power = welch(mono, sample_rate, nperseg=min(4096, len(mono)))
    return freqs, uniform_filter1d(10 * np.log10(power + floor), 5, mode="nearest")


def bandwidth_hz(x: np.ndarray, sample_rate: int, floor_db: float) -> float:
    """The one bandwidth rule: the highest frequency whose long-term level (average_spectrum_db
    of the mono downmix, above 100 Hz) is within floor_db of the loudest. Nyquist for silence.

    Its users pick the floor: 50 dB for an MP3's band edge (cutoff_hz), 60 dB before the
    lossy-target cliff test (data.readers), 70 dB for the full-band rule of the real-music
    corpus, 20 dB for the bandwidth table of benchmarks/mp3_bandwidth.py.
    """
    mono = np.atleast_2d(x).mean(0)
    if mono.size < 16 or not np.any(mono):
        return float(sample_rate / 2)
    freqs, level = average_spectrum_db(mono, sample_rate, floor=1e-30)
    audible = freqs > 100
    if not audible.any():
        return float(sample_rate / 2)
    above = np.nonzero(audible & (level > level[audible].max() - floor_db))[0]
    return float(freqs[above[-1]]) if above.size else float(sample_rate / 2)


def cutoff_hz(x: np.ndarray, sample_rate: int, drop_db: float = 50.0) -> float:
    """The band edge an MP3 encoder left (used for LSD "above the cutoff"): bandwidth_hz at 50 dB."""
    return bandwidth_hz(x, sample_rate, drop_db)


def find_lag(reference: np.ndarray, estimate: np.ndarray, max_lag: int) -> int:
    """Signed lag (samples) of estimate relative to reference, by FFT cross-correlation."""
    ref = np.atleast_2d(reference).mean(0)
    est = np.atleast_2d(estimate).mean(0)
    n = len(ref) + len(est)
    size = 1 << int(np.ceil(np.log2(n)))
    corr = np.fft.irfft(np.fft.rfft(est, size) * np.conj(np.fft.rfft(ref, size)), size)
    lags = np.concatenate([np.arange(0, max_lag + 1), np.arange(-max_lag, 0)])
    values = np.concatenate([corr[: max_lag + 1], corr[size - max_lag:]])
    return int(lags[np.argmax(values)])


def align(reference: np.ndarray, estimate: np.ndarray, max_lag: int = 4096) -> tuple[np.ndarray, int]:
    """Shifts estimate so it lines up with reference (same length); returns it and the lag fixed."""
    est = np.atleast_2d(np.asarray(estimate, np.float32))
    ref = np.atleast_2d(reference)
    lag = find_lag(ref, est, max_lag)
    if lag > 0:
        est = est[:, lag:]
    elif lag < 0:
        est = np.pad(est, ((0, 0), (-lag, 0)))
    est = fit_length(est, ref.shape[-1])
    return (est if np.ndim(estimate) == 2 else est[0]), lag


def visqol(reference: np.ndarray, estimate: np.ndarray, sample_rate: int) -> float:
    """ViSQOL v3 audio mode MOS-LQO on the mono downmix resampled to 48 kHz (visqol-python)."""
    from .optional import require

    VisqolApi = require("visqol", "eval", "ViSQOL (skip it with --no-visqol)").VisqolApi

    ref = resample(np.atleast_2d(np.asarray(reference, np.float32)).mean(0, keepdims=True), sample_rate, 48000)[0]
    est = resample(np.atleast_2d(np.asarray(estimate, np.float32)).mean(0, keepdims=True), sample_rate, 48000)[0]
    api = VisqolApi()
    api.create(mode="audio")
    return float(api.measure_from_arrays(ref.astype(np.float64), est.astype(np.float64), 48000).moslqo)


def score(reference: np.ndarray, estimate: np.ndarray, sample_rate: int, degraded: np.ndarray | None = None,
          with_visqol: bool = True) -> dict[str, float]:
    """All metrics for one pair; LSD-high uses the cutoff of `degraded` (or of the estimate)."""
    cutoff = cutoff_hz(degraded if degraded is not None else estimate, sample_rate)
    result = {
        "sdr": sdr(reference, estimate),
        "si_snr": si_snr(reference, estimate),
        "lsd": lsd(reference, estimate, sample_rate),
        "lsd_high": lsd(reference, estimate, sample_rate, min_hz=cutoff),
        "cutoff_hz": cutoff,
    }
    if with_visqol:
        result["visqol"] = visqol(reference, estimate, sample_rate)
    return result
