"""The int8 CPU path: close to float32, only linear layers quantised, wired into the tools."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import apollo
from apollo.cli import main
from apollo.quantize import quantize_int8


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
    snr = 10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum())
    assert 15 < snr.item() < 80  # close, but really quantised
    assert torch.equal(model(item["input"]), ref)  # the float model is untouched


def test_restore_int8_cli(tmp_path):
    import soundfile as sf

    src = tmp_path / "x.wav"
    sf.write(str(src), (0.1 * np.random.default_rng(0).standard_normal((22050, 2))).astype(np.float32), 44100)
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--checkpoint", "tiny-test", "--int8", "-q"]) == 0
    assert sf.info(str(tmp_path / "o" / "x.flac")).frames == 22050


def test_int8_refuses_gpu_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(ValueError, match="CPU only"):
        apollo.Restorer("tiny-test", device="cuda", int8=True)


def test_benchmark_int8(capsys):
    assert main(["benchmark", "--config", "tiny", "--seconds", "0.5", "--repeats", "1", "--int8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["int8"] is True and result["parameters"] == 59948
