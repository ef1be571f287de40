"""Loading every checkpoint container users hold, strictly and safely."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from packaging.version import Version

import apollo
from apollo import convert
from apollo.model.config import ApolloConfig
from apollo.pretrained import count_parameters
from apollo.states import read_checkpoint

FULL_PARAMS = 16_539_308


def _check_full(model: apollo.Apollo, state: dict[str, torch.Tensor]) -> None:
    assert count_parameters(model) == FULL_PARAMS
    assert model.config == ApolloConfig()
    back = convert.to_released(model.state_dict(), model.config)
    assert set(back) == set(state)
    for name in ("BN.0.1.weight", "BN.79.0.weight", "net.5.band_net.weight.weight", "output.79.1.bias",
                 "net.3.seq_net.blocks.2.conv.0.weight"):
        assert torch.equal(back[name], state[name]), name


def test_full_size_state_dict_loads_strictly(released_full_state, tmp_path):
    assert len(released_full_state) == 654
    path = tmp_path / "pytorch_model.bin"
    torch.save(released_full_state, path)
    _check_full(apollo.load_model(path), released_full_state)
    _check_full(apollo.load_model(released_full_state), released_full_state)


@pytest.mark.parametrize("container", ["authors_training", "lightning", "toolkit_model", "safetensors_bare"])
def test_full_size_containers(released_full_state, tmp_path, container):
    path = tmp_path / "checkpoint.ckpt"
    if container == "authors_training":
        obj = {
            "model_name": "Apollo",
            "state_dict": released_full_state,
            "model_args": {"sr": 44100, "win": 20, "feature_dim": 256, "layer": 6},
            "infos": {"software_versions": {"torch_version": torch.__version__, "packaging": Version("24.0")}},
        }
        torch.save(obj, path)
        with pytest.raises(pickle.UnpicklingError):  # what a plain weights-only load does
            torch.load(path, weights_only=True)
    elif container == "lightning":
        state = {f"audio_model.{k}": v for k, v in released_full_state.items()}
        state["discriminator.conv.weight"] = torch.zeros(3)
        torch.save({"epoch": 3, "global_step": 10, "state_dict": state, "optimizer_states": []}, path)
    elif container == "toolkit_model":
        torch.save({f"model.{k}": v for k, v in released_full_state.items()}, path)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "community.safetensors"
        save_file(released_full_state, str(path))
    _check_full(apollo.load_model(path), released_full_state)


class _CreatesFile:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("wrap", ["torch_save", "raw_pickle"])
def test_malicious_pickle_is_refused_and_runs_nothing(tmp_path, wrap):
    marker = tmp_path / "pwned"
    path = tmp_path / "pytorch_model.bin"
    payload = {"BN.0.0.weight": torch.zeros(11), "evil": _CreatesFile(str(marker))}
    if wrap == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(apollo.CheckpointError):
        apollo.load_model(path)
    assert not marker.exists()


def test_torch_save_malicious_pickle_names_the_global(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"evil": _CreatesFile(str(tmp_path / "x"))}, path)
    with pytest.raises(apollo.UnsafeCheckpointError, match="system"):
        read_checkpoint(path)


@pytest.mark.parametrize("feature_dim", [192, 256, 384])
def test_community_sizes_inferred_from_shapes(feature_dim):
    config = ApolloConfig(feature_dim=feature_dim, num_blocks=2)
    model = apollo.Apollo(config)
    released = convert.to_released(model.state_dict(), config)
    loaded = apollo.load_model(released)
    assert loaded.config == config
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


@pytest.mark.parametrize("sample_rate", [22050, 32000, 44100, 48000, 96000])
def test_sample_rate_inferred_from_shapes(sample_rate):
    config = ApolloConfig(sample_rate=sample_rate, feature_dim=16, num_blocks=1, num_heads=2)
    released = convert.to_released(apollo.Apollo(config).state_dict(), config)
    assert convert.infer_config(released) == config


def test_bad_files_give_checkpoint_errors(tmp_path):
    missing = tmp_path / "missing.bin"
    with pytest.raises(apollo.CheckpointError, match="no such"):
        apollo.load_model(missing)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(apollo.CheckpointError):
        apollo.load_model(junk)
    wrong = tmp_path / "wrong.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, wrong)
    with pytest.raises(apollo.CheckpointError):
        apollo.load_model(wrong)


def test_info_cli_prints_inferred_config(released_full_state, tmp_path, capsys):
    from apollo.cli import main

    path = tmp_path / "pytorch_model.bin"
    torch.save(released_full_state, path)
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "feature_dim: 256" in out and "num_blocks: 6" in out and "sample_rate: 44100" in out
    assert "parameters: 16,539,308" in out and "79 x 5 bins, 1 x 47 bins" in out
    assert main(["info", str(tmp_path / "missing.bin")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_built_in_names(capsys):
    from apollo.cli import main
    from apollo.pretrained import built_in_path

    shipped = apollo.load_model()
    assert shipped.config == apollo.load_model("default").config == apollo.load_model(built_in_path("default")).config
    assert main(["info", "default"]) == 0
    assert "parameters:" in capsys.readouterr().out
    assert main(["info"]) == 0
    assert "checkpoint: default" in capsys.readouterr().out
    # a bare word that is neither a file nor a built-in name is answered with the names there are
    for name in ("large", "defualt"):
        with pytest.raises(apollo.CheckpointError, match="not a built-in model .default, stream, tiny-test"):
            apollo.load_model(name)
        assert main(["info", name]) == 2
        assert "not a built-in model" in capsys.readouterr().err
    assert main(["info", "missing.bin"]) == 2
    assert "not a built-in" not in capsys.readouterr().err  # a file name keeps the plain message


def test_to_released_writes_the_released_names_and_shapes(full_keys):
    # a model built here (not loaded from a released file) exports exactly the released layout
    model = apollo.Apollo(ApolloConfig())
    released = convert.to_released(model.state_dict(), model.config)
    assert sorted((name, list(value.shape)) for name, value in released.items()) == sorted(full_keys)


def test_saved_checkpoint_is_the_same_bytes_every_time(tmp_path):
    """safetensors' writer orders metadata by a randomly seeded hash; ours keeps the given order, so
    a recipe's export reproduces the shipped file's SHA-256."""
    model = apollo.load_model("tiny-test")
    extra = {"step": "7", "averaged_from": '["a", "b"]', "note": "x"}
    blobs = set()
    for i in range(8):
        apollo.save_checkpoint(tmp_path / f"{i}.safetensors", model.state_dict(), model.config, metadata=extra)
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    blob = blobs.pop()
    size = int.from_bytes(blob[:8], "little")
    assert size % 8 == 0
    meta = json.loads(blob[8:8 + size])["__metadata__"]
    assert list(meta) == ["format", "apollo_config", "step", "averaged_from", "note"]
    state, config = read_checkpoint(tmp_path / "0.safetensors")
    assert config == model.config
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
