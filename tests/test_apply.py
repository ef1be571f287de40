"""Chunked inference: seamless, exact to one pass, any length, flat buffers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import apollo
from apollo import audio
from apollo.api import Restorer
from apollo.apply import ChunkPlan, receptive_context, restore_stream, silence_mask
from apollo.model.config import ApolloConfig
from apollo.states import read_checkpoint

SR = 44100


@pytest.fixture(scope="module")
def v1_checkpoint(tmp_path_factory):
    """A random v1-layout model deep enough (3 blocks, +-27 frames) to expose seams."""
    torch.manual_seed(3)
    config = ApolloConfig(feature_dim=16, num_blocks=3, num_heads=2)
    path = tmp_path_factory.mktemp("ckpt") / "random-v1.safetensors"
    apollo.save_checkpoint(path, apollo.Apollo(config).state_dict(), config)
    return path


def _music(seconds: float, channels: int = 2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in (220, 331, 1250, 5000))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t) ** 2
    wav = 0.1 * tones * env + 0.02 * rng.standard_normal((channels, t.size))
    return wav.astype(np.float32)


def test_segmented_equals_one_pass_on_20_seconds(v1_checkpoint):
    wav = _music(20.0)
    whole, rate = Restorer(v1_checkpoint, device="cpu", segment=0).restore(wav, SR)
    chunked, _ = Restorer(v1_checkpoint, device="cpu", segment=4, overlap=0.05).restore(wav, SR)
    assert rate == SR and chunked.shape == whole.shape == wav.shape
    err = np.abs(chunked - whole)
    assert err.max() < 1e-4
    assert err[:, :SR].max() < 1e-4 and err[:, -SR:].max() < 1e-4
    assert np.abs(whole).max() > 1e-3  # the model really produced output


def test_crossfade_without_context_would_show_seams(v1_checkpoint):
    """The released scheme (no discarded context) differs from one pass: the test above has teeth."""
    wav = _music(12.0)
    whole, _ = Restorer(v1_checkpoint, device="cpu", segment=0).restore(wav, SR)
    naive, _ = Restorer(v1_checkpoint, device="cpu", segment=4, overlap=0.05, context=0).restore(wav, SR)
    assert np.abs(naive - whole).max() > 1e-3


# 6 s = exactly three 2-s segments: the last chunk is as long as the first but not the middle
# one, so a batch of 3 must not group the first with the last
@pytest.mark.parametrize("length", [1, 441, 882, 4 * SR - 1, 4 * SR, 4 * SR + 1, 6 * SR, 9 * SR + 123])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_any_length_and_batch(length, batch_size):
    model = apollo.load_model("tiny-test")
    wav = _music(length / SR + 1)[:, :length]
    plan = ChunkPlan.from_seconds(model.config, 2.0, 0.1)
    assert plan.segment == 2 * SR
    blocks = (wav[:, i:i + 5000] for i in range(0, length, 5000))
    out = np.concatenate(list(restore_stream(model, blocks, plan, 2, batch_size=batch_size)), axis=1)
    with torch.inference_mode():
        ref = model(torch.from_numpy(wav)[None])[0].numpy()
    assert out.shape == wav.shape
    assert np.abs(out - ref).max() < 1e-4


def test_plan_is_on_hop_grid_and_covers_receptive_field():
    config = ApolloConfig()
    plan = ChunkPlan.from_seconds(config, 7.3, 0.05)
    assert plan.segment % config.hop == 0 and plan.context % config.hop == 0 and plan.crossfade % (2 * config.hop) == 0
    assert plan.context >= receptive_context(config) and plan.context >= 0.6 * config.sample_rate
    for bad in ((-1,), (float("inf"),), (float("nan"),), (10.0, float("nan")), (10.0, 0.05, float("inf"))):
        with pytest.raises(ValueError, match="finite and not negative"):
            ChunkPlan.from_seconds(config, *bad)


def test_progress_counts_every_sample():
    model = apollo.load_model("tiny-test")
    wav = _music(5.0)
    seen = []
    plan = ChunkPlan.from_seconds(model.config, 1.0)
    list(restore_stream(model, iter([wav]), plan, 2, on_progress=seen.append))
    assert sum(seen) == wav.shape[1] and len(seen) == 5


def test_silence_stays_silent():
    restorer = Restorer("tiny-test", device="cpu", segment=2)
    out, _ = restorer.restore(np.zeros((2, 3 * SR), np.float32), SR)
    assert np.count_nonzero(out) == 0
    wav = _music(4.0)
    wav[1] = 0.0  # one silent channel among music
    wav[0, SR:2 * SR] = 0.0  # and a silent second
    out, _ = restorer.restore(wav, SR)
    assert np.count_nonzero(out[1]) == 0
    assert np.count_nonzero(out[0, SR + 900:2 * SR - 900]) == 0
    assert np.abs(out[0, :SR - 900]).max() > 0


def test_silence_mask():
    x = np.array([[0, 0, 0, 0, 1, 0, 0, 0, 0, 0]], np.float32)
    assert silence_mask(x, 2).tolist() == [[True, True, False, False, False, False, False, True, True, True]]


def test_restore_numpy_and_torch_mono_with_resampling():
    restorer = Restorer("tiny-test", device="cpu")
    wav = _music(2.0, channels=1)[0]
    out, rate = restorer.restore(wav[: 2 * 22050], 22050)
    assert rate == SR and out.shape == (2 * SR,) and isinstance(out, np.ndarray)
    out_t, _ = restorer.restore(torch.from_numpy(wav), SR)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == wav.shape
    # out_rate as restore_file's: the input's own rate, the model's output resampled to it
    back, back_rate = restorer.restore(wav[: 2 * 22050], 22050, out_rate="input")
    assert back_rate == 22050 and back.shape == (2 * 22050,)
    np.testing.assert_allclose(back, audio.resample(out[None], SR, 22050)[0], atol=1e-6)
    stereo = _music(1.0, channels=2)
    last, last_rate = restorer.restore(stereo.T, SR, layout="channels_last", out_rate=32000)
    assert last_rate == 32000 and last.shape == (32000, 2)
    with pytest.raises(ValueError, match="output rate"):
        restorer.restore(wav, SR, out_rate="fast")
    with pytest.raises(ValueError, match="NaN"):
        restorer.restore(np.full(100, np.nan, np.float32), SR)
    with pytest.raises(ValueError):
        restorer.restore(np.zeros((2, 0), np.float32), SR)


def test_prefetch_keeps_order_and_values():
    from apollo.apply import prefetch

    blocks = [np.full((2, 5), i, np.float32) for i in range(7)]
    out = list(prefetch(iter(blocks), depth=2))
    assert len(out) == 7 and all(np.array_equal(a, b) for a, b in zip(out, blocks))
    assert list(prefetch(iter([]))) == []


def test_prefetch_reraises_the_source_error_in_the_consumer():
    from apollo.apply import prefetch

    def source():
        yield np.zeros((1, 3), np.float32)
        raise ValueError("truncated stream")

    got = prefetch(source())
    assert next(got).shape == (1, 3)
    with pytest.raises(ValueError, match="truncated stream"):
        next(got)


def test_prefetch_stops_reading_when_closed_early():
    import threading

    from apollo.apply import prefetch

    read = []

    def source():
        for i in range(1000):
            read.append(i)
            yield i

    got = prefetch(source(), depth=2)
    assert next(got) == 0
    got.close()
    assert not any(t.name == "apollo-prefetch" for t in threading.enumerate())
    assert len(read) <= 4  # the one consumed, `depth` queued, and one waiting to be queued


def test_api_refuses_implausible_layouts_and_rates():
    restorer = Restorer("tiny-test", device="cpu")
    samples_channels = np.random.default_rng(0).standard_normal((20000, 2)).astype(np.float32) * 0.1
    with pytest.raises(ValueError, match="layout='channels_last'"):
        restorer.restore(samples_channels, SR)  # 20000 "channels" of 2 samples: refused, not restored
    with pytest.raises(ValueError, match="layout='channels_last'"):
        restorer.restore(np.zeros((100, 5000), np.float32), SR)  # 100 channels
    out, rate = restorer.restore(samples_channels, SR, layout="channels_last")
    expected, _ = restorer.restore(samples_channels.T, SR)
    assert out.shape == (20000, 2) and np.array_equal(out, expected.T)
    for rate in (0, 8, 44100.5, True, "44100", 10_000_000):
        with pytest.raises(ValueError, match="sample_rate"):
            restorer.restore(samples_channels.T, rate)
    with pytest.raises(ValueError, match="layout must be"):
        restorer.restore(samples_channels.T, SR, layout="rows")


@pytest.mark.parametrize(("dtype", "full_scale", "zero"), [(np.int16, 32768, 0), (np.int32, 2**31, 0),
                                                        (np.uint8, 128, 128)])
def test_api_reads_integer_arrays_as_pcm(dtype, full_scale, zero):
    # scipy.io.wavfile gives int16 (8-bit WAV: uint8); read as floats of +-32768 they were
    # restored at that scale and came back far beyond +-1
    restorer = Restorer("tiny-test", device="cpu")
    music = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 8820))
    pcm = np.round(music * full_scale + zero).astype(dtype)
    out, _ = restorer.restore(pcm, SR)
    expected, _ = restorer.restore(((pcm.astype(np.float64) - zero) / full_scale).astype(np.float32), SR)
    assert out.dtype == np.float32 and np.array_equal(out, expected)
    assert np.abs(out).max() < 4


@pytest.fixture(scope="module")
def level_checkpoints(tmp_path_factory):
    """One random residual model saved twice: restoring at the input's level, and at peak 1."""
    torch.manual_seed(4)
    config = ApolloConfig(feature_dim=16, num_blocks=2, num_heads=2, residual=True)
    model = apollo.Apollo(config)
    for p in model.band_reconstruction.parameters():
        torch.nn.init.normal_(p, std=0.3)  # zero_output() would make it return its input
    folder = tmp_path_factory.mktemp("level")
    paths = {}
    for normalize in (False, True):
        paths[normalize] = folder / f"normalize-{normalize}.safetensors"
        apollo.save_checkpoint(paths[normalize], model.state_dict(),
                               dataclasses.replace(config, normalize_peak=normalize))
    return paths


