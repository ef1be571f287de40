"""Getting a ready generator from a checkpoint file, a state dict or a built-in name."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from . import convert
from .model import Apollo
from .model.config import PRESETS, ApolloConfig
from .states import CheckpointError, read_checkpoint, strip_prefix

TEST_MODEL = "tiny-test"
TEST_SEED = 1234
WEIGHTS = Path(__file__).parent / "weights"
# built-in models by name: weights that ship inside the package (docs/default-model.md; "stream": the
# causal model of apollo stream, docs/streaming.md). A GPU-trained "large" joins when one beats the
# default on the real-music validation split (docs/gpu.md).
BUILT_IN = {"default": "apollo-default.safetensors", "stream": "apollo-stream.safetensors"}
NAMES = (*BUILT_IN, TEST_MODEL)  # every name --checkpoint and load_model() accept


def built_in_path(name: str) -> Path:
    """The file of a built-in model; a missing file means a broken or partial installation."""
    path = WEIGHTS / BUILT_IN[name]
    if not path.is_file():
        raise CheckpointError(f"the built-in model {name!r} is missing from this installation ({path}): reinstall "
                              "apollo, or pass --checkpoint PATH (a released pytorch_model.bin or an apollo "
                              ".safetensors)")
    return path


def checkpoint_file(source: str | os.PathLike[str]) -> str | os.PathLike[str]:
    """The file a checkpoint argument names: the built-in model's file for a built-in name ("default",
    "stream") where no file of that name lies in the working folder, else `source` as given."""
    return built_in_path(str(source)) if str(source) in BUILT_IN and not Path(source).exists() else source


def build_test_model() -> Apollo:
    """A tiny generator with seeded random weights: lets CI run the whole tool without weights."""
    generator = torch.Generator().manual_seed(TEST_SEED)
    model = Apollo(PRESETS["tiny"])
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.empty_like(param).uniform_(-0.5, 0.5, generator=generator) if param.dim() > 1
                        else 1 + 0.1 * torch.empty_like(param).uniform_(-1, 1, generator=generator))
    return model.eval()


def model_from_state(state: Mapping[str, torch.Tensor], config: ApolloConfig | None = None) -> Apollo:
    """Builds a generator from a state dict in our names or the released names (strict)."""
    state = strip_prefix(state)
    if convert.is_released(state):
        config = config or convert.infer_config(state)
        state = convert.from_released(state, config)
    elif config is None:
        raise CheckpointError("state dict in the project's names needs its config (use save_checkpoint files)")
    model = Apollo(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"weights do not fit the {config.band_layout} generator: {err}") from err
    return model.eval()


def load_model(source: str | os.PathLike[str] | Mapping[str, torch.Tensor] = "default",
               device: str | torch.device = "cpu") -> Apollo:
    """A ready generator (eval mode) from a checkpoint path, a state dict or a built-in name
    ("default", "stream", "tiny-test"; a file of that name in the working folder wins).

    Accepts the project's safetensors files, released `pytorch_model.bin` state dicts, the
    authors' training dicts, and Lightning / toolkit checkpoints (`audio_model.` / `model.`).
    Sizes and sample rate of released checkpoints are read off their tensor shapes.
    """
    if isinstance(source, Mapping):
        model = model_from_state(source)
    elif str(source) == TEST_MODEL and not Path(source).exists():
        model = build_test_model()
    else:
        source = checkpoint_file(source)
        if _looks_like_a_name(source):
            raise CheckpointError(f"{source}: no such checkpoint file, and not a built-in model ({', '.join(NAMES)}; "
                                  f"a GPU-trained 'large' joins them once one beats the default, docs/gpu.md)")
        state, config = read_checkpoint(source)
        model = model_from_state(state, config)
    return model.to(device)


def _looks_like_a_name(source: str | os.PathLike[str]) -> bool:
    """A bare word that is no file here (e.g. a mistyped built-in name): no folder part, no extension."""
    path = Path(source)
    return not path.exists() and path.name == str(source) and not path.suffix


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
