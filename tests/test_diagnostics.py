"""The diagnostics on synthetic signals whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import butter, sosfilt

from apollo import diagnostics, metrics

RATE = 44100


def _noise(seconds: float = 4.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, int(seconds * RATE))) * 0.1


def _lowpass(x: np.ndarray, hz: float) -> np.ndarray:
    return sosfilt(butter(16, hz, fs=RATE, output="sos"), x, axis=-1)


def test_band_level_error_is_the_gain_per_band():
    ref = _noise()
    errors = diagnostics.band_level_error(ref, 0.5 * ref, RATE)
    assert list(errors) == ["2-4", "4-6", "6-8", "8-11", "11-14", "14-16", "16-18", "18-20"]
    assert all(v == pytest.approx(-6.02, abs=0.01) for v in errors.values())
    spectrum = np.fft.rfft(ref, axis=-1)
    spectrum[:, np.fft.rfftfreq(ref.shape[1], 1 / RATE) >= 10000] *= 0.1  # -20 dB above 10 kHz
    quiet_top = np.fft.irfft(spectrum, ref.shape[1], axis=-1)
    errors = diagnostics.band_level_error(ref, quiet_top, RATE)
    assert errors["2-4"] == pytest.approx(0, abs=0.1) and errors["14-16"] == pytest.approx(-20, abs=0.5)


def test_band_level_error_leaves_out_bands_the_reference_does_not_have():
    ref = _noise()
    spectrum = np.fft.rfft(ref, axis=-1)
    spectrum[:, np.fft.rfftfreq(ref.shape[1], 1 / RATE) >= 13500] *= 1e-6  # -120 dB: emptied by a lowpass
    dark = np.fft.irfft(spectrum, ref.shape[1], axis=-1)
    errors = diagnostics.band_level_error(dark, ref, RATE)  # a fill of the emptied band
    assert list(errors) == ["2-4", "4-6", "6-8", "8-11", "11-14"]  # no +120 dB "errors"
    assert errors["2-4"] == pytest.approx(0, abs=0.1)
    spectrum[:, np.fft.rfftfreq(ref.shape[1], 1 / RATE) >= 13500] *= 1e3  # -60 dB: quiet, but there
    quiet = np.fft.irfft(spectrum, ref.shape[1], axis=-1)
    assert diagnostics.band_level_error(quiet, ref, RATE)["14-16"] == pytest.approx(60, abs=1)


def test_lsd_below_the_cutoff_ignores_what_is_above():
    ref = _noise()
    cut = _lowpass(ref, 8000)
    assert metrics.lsd(ref, cut, RATE, max_hz=6000) < 0.5
    assert metrics.lsd(ref, cut, RATE, min_hz=10000) > 20


def test_holes_count_the_empty_cells_under_the_cutoff():
    ref = _noise(4.0)
    assert diagnostics.holes(ref, ref, RATE, cutoff=8000) == 0.0
    holed = ref.copy()
    half = holed.shape[1] // 2
    holed[:, :half] = _lowpass(ref[:, :half], 5000)  # the 6-8 kHz span emptied in the first half
    share = diagnostics.holes(ref, holed, RATE, cutoff=8000)
    assert 0.45 < share < 0.55


def test_input_holes_count_cells_far_under_their_bins_median_without_a_reference():
    ref = _lowpass(_noise(4.0), 8000)
    assert diagnostics.input_holes(ref, RATE, limit=8000) < 0.02  # steady music up to its end: no holes
    holed = ref.copy()
    rng = np.random.default_rng(2)
    blocks = rng.permutation(ref.shape[1] // 4096)[: ref.shape[1] // 4096 // 3]
    for b in blocks:  # a third of 93-ms blocks with 6-8 kHz emptied, as an encoder's holes
        holed[:, b * 4096:(b + 1) * 4096] = _lowpass(ref[:, b * 4096:(b + 1) * 4096], 5000)
    assert 0.25 < diagnostics.input_holes(holed, RATE, limit=8000) < 0.42
    assert diagnostics.input_holes(holed, RATE, limit=5000) < 0.05  # under 5 kHz nothing was emptied


def test_transient_following_is_1_for_the_reference_and_low_for_steady_noise():
    rng = np.random.default_rng(1)
    ref = _noise(4.0) * 0.05
    for hit in range(0, ref.shape[1], RATE // 4):  # hi-hats every quarter second
        ref[:, hit:hit + 2000] += rng.standard_normal((2, min(2000, ref.shape[1] - hit))) * np.exp(
            -np.arange(min(2000, ref.shape[1] - hit)) / 300)
    same = diagnostics.transient_following(ref, ref, RATE)
    assert same["envelope"] == pytest.approx(1.0) and same["onsets"] == pytest.approx(1.0)
    steady = diagnostics.transient_following(ref, _noise(4.0, seed=3), RATE)
    assert abs(steady["envelope"]) < 0.2 and abs(steady["onsets"]) < 0.2


def test_transient_following_compares_a_kept_band_with_the_band_to_write():
    rng = np.random.default_rng(4)
    freqs = np.fft.rfftfreq(4 * RATE, 1 / RATE)

    def hits(low_hz: float) -> np.ndarray:  # decaying noise bursts every quarter second, above low_hz
        x = np.zeros((2, 4 * RATE))
        for hit in range(0, x.shape[1], RATE // 4):
            x[:, hit:hit + 2000] += rng.standard_normal((2, 2000)) * np.exp(-np.arange(2000) / 300)
        spectrum = np.fft.rfft(x, axis=-1)
        spectrum[:, freqs < low_hz] = 0
        return np.fft.irfft(spectrum, x.shape[1], axis=-1)

    broadband = _noise(4.0) * 0.05 + hits(0.0)  # the kept 2-4 kHz moves with 8-16 kHz
    top_only = _noise(4.0) * 0.05 + hits(6000.0)  # 2-4 kHz stays steady while 8-16 kHz hits
    follows = diagnostics.transient_following(broadband, broadband, RATE, estimate_band=(2000, 4000))
    steady = diagnostics.transient_following(top_only, top_only, RATE, estimate_band=(2000, 4000))
    assert follows["envelope"] > 0.8 and abs(steady["envelope"]) < 0.3


def test_transient_following_leaves_out_a_band_the_reference_does_not_have():
    ref = _noise()
    spectrum = np.fft.rfft(ref, axis=-1)
    spectrum[:, np.fft.rfftfreq(ref.shape[1], 1 / RATE) >= 7000] *= 1e-6  # -120 dB: emptied by a lowpass
    dark = np.fft.irfft(spectrum, ref.shape[1], axis=-1)
    assert diagnostics.transient_following(dark, ref, RATE) == {}
    out = diagnostics.diagnose(dark, ref, RATE, cutoff=7000)
    assert "transient_envelope" not in out and "transient_onsets" not in out and "hop_comb" in out
    spectrum[:, np.fft.rfftfreq(ref.shape[1], 1 / RATE) >= 7000] *= 1e3  # -60 dB: quiet, but there
    quiet = np.fft.irfft(spectrum, ref.shape[1], axis=-1)
    assert set(diagnostics.transient_following(quiet, ref, RATE)) == {"envelope", "onsets"}


def test_hop_comb_finds_a_band_that_repeats_every_hop():
    noise = _noise(4.0)
    assert diagnostics.hop_comb(noise, RATE, cutoff=10000) == pytest.approx(0.21, abs=0.03)
    grain = np.random.default_rng(2).standard_normal(441)
    buzz = np.tile(grain, noise.shape[1] // 441 + 1)[: noise.shape[1]]  # the same frame every hop
    assert diagnostics.hop_comb(buzz * 0.1, RATE, cutoff=10000) > 0.95


def test_diagnose_gives_flat_numbers():
    ref = _noise()
    est = _lowpass(ref, 9000)
    out = diagnostics.diagnose(ref, est, RATE, cutoff=9000)
    assert set(out) >= {"lsd_below", "holes", "transient_envelope", "transient_onsets", "hop_comb", "level_2-4k",
                        "level_18-20k"}
    assert out["level_18-20k"] < -40 and abs(out["level_2-4k"]) < 0.1 and out["holes"] < 0.05