@pytest.mark.parametrize("scale", [0.05, 3.0])
def test_normalize_peak_restores_any_level_as_at_peak_one(level_checkpoints, scale):
    wav = _music(3.0, seed=2)
    wav /= np.abs(wav).max()
    at_one, _ = Restorer(level_checkpoints[True], device="cpu", segment=0).restore(wav, SR)
    scaled, _ = Restorer(level_checkpoints[True], device="cpu", segment=0).restore(wav * scale, SR)
    np.testing.assert_allclose(scaled, at_one * scale, atol=1e-5 * scale)  # the output follows the level
    # the same weights without the rule are not scale-equivariant: the test above has teeth
    plain, _ = Restorer(level_checkpoints[False], device="cpu", segment=0).restore(wav * scale, SR)
    assert np.abs(plain - at_one * scale).max() > 1e-2 * scale


def test_normalize_peak_is_the_whole_files_so_chunks_equal_one_pass(level_checkpoints, tmp_path):
    import soundfile as sf

    wav = 0.2 * _music(9.0, seed=3)
    wav[:, : 3 * SR] *= 0.01  # a quiet first chunk: its own peak would lift it 40 dB
    whole, _ = Restorer(level_checkpoints[True], device="cpu", segment=0).restore(wav, SR)
    chunked, _ = Restorer(level_checkpoints[True], device="cpu", segment=3).restore(wav, SR)
    assert np.abs(chunked - whole).max() < 1e-5
    src = tmp_path / "in.wav"
    sf.write(src, wav.T, SR, subtype="FLOAT")
    Restorer(level_checkpoints[True], device="cpu", segment=3, clip="none").restore_file(src, tmp_path / "out.wav",
                                                                                        bits="32f")
    written, _ = sf.read(tmp_path / "out.wav", dtype="float32", always_2d=True)
    assert np.abs(written.T - whole).max() < 1e-5


