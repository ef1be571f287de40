"""Regression against outputs of the authors' released implementation (tests/fixtures, copied from shared/fixtures)."""

from __future__ import annotations

import pytest
import torch
from repo_scripts import load_script

import apollo
from apollo.convert import infer_config


@pytest.mark.parametrize("entry", ["small44k", "small48k"])
def test_released_checkpoint_reproduces_reference_output(reference, entry, tmp_path):
    item = reference[entry]
    path = tmp_path / "pytorch_model.bin"
    torch.save(item["state_dict"], path)  # a bare released state dict, as the authors ship it
    model = apollo.load_model(path)
    assert not model.training
    cfg = item["config"]
    assert (model.config.sample_rate, model.config.feature_dim, model.config.num_blocks) == (
        cfg["sr"], cfg["feature_dim"], cfg["layers"])
    with torch.inference_mode():
        out = model(item["input"])
    assert out.shape == item["output"].shape
    assert (out - item["output"]).abs().max().item() < 1e-4


@pytest.mark.parametrize("entry", ["small44k", "small48k"])
def test_inferred_config_matches_fixture(reference, entry):
    item = reference[entry]
    config = infer_config(item["state_dict"])
    assert config.sample_rate == item["config"]["sr"]
    assert config.win_ms == item["config"]["win_ms"]
    assert config.num_bands == 80


def _loop_apollo() -> type:
    """The per-band-loop baseline; a benchmark (benchmarks/loop_apollo.py), not package code."""
    return load_script("benchmarks/loop_apollo.py").LoopApollo


@pytest.mark.parametrize("entry", ["small44k", "small48k"])
def test_loop_reference_agrees(reference, entry):
    """The per-band-loop baseline loads the released names as they are and gives the same output."""
    LoopApollo = _loop_apollo()
    item = reference[entry]
    loop = LoopApollo(infer_config(item["state_dict"])).eval()
    loop.load_state_dict(item["state_dict"], strict=True)
    with torch.inference_mode():
        out = loop(item["input"])
    assert (out - item["output"]).abs().max().item() < 1e-4
