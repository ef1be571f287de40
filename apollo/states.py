"""Checkpoint files: the project's own format and safe reading of released containers.

Own format: one `.safetensors` file whose metadata holds the generator config as JSON. No
pickle is ever written. Pickled files (released `.bin`/`.ckpt`/`.pt`) are read with PyTorch's
weights-only unpickler; the only non-tensor objects it may build are inert stand-ins for the
version strings the authors' training script stores, so no code from a file ever runs.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from .model.config import ApolloConfig

Tensor = torch.Tensor
CONFIG_KEY = "apollo_config"
FORMAT_KEY = "format"
FORMAT = "apollo-generator/1"
PREFIXES = ("audio_model.", "model.", "module.", "generator.")


class CheckpointError(ValueError):
    """A checkpoint could not be read or understood."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled checkpoint asks to run code beyond tensors and plain containers."""


class _VersionStandIn(str):
    """Inert replacement for torch's TorchVersion (a str subclass) in pickled metadata."""


class _ObjectStandIn:
    """Inert replacement for packaging/distutils version objects in pickled metadata."""

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<version metadata {getattr(self, 'state', None)!r}>"


# Globals that training scripts put in checkpoint metadata; each is replaced, never imported.
_STAND_INS = [
    (_VersionStandIn, "torch.torch_version.TorchVersion"),
    (_ObjectStandIn, "packaging.version.Version"),
    (_ObjectStandIn, "packaging.version._Version"),
    (_ObjectStandIn, "pkg_resources.extern.packaging.version.Version"),
    (_ObjectStandIn, "distutils.version.LooseVersion"),
    (_ObjectStandIn, "distutils.version.StrictVersion"),
]


def atomic_write(path: str | os.PathLike[str], write: Any, suffix: str = "") -> None:
    """Calls write(tmp_path) then renames tmp_path onto path, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or path.suffix, dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make outputs private
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor],
                     metadata: Mapping[str, str] | None = None) -> None:
    """Writes tensors and string metadata as one safetensors file, atomically and the same bytes
    every time: the metadata keeps the order given. (safetensors' writer orders it by a randomly
    seeded hash, so one model saved twice could come out in two layouts with two SHA-256s.)"""
    blob = safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                             metadata=dict(metadata) if metadata else None)
    if metadata and len(metadata) > 1:
        size = int.from_bytes(blob[:8], "little")
        header = json.loads(blob[8:8 + size])
        header = {"__metadata__": dict(metadata), **{k: v for k, v in header.items() if k != "__metadata__"}}
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        assert len(text) <= size  # the same entries in another order; the writer pads to 8 bytes
        blob = blob[:8] + text.ljust(size) + blob[8 + size:]
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


def save_checkpoint(path: str | os.PathLike[str], state: Mapping[str, Tensor], config: ApolloConfig,
                    metadata: Mapping[str, str] | None = None) -> None:
    """Writes weights + config as one safetensors file (atomically, the same bytes every time)."""
    meta = {FORMAT_KEY: FORMAT, CONFIG_KEY: config.to_json(), **(metadata or {})}
    save_safetensors(path, state, meta)


def _load_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def _load_pickle(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_STAND_INS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
        if reason is not None:
            raise UnsafeCheckpointError(
                f"{path}: refused: the file asks to run code, not just store tensors ({reason}). "
                "Only weights are loaded; convert the checkpoint with code you trust."
            ) from err
        detail = next((line for line in lines if line.startswith("Unsupported") or "load key" in line),
                      "corrupt pickle")
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({detail})") from err
    except Exception as err:  # torch raises many types for corrupt or foreign files
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {err})") from err


def read_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], ApolloConfig | None]:
    """Reads any supported checkpoint file -> (state dict as found, config if the file has one).

    Containers: own safetensors (+ config), bare state dicts (pickle or safetensors), the
    authors' training dict (`state_dict` key), Lightning (`state_dict` with `audio_model.` keys).
    """
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                return read_checkpoint(path / name)
        raise CheckpointError(f"{path}: folder holds no model.safetensors or pytorch_model.bin")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as handle:
        head = handle.read(9)
    if path.suffix == ".safetensors" or head[8:9] == b"{":  # safetensors: u64 header size, then JSON
        state, meta = _load_safetensors(path)
        config = ApolloConfig.from_dict(json.loads(meta[CONFIG_KEY])) if CONFIG_KEY in meta else None
        return state, config
    obj = _load_pickle(path)
    return _unwrap(obj, path), None


def _unwrap(obj: Any, path: Path) -> dict[str, Tensor]:
    """Finds the generator's state dict inside the known containers."""
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{path}: holds no state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not state:
        raise CheckpointError(f"{path}: holds no tensors")
    return strip_prefix(state)


def strip_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Keeps the generator's entries of a wrapper's state dict, without the wrapper prefix."""
    for prefix in PREFIXES:
        if any(k.startswith(prefix) for k in state):
            inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            # Lightning modules also hold a discriminator etc.; only the prefixed part is ours
            return strip_prefix(inner)
    return dict(state)
