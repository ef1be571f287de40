"""Reduced-precision inference: bf16 autocast and the int8 CPU path stay close to float32,
leave the float model untouched, and are wired into restore, benchmark and evaluate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import apollo
from apollo.cli import main
from apollo.inference import Autocast, quantize_int8, with_precision
from apollo.model.layers import ONEDNN_LINEAR


def _snr_db(ref: torch.Tensor, out: torch.Tensor) -> float:
    return 10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum()).item()


def test_int8_output_close_to_float(reference):
    item = reference["small44k"]
    model = apollo.load_model(item["state_dict"])
    q = quantize_int8(model)
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert linears == 2 * (4 + 3 * 2)  # 2 blocks x (qkv, attn_out, ffn_in, ffn_out + 3 TCN x fc1, fc2)
    assert sum(type(m) is torch.nn.Linear for m in q.modules()) == 0
    assert sum(isinstance(m, DynamicLinear) for m in q.modules()) == linears
    with torch.inference_mode():
        ref, out = model(item["input"]), q(item["input"])
    assert 15 < _snr_db(ref, out) < 80  # close, but really quantised
    with torch.inference_mode():
        assert torch.equal(model(item["input"]), ref)  # the float model is untouched


def test_bf16_output_close_to_float(reference):
    item = reference["small44k"]
    model = apollo.load_model(item["state_dict"])
    fast = with_precision(model, "bf16", "cpu")
    assert isinstance(fast, Autocast) and fast.model is model and fast.config is model.config
    with torch.inference_mode():
        ref, out = model(item["input"]), fast(item["input"])
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 20 < _snr_db(ref, out) < 80  # close, but really computed in bf16
    with torch.inference_mode():
        assert torch.equal(model(item["input"]), ref)  # autocast does not leak out of the wrapper


def test_fp32_is_the_model_itself():
    model = apollo.load_model("tiny-test")
    assert with_precision(model, "fp32", "cpu") is model


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_restore_cli_with_reduced_precision(tmp_path, precision):
    import soundfile as sf

    src = tmp_path / "x.wav"
    sf.write(str(src), (0.1 * np.random.default_rng(0).standard_normal((22050, 2))).astype(np.float32), 44100)
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--checkpoint", "tiny-test",
                 "--precision", precision, "-q"]) == 0
    out, rate = sf.read(str(tmp_path / "o" / "x.flac"))
    exact, _ = apollo.Restorer("tiny-test").restore(sf.read(str(src), dtype="float32")[0].T, 44100)
    assert rate == 44100 and out.shape == (22050, 2)
    err = out.T - exact
    assert 0 < np.abs(err).max() and 10 * np.log10((exact**2).sum() / (err**2).sum()) > 15


def test_int8_flag_is_shorthand():
    args = apollo.cli.build_parser().parse_args(["restore", "x.mp3", "--int8"])
    assert args.precision == "int8"


def test_bad_precision_choices(monkeypatch, capsys):
    with pytest.raises(ValueError, match="precision must be one of"):
        apollo.Restorer("tiny-test", precision="fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="CPU only"):
        apollo.Restorer("tiny-test", device="cuda", precision="int8")
    assert main(["benchmark", "--config", "tiny", "--device", "cuda", "--precision", "int8"]) == 2
    assert "CPU only" in capsys.readouterr().err


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_benchmark_precision_and_batch(capsys, precision):
    assert main(["benchmark", "--config", "tiny", "--seconds", "0.5", "--repeats", "1", "--batch", "2",
                 "--precision", precision, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["precision"] == precision and result["batch"] == 2 and result["parameters"] == 59948
    assert result["ms_per_second"] == pytest.approx(1000 * result["rtf"], abs=1e-3)


def test_compiled_blocks_trace_whole_and_match(reference):
    from apollo.inference import compile_blocks

    item = reference["small44k"]
    model = apollo.load_model(item["state_dict"])
    with torch.inference_mode():
        ref = model(item["input"])
    torch._dynamo.reset()
    # fullgraph: a graph break inside a block would raise; the eager backend keeps the test fast
    compiled = compile_blocks(model, backend="eager", fullgraph=True)
    assert compiled is model and all(hasattr(b, "_orig_mod") for b in model.blocks)
    with torch.inference_mode():
        out = model(item["input"])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_restorer_compile_option(monkeypatch):
    import apollo.inference

    calls = []

    def fake_compile(block, backend, fullgraph):
        calls.append(backend)
        return block

    monkeypatch.setattr(apollo.inference.torch, "compile", fake_compile)
    restorer = apollo.Restorer("tiny-test", compile=True, precision="bf16")
    assert calls == ["inductor"] * len(restorer.model.model.blocks)
    with pytest.raises(ValueError, match="cannot be compiled"):
        apollo.Restorer("tiny-test", compile=True, precision="int8")
    if ONEDNN_LINEAR:  # compiled float32 would lose oneDNN's linear layers
        with pytest.raises(ValueError, match="slow float32 down"):
            apollo.Restorer("tiny-test", device="cpu", compile=True)
    args = apollo.cli.build_parser().parse_args(["restore", "x.mp3", "--compile", "--precision", "bf16"])
    assert args.compile and args.precision == "bf16"
