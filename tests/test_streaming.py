"""Causal models and the streaming restorer: exact to the offline restore, delayed by `latency`."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

import apollo
from apollo import StreamingRestorer
from apollo.api import Restorer
from apollo.apply import receptive_context
from apollo.cli import main
from apollo.model.band_sequence import TCNBlock
from apollo.model.config import PRESETS, ApolloConfig


def _causal(sample_rate: int = 44100, blocks: int = 2, seed: int = 0,
            bitrate_classes: tuple[int, ...] = ()) -> apollo.Apollo:
    """A small random causal generator whose output differs clearly from its input."""
    torch.manual_seed(seed)
    config = dataclasses.replace(PRESETS["tiny"], num_blocks=blocks, causal=True, residual=True,
                                 sample_rate=sample_rate, bitrate_classes=bitrate_classes)
    model = apollo.Apollo(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.2 * torch.randn_like(param))
    return model.eval()


def _offline(model: apollo.Apollo, wav: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(wav)[None])[0].numpy()


def _stream(restorer: StreamingRestorer, wav: np.ndarray, sizes) -> np.ndarray:  # noqa: ANN001
    out, start = [], 0
    for size in sizes:
        if start >= wav.shape[1]:
            break
        block = wav[:, start:start + size]
        piece = restorer.process(block)
        assert piece.shape == block.shape  # every block comes back at its own size
        out.append(piece)
        start += size
    out.append(restorer.flush())
    return np.concatenate(out, axis=1)


def _noise(channels: int, length: int, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal((channels, length))).astype(np.float32)


@pytest.mark.parametrize("sample_rate", [44100, 22050])  # 22050: an odd window (441 = 2 x 220 + 1)
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("length", [7, 600, 881, 882, 1000, 20000])
def test_stream_equals_offline_restore_delayed_by_latency(sample_rate, channels, length):
    model = _causal(sample_rate)
    wav = _noise(channels, length, seed=length)
    restorer = StreamingRestorer(model, channels=channels)
    assert restorer.latency == model.config.window - 1
    sizes = np.random.default_rng(length + channels).integers(1, 1500, size=length)  # random sizes, not on the hop
    out = _stream(restorer, wav, sizes)
    latency = restorer.latency
    assert out.shape == (channels, length + latency)
    assert np.all(out[:, :latency] == 0)  # the delay line starts silent
    reference = _offline(model, wav)
    assert np.abs(out[:, latency:] - reference).max() < 1e-4
    assert np.abs(reference - wav).max() > 0.01  # the model changes the audio: the comparison has teeth


def test_one_sample_blocks_and_reuse_after_flush():
    model = _causal()
    restorer = StreamingRestorer(model, channels=2)
    first, second = _noise(2, 2500, seed=1), _noise(2, 3100, seed=2)
    out = _stream(restorer, first, [1] * first.shape[1])
    assert np.abs(out[:, restorer.latency:] - _offline(model, first)).max() < 1e-4
    # flush() reset the restorer: a second stream starts from silence, not from the first one's state
    out = _stream(restorer, second, [441] * 10)
    assert np.abs(out[:, restorer.latency:] - _offline(model, second)).max() < 1e-4


def test_torch_blocks_come_back_as_tensors():
    restorer = StreamingRestorer(_causal(), channels=1)
    block = torch.from_numpy(_noise(1, 1000))
    assert isinstance(restorer.process(block), torch.Tensor)
    tail = restorer.flush()
    assert isinstance(tail, torch.Tensor) and tail.shape == (1, restorer.latency)


def test_each_hop_is_restored_once():
    """The engine restores every STFT frame exactly once, however the stream is cut."""
    model = _causal()
    calls = []
    original = model.restore_spectrum

    def counting(spec, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        calls.append(spec.shape[1])
        return original(spec, *args, **kwargs)

    model.restore_spectrum = counting
    restorer = StreamingRestorer(model, channels=2)
    length = 44100
    _stream(restorer, _noise(2, length), np.random.default_rng(5).integers(1, 900, size=length))
    config = model.config
    assert sum(calls) == 1 + length // config.hop  # the offline STFT's frame count: nothing recomputed


def test_causal_output_does_not_depend_on_the_future():
    model = _causal()
    wav = _noise(2, 30000)
    changed = wav.copy()
    cut = 15000
    changed[:, cut:] = _noise(2, 30000 - cut, seed=9)
    diff = np.abs(_offline(model, wav) - _offline(model, changed)).max(axis=0)
    first = int(np.flatnonzero(diff > 1e-6)[0])
    assert cut - model.config.latency <= first < cut  # changed within the look-ahead, not earlier


def test_non_causal_models_are_refused():
    with pytest.raises(ValueError, match="not causal"):
        StreamingRestorer("tiny-test")
    with pytest.raises(ValueError, match="causal models cannot keep the input band"):
        ApolloConfig(causal=True, residual=True, keep_input_band=True)
    with pytest.raises(ValueError, match=r"\(2, samples\)"):
        StreamingRestorer(_causal(), channels=2).process(np.zeros((1, 10), np.float32))


def test_drop_future_taps_keeps_the_past_taps_on_their_frames():
    torch.manual_seed(0)
    centred = TCNBlock(8, 7)
    with torch.no_grad():
        centred.depthwise[:, 4:] = 0  # a centred kernel that happens to ignore later frames
    causal = TCNBlock(8, 7, causal=True)
    causal.load_state_dict(centred.state_dict())
    causal.drop_future_taps()
    z = torch.randn(2, 30, 5, 8)
    with torch.no_grad():
        assert torch.allclose(causal(z), centred(z), atol=1e-6)


def test_causal_chunking_covers_the_longer_past(tmp_path):
    config = ApolloConfig(feature_dim=16, num_blocks=3, num_heads=2)
    causal = dataclasses.replace(config, causal=True)
    assert receptive_context(causal) - receptive_context(config) == 3 * 3 * 3 * config.hop
    model = _causal(blocks=3)
    path = tmp_path / "causal.safetensors"
    apollo.save_checkpoint(path, model.state_dict(), model.config)
    rng = np.random.default_rng(0)
    wav = (0.1 * np.sin(np.arange(8 * 44100) * 0.05) + 0.02 * rng.standard_normal((2, 8 * 44100))).astype(np.float32)
    whole, _ = Restorer(path, device="cpu", segment=0).restore(wav, 44100)
    chunked, _ = Restorer(path, device="cpu", segment=2, overlap=0.05).restore(wav, 44100)
    assert np.abs(chunked - whole).max() < 1e-4


def test_the_built_in_stream_model_ships_small_and_streams_exactly():
    from apollo.pretrained import built_in_path

    assert built_in_path("stream").stat().st_size < 50 * 2**20
    model = apollo.load_model("stream")
    default = apollo.load_model("default").config.unknown  # v13's size: v14 restores unknown bitrates with v13
    assert model.config.causal and not model.config.keep_input_band
    assert (model.config.feature_dim, model.config.num_blocks) == (default.feature_dim, default.num_blocks)
    restorer = StreamingRestorer()  # the built-in stream model is the default checkpoint
    t = np.arange(20000) / 44100
    music = (0.3 * np.sin(2 * np.pi * 440 * t) * np.sin(2 * np.pi * 3 * t) + 0.02 * np.sin(2 * np.pi * 7000 * t))
    wav = np.stack([music, np.roll(music, 300)]).astype(np.float32)
    out = _stream(restorer, wav, np.random.default_rng(0).integers(1, 1000, size=100))
    assert np.abs(out[:, restorer.latency:] - _offline(model, wav)).max() < 1e-4


def test_a_told_stream_is_restored_as_the_offline_restore_told_the_same_bitrate(tmp_path, monkeypatch):
    # a stream decoded from an MP3 of a known bitrate (an internet radio stream states it) is told it,
    # as apollo restore tells an MP3's; unknown (None) takes the embedding's row 0, as WAV/FLAC input
    model = _causal(seed=3, bitrate_classes=(24, 64, 128))
    wav = _noise(2, 6000, seed=4)
    sizes = np.random.default_rng(5).integers(1, 700, size=100)
    outs = {}
    for kbps in (None, 24, 128):
        restorer = StreamingRestorer(model, channels=2, bitrate=kbps)
        out = _stream(restorer, wav, sizes)[:, restorer.latency:]
        with torch.inference_mode():
            told = model(torch.from_numpy(wav)[None], bitrate=None if kbps is None else torch.tensor([kbps]))[0]
        assert np.abs(out - told.numpy()).max() < 1e-4
        outs[kbps] = out
    assert np.abs(outs[24] - outs[128]).max() > 1e-3 and np.abs(outs[None] - outs[24]).max() > 1e-3
    with pytest.raises(ValueError, match="bitrate must be positive"):
        StreamingRestorer(model, channels=2, bitrate=0)
    path = tmp_path / "told.safetensors"
    apollo.save_checkpoint(path, model.state_dict(), model.config)
    data = np.ascontiguousarray(wav.T, "<f4").tobytes()
    cli = _run_here(["--checkpoint", str(path), "--bitrate", "128", "--align"], data, monkeypatch)
    assert cli.returncode == 0 and b"told 128 kbps" in cli.stderr
    assert np.abs(np.frombuffer(cli.stdout, "<f4").reshape(-1, 2).T - outs[128]).max() < 1e-5  # other block sizes
    with pytest.raises(SystemExit) as bad:  # argparse refuses it before any model loads
        _run_here(["--checkpoint", str(path), "--bitrate", "500"], data, monkeypatch)
    sys.stderr.flush()
    assert bad.value.code == 2 and b"MP3 bitrates are 8-320" in sys.stderr.buffer.getvalue()


@pytest.fixture(scope="module")
def causal_checkpoint(tmp_path_factory):
    model = _causal()
    path = tmp_path_factory.mktemp("stream") / "causal.safetensors"
    apollo.save_checkpoint(path, model.state_dict(), model.config)
    return path, model


def _run(args: list[str], data: bytes) -> subprocess.CompletedProcess:
    """`apollo stream ARGS` in a real pipe."""
    return subprocess.run([sys.executable, "-m", "apollo.cli", "stream", *args], input=data, capture_output=True,
                          timeout=120)


def _run_here(args: list[str], data: bytes, monkeypatch) -> subprocess.CompletedProcess:  # noqa: ANN001
    """`apollo stream ARGS` in this process (no interpreter start-up): stdin, stdout and stderr as bytes."""
    streams = {name: io.TextIOWrapper(io.BytesIO(data if name == "stdin" else b"")) for name in
               ("stdin", "stdout", "stderr")}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    threads = torch.get_num_threads()
    try:
        code = main(["stream", *args])
    finally:
        torch.set_num_threads(threads)
    for stream in streams.values():
        stream.flush()
    return subprocess.CompletedProcess(args, code, streams["stdout"].buffer.getvalue(),
                                       streams["stderr"].buffer.getvalue())


def test_cli_stream_pipe(causal_checkpoint, monkeypatch):
    path, model = causal_checkpoint
    wav = _noise(2, 9000)
    data = np.ascontiguousarray(wav.T, "<f4").tobytes()
    proc = _run(["--checkpoint", str(path), "--block-ms", "3"], data)
    assert proc.returncode == 0, proc.stderr
    assert b"latency 881 samples (20.0 ms)" in proc.stderr
    out = np.frombuffer(proc.stdout, "<f4").reshape(-1, 2).T
    latency = model.config.latency
    assert out.shape == (2, 9000 + latency)
    assert np.abs(out[:, latency:] - _offline(model, wav)).max() < 1e-4
    aligned = _run_here(["--checkpoint", str(path), "--align", "-q"], data, monkeypatch)
    assert aligned.returncode == 0 and aligned.stderr == b""
    assert np.array_equal(np.frombuffer(aligned.stdout, "<f4").reshape(-1, 2).T, out[:, latency:])


def test_cli_stream_errors(causal_checkpoint, monkeypatch):
    path, _ = causal_checkpoint
    data = np.zeros(2000, "<f4").tobytes()
    wrong_rate = _run_here(["--checkpoint", str(path), "--rate", "48000"], data, monkeypatch)
    assert wrong_rate.returncode == 2 and b"the model restores 44100 Hz audio" in wrong_rate.stderr
    assert wrong_rate.stderr.count(b"\n") == 1 and wrong_rate.stdout == b""
    not_causal = _run_here(["--checkpoint", "tiny-test"], data, monkeypatch)
    assert not_causal.returncode == 2 and b"not causal" in not_causal.stderr
    torn = _run_here(["--checkpoint", str(path), "-q"], data + b"\x00\x01\x02", monkeypatch)
    assert torn.returncode == 1 and b"3 byte(s) into a sample frame" in torn.stderr
    assert len(torn.stdout) == len(data) + 4 * 2 * 881  # the complete frames were restored and flushed
