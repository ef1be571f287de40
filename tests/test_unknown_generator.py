"""A checkpoint that restores inputs of unknown bitrate with a second generator (ApolloConfig.unknown):
the config, the routing per item, the export that joins two files, chunking and training from it."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from audio_fixtures import tone
from repo_scripts import ROOT

import apollo
from apollo.api import Restorer
from apollo.apply import receptive_context
from apollo.model.config import ApolloConfig
from apollo.states import CheckpointError, read_checkpoint, save_checkpoint
from apollo.training.config import load_config
from apollo.training.export import export_model, main
from apollo.training.trainer import Trainer, _with_overrides

CLASSES = (24, 32, 48, 64, 96, 128)
SMOKE = ROOT / "configs" / "apollo-smoke.yaml"


def _model(seed: int, blocks: int) -> apollo.Apollo:
    """A random tiny model told bitrates; its 32-kbps row moves its output."""
    torch.manual_seed(seed)
    model = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=blocks, num_heads=2, bitrate_classes=CLASSES))
    with torch.no_grad():
        model.bitrate_embedding[2] = torch.randn_like(model.bitrate_embedding[2])
    return model.eval()


def _joined(told: apollo.Apollo, unknown: apollo.Apollo) -> apollo.Apollo:
    joined = apollo.Apollo(dataclasses.replace(told.config, unknown=unknown.config)).eval()
    joined.load_state_dict({**told.state_dict(), **{f"unknown.{k}": v for k, v in unknown.state_dict().items()}})
    return joined


@pytest.fixture
def pair(tmp_path):
    """(told model, unknown model, their files)."""
    told, unknown = _model(0, 2), _model(1, 1)
    paths = tmp_path / "told.safetensors", tmp_path / "unknown.safetensors"
    for model, path in zip((told, unknown), paths):
        save_checkpoint(path, model.state_dict(), model.config)
    return told, unknown, paths


def test_the_config_round_trips_and_a_config_without_it_writes_what_it_wrote_before():
    base = ApolloConfig(bitrate_classes=CLASSES)
    assert "unknown" not in json.loads(base.to_json())
    joined = dataclasses.replace(base, unknown=dataclasses.replace(base, num_blocks=3))
    back = ApolloConfig.from_dict(json.loads(joined.to_json()))
    assert back == joined and back.unknown.num_blocks == 3 and "unknown" not in json.loads(joined.to_json())["unknown"]


@pytest.mark.parametrize("change, message", [
    (dict(bitrate_classes=()), "needs bitrate_classes"),
    (dict(sample_rate=48000), "sample_rate"),
    (dict(normalize_peak=True), "normalize_peak"),
    (dict(residual=True, fill_gain_db=3.0), "uses_band_limit"),
])
def test_a_pair_the_restorer_could_not_treat_as_one_model_is_refused(change, message):
    base = ApolloConfig(bitrate_classes=CLASSES)
    told = dataclasses.replace(base, **{k: v for k, v in change.items() if k == "bitrate_classes"})
    other = dataclasses.replace(base, **{k: v for k, v in change.items() if k != "bitrate_classes"})
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(told, unknown=other)


def test_an_unknown_generator_cannot_have_one_of_its_own_nor_be_causal():
    base = ApolloConfig(bitrate_classes=CLASSES)
    with pytest.raises(ValueError, match="of its own"):
        dataclasses.replace(base, unknown=dataclasses.replace(base, unknown=base))
    with pytest.raises(ValueError, match="causal"):
        dataclasses.replace(base, unknown=dataclasses.replace(base, causal=True))


@pytest.mark.parametrize("channels", [1, 2])
def test_each_item_is_restored_by_the_generator_its_bitrate_picks(channels):
    told, unknown = _model(0, 2), _model(1, 1)
    joined = _joined(told, unknown)
    wav = torch.from_numpy(tone(0.3, channels=channels).T.copy())[None].repeat(2, 1, 1)
    with torch.no_grad():
        assert torch.equal(joined(wav, None, torch.tensor([32, 128])), told(wav, None, torch.tensor([32, 128])))
        assert torch.equal(joined(wav), unknown(wav))
        mixed = joined(wav, None, torch.tensor([32, 0]))
        assert torch.equal(mixed[0], told(wav[:1], None, torch.tensor([32]))[0])
        assert torch.equal(mixed[1], unknown(wav[1:])[0])
        assert (told(wav) - unknown(wav)).abs().max() > 1e-3  # the two generators do differ


def test_export_joins_two_files_and_the_restorer_gives_each_its_inputs_chunked_as_in_one_pass(pair, tmp_path):
    told, unknown, (told_path, unknown_path) = pair
    out = export_model([told_path], tmp_path / "joined.safetensors", unknown=unknown_path)
    state, config = read_checkpoint(out)
    assert config.unknown == unknown.config and config.num_blocks == 2
    assert all(torch.equal(state[f"unknown.{k}"], v) for k, v in unknown.state_dict().items())
    wav = tone(3.0, channels=2).T.copy()
    joined = {segment: Restorer(str(out), device="cpu", segment=segment) for segment in (0.5, 0.0)}
    assert receptive_context(config) == receptive_context(told.config) > receptive_context(unknown.config)
    assert receptive_context(dataclasses.replace(unknown.config, unknown=told.config)) == receptive_context(told.config)
    for bitrate, alone in ((32, told_path), (None, unknown_path)):
        one_pass, _ = joined[0.0].restore(wav, 44100, bitrate=bitrate)
        chunked, _ = joined[0.5].restore(wav, 44100, bitrate=bitrate)
        own, _ = Restorer(str(alone), device="cpu", segment=0.0).restore(wav, 44100, bitrate=bitrate)
        np.testing.assert_allclose(chunked, one_pass, atol=1e-5)
        assert np.array_equal(one_pass, own)


def test_export_refuses_a_pair_it_cannot_join_and_takes_a_joined_files_own_unknown_part(pair, tmp_path):
    told, unknown, (told_path, unknown_path) = pair
    joined = export_model([told_path], tmp_path / "joined.safetensors", unknown=unknown_path)
    # joining from a joined file takes its unknown-bitrate generator (`--unknown-from default`: v13's)
    again = export_model([unknown_path], tmp_path / "again.safetensors", unknown=joined)
    state, config = read_checkpoint(again)
    assert config.unknown == unknown.config
    assert all(torch.equal(state[f"unknown.{k}"], v) for k, v in unknown.state_dict().items())
    with pytest.raises(CheckpointError, match="already"):
        export_model([joined], tmp_path / "twice.safetensors", unknown=unknown_path)
    plain = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2))
    save_checkpoint(tmp_path / "plain.safetensors", plain.state_dict(), plain.config)
    with pytest.raises(ValueError, match="needs bitrate_classes"):
        export_model([tmp_path / "plain.safetensors"], tmp_path / "no.safetensors", unknown=unknown_path)
    with pytest.raises(SystemExit):
        main([str(tmp_path), str(tmp_path / "stage"), "--unknown-from", str(unknown_path)])


def test_export_takes_a_built_in_name_as_its_generator(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no file named "default" here: the name is the built-in model
    out = tmp_path / "louder.safetensors"
    assert main(["--model", str(out), "default", "--set", "fill_gain_db_told=[3,3,4,0,0,0]"]) == 0
    assert "from 1 checkpoint(s)" in capsys.readouterr().out
    state, config = read_checkpoint(out)
    base_state, base = read_checkpoint(apollo.pretrained.built_in_path("default"))
    assert config == dataclasses.replace(base, fill_gain_db_told=(3.0, 3.0, 4.0, 0.0, 0.0, 0.0))
    assert config.unknown == base.unknown is not None  # the joined file's unknown part comes along
    assert state.keys() == base_state.keys() and all(torch.equal(state[k], v) for k, v in base_state.items())
    with pytest.raises(CheckpointError, match="no such checkpoint"):  # a mistyped name is no file either
        export_model(["defualt"], tmp_path / "x.safetensors")


def test_training_from_a_joined_checkpoint_starts_from_its_told_generator(pair, tmp_path):
    told, unknown, _ = pair
    recipe = dataclasses.replace(load_config(SMOKE), model_overrides=())  # init_from keeps the file's model
    start = _with_overrides(_joined(told, unknown), recipe)
    assert start.unknown is None and start.config == told.config
    assert start.state_dict().keys() == told.state_dict().keys()
    assert all(torch.equal(v, told.state_dict()[k]) for k, v in start.state_dict().items())
    recipe = load_config(SMOKE, {"model.bitrate_classes": [24], "model.unknown": {"bitrate_classes": [24]}})
    with pytest.raises(ValueError, match="export"):
        Trainer(recipe, tmp_path / "run", progress=False)


def test_info_names_the_unknown_generator_and_counts_both(pair, tmp_path, capsys):
    from apollo.cli import main as cli

    told, unknown, (told_path, unknown_path) = pair
    joined = export_model([told_path], tmp_path / "joined.safetensors", unknown=unknown_path)
    assert cli(["info", str(joined)]) == 0
    out = capsys.readouterr().out
    assert "num_blocks: 2" in out and "unknown: a 1-block generator, feature_dim 16" in out
    total = sum(p.numel() for p in told.parameters()) + sum(p.numel() for p in unknown.parameters())
    assert f"parameters: {total:,}" in out


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.ao's dynamic quantisation (inference.py)
def test_compiling_and_int8_reach_the_unknown_generator_too():
    from apollo.inference import compile_blocks, quantize_int8

    joined = _joined(_model(0, 2), _model(1, 1))
    compile_blocks(joined)  # compiles lazily, at the first forward: nothing runs here
    compiled = type(torch.compile(torch.nn.Identity()))
    assert all(isinstance(block, compiled) for block in (*joined.blocks, *joined.unknown.blocks))
    quantized = quantize_int8(_joined(_model(0, 2), _model(1, 1)))
    linear = torch.ao.nn.quantized.dynamic.Linear
    assert any(isinstance(m, linear) for m in quantized.unknown.modules())
    assert any(isinstance(m, linear) for m in quantized.blocks.modules())