def _lowpassed(wav: np.ndarray, hz: float) -> np.ndarray:
    spec = np.fft.rfft(wav, axis=-1)
    spec[..., np.fft.rfftfreq(wav.shape[-1], 1 / SR) > hz] = 0
    return np.fft.irfft(spec, wav.shape[-1], axis=-1).astype(np.float32)


@pytest.mark.parametrize("uses", [{"keep_input_band": True}, {"fill_gain_db": 6.0},
                                  {"fill_gain_db": 6.0, "correction_floor_db": -20.0},
                                  # told 48 kbps: the file (5 kHz) is not dark under 4.5 kHz, its first chunk (2 kHz) is
                                  {"bitrate_classes": (24, 48), "dark_source_hz_told": (0.0, 4500.0)},
                                  # the file reaches 4.5 kHz and gets its told gain; its first chunk would not
                                  {"bitrate_classes": (24, 48), "fill_gain_db_told": (0.0, 6.0),
                                   "fill_gain_from_hz_told": (0.0, 4500.0)}])
def test_band_limit_is_the_whole_files_so_chunks_equal_one_pass(level_checkpoints, tmp_path, uses):
    # the first chunk (with its context) ends at 2 kHz in every frame, the file at 5 kHz in half of
    # them: a chunk's own limit would differ
    wav = _music(9.0, seed=5)
    wav = np.concatenate([_lowpassed(wav[:, : 5 * SR], 2000), _lowpassed(wav[:, 5 * SR:], 5000)], axis=1)
    state, config = read_checkpoint(level_checkpoints[False])
    config = dataclasses.replace(config, **uses)
    bitrate = None
    if config.bitrate_classes:
        torch.manual_seed(0)
        state["bitrate_embedding"] = 0.1 * torch.randn(len(config.bitrate_classes) + 1, config.num_bands,
                                                       config.feature_dim)
        bitrate = 48
    path = tmp_path / "band-limit.safetensors"
    apollo.save_checkpoint(path, state, config)
    whole, _ = Restorer(path, device="cpu", segment=0).restore(wav, SR, bitrate=bitrate)
    chunked, _ = Restorer(path, device="cpu", segment=3).restore(wav, SR, bitrate=bitrate)
    assert np.abs(chunked - whole).max() < 1e-5
    first = Restorer(path, device="cpu", segment=0).restore(wav[:, : 3 * SR], SR, bitrate=bitrate)[0]
    assert np.abs(first - whole[:, : 3 * SR]).max() > 1e-3  # restored alone, it is another limit


def test_level_gain():
    from apollo.api import MAX_LEVEL_GAIN, level_gain

    assert level_gain(0.5) == 2.0 and level_gain(2.0) == 0.5
    assert level_gain(0.0) == 1.0 and level_gain(1e-9) == MAX_LEVEL_GAIN
