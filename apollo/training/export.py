"""What a run becomes: a stage a later stage starts from, or a model file to ship.

A run folder holds everything in `last.pt` (optimizers and random states too, 20 MB for the
default's size); a later stage of a recipe needs only the two networks (`init_from`,
`init_discriminator_from`). This writes them small enough to keep in git (checkpoints/README.md):

    python -m apollo.training.export runs/real2-ln-stage1 checkpoints/real2-ln-stage1

A shipped model is one generator checkpoint, or the element-wise mean of several (steps of one
run, or runs of one recipe from the same start), with inference-only config fields set
(docs/default-model.md; v8 is the mean of two runs' steps 100 and 150):

    python -m apollo.training.export --model apollo/weights/apollo-default.safetensors \
        runs/told-stage2/generator-step000100.safetensors runs/told-stage2/generator-step000150.safetensors \
        runs/told2-stage2/generator-step000100.safetensors runs/told2-stage2/generator-step000150.safetensors \
        --set normalize_peak=true --set correction_floor_db=-6

`--set num_blocks=N` under the checkpoint's count keeps its first N band-sequence blocks.
`--unknown-from CHECKPOINT` joins a second model that restores the inputs of unknown bitrate
(model.unknown; docs/default-model.md, "v13's weights for inputs of unknown bitrate"):

    python -m apollo.training.export --model joined.safetensors told.safetensors --unknown-from default
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..model.config import ApolloConfig
from ..pretrained import checkpoint_file, load_model
from ..states import CheckpointError, read_checkpoint, save_checkpoint, save_safetensors
from .config import parse_overrides
from .trainer import STATE

GENERATOR, DISCRIMINATOR = "generator.safetensors", "discriminator.safetensors"


def save_discriminator(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                       dtype: torch.dtype = torch.float16, metadata: Mapping[str, str] | None = None) -> None:
    """Writes a discriminator's state dict as safetensors (atomically) in `dtype`: float16 halves
    it, and `init_discriminator_from` loads it into the float32 network all the same."""
    save_safetensors(path, {k: v.detach().to(dtype) for k, v in state.items()}, metadata)


def export_stage(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                 discriminator_dtype: torch.dtype = torch.float16) -> dict[str, Path]:
    """Writes out_dir/generator.safetensors (float32, with its config, as load_model reads it) and
    out_dir/discriminator.safetensors (in `discriminator_dtype`: float16 halves it; the trainer
    loads it into float32) from run_dir/last.pt. Returns the two paths."""
    path = Path(run_dir) / STATE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no run state to export")
    state = torch.load(path, map_location="cpu", weights_only=True)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"generator": out / GENERATOR, "discriminator": out / DISCRIMINATOR}
    save_checkpoint(written["generator"], state["generator"], ApolloConfig.from_dict(state["model_config"]),
                    metadata={"step": str(state["step"])})
    save_discriminator(state["discriminator"], written["discriminator"], discriminator_dtype,
                       metadata={"step": str(state["step"])})
    return written


def export_model(checkpoints: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 fields: Mapping[str, Any] | None = None, overwrite: bool = False,
                 unknown: str | os.PathLike[str] | None = None) -> Path:
    """Writes `out`: the generator in `checkpoints` (files or built-in names; several: their
    element-wise mean, e.g. of one run's steps; docs/default-model.md, "four probes"), its config with
    `fields` replaced (e.g. normalize_peak, correction_floor_db). One checkpoint and no fields is a
    byte-for-byte copy of its tensors and config. `unknown` (a checkpoint path or built-in name) joins
    that model as the one that restores inputs of unknown bitrate (model.unknown), its config and
    weights as they are; a file that holds such a pair itself gives its own unknown-bitrate generator
    (`default` since v14: v13's). Raises CheckpointError for a file without a config or checkpoints of
    different models, ValueError for an unknown field or a pair that cannot be joined,
    FileExistsError for an existing `out` unless `overwrite`."""
    if not checkpoints:
        raise ValueError("no generator checkpoint given")
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists (overwrite it on purpose)")
    states, config = [], None
    for path in checkpoints:
        state, found = read_checkpoint(checkpoint_file(path))
        if found is None:
            raise CheckpointError(f"{path}: holds no model config (not a generator this project saved)")
        if config is not None and (found != config or state.keys() != states[0].keys()):
            raise CheckpointError(f"{path}: a different model from {checkpoints[0]} "
                                  "(averaging needs one config and one set of weights)")
        states.append(state)
        config = found
    assert config is not None
    blocks = config.num_blocks
    config = ApolloConfig.from_dict({**config.to_dict(), **(fields or {})})
    if config.num_blocks != blocks:
        states = [first_blocks(state, blocks, config.num_blocks) for state in states]
    if len(states) == 1:
        merged, meta = states[0], None
    else:
        merged = {k: torch.stack([s[k].double() for s in states]).mean(0).to(v.dtype) for k, v in states[0].items()}
        meta = {"averaged_from": json.dumps([Path(p).name for p in checkpoints])}
    if unknown is not None:
        joined = load_model(unknown)
        joined = joined.unknown if joined.unknown is not None else joined  # a joined file gives its own
        if config.unknown is not None:
            raise CheckpointError(f"{checkpoints[0]}: holds an unknown-bitrate generator already")
        config = dataclasses.replace(config, unknown=joined.config)
        merged = {**merged, **{f"unknown.{k}": v for k, v in joined.state_dict().items()}}
        meta = {**(meta or {}), "unknown_from": Path(unknown).name}
    save_checkpoint(out, merged, config, metadata=meta)
    return out


def first_blocks(state: Mapping[str, torch.Tensor], blocks: int, keep: int) -> dict[str, torch.Tensor]:
    """A generator state of `blocks` band-sequence blocks with only the first `keep` of them: the
    model without the blocks a run appended last (Apollo.grown appends them as identities, and
    with few steps at a fine-tune rate they stay near one; docs/default-model.md, "v15 without
    its two grown blocks"). A model cannot grow here (the trainer grows, Apollo.grown)."""
    if not 1 <= keep <= blocks:
        raise ValueError(f"num_blocks={keep}: a model of {blocks} blocks can keep 1 to {blocks} of them "
                         "(growing is the trainer's: model.num_blocks over init_from)")
    dropped = tuple(f"blocks.{i}." for i in range(keep, blocks))
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def main(argv: list[str] | None = None) -> int:
    usage = ("%(prog)s RUN_DIR OUT_DIR [--float32]\n"
             "       %(prog)s --model OUT CHECKPOINT [CHECKPOINT ...] [--set FIELD=VALUE] [--overwrite]")
    parser = argparse.ArgumentParser(prog="python -m apollo.training.export", description=__doc__.split("\n")[0],
                                     usage=usage)
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="RUN_DIR OUT_DIR: the stage in RUN_DIR/last.pt to OUT_DIR; with --model: the generator "
                             "checkpoints to write (files or built-in names; several: their element-wise mean)")
    parser.add_argument("--float32", action="store_true", help="keep the discriminator in float32 (twice the size)")
    parser.add_argument("--model", type=Path, metavar="OUT", help="write one model file OUT (see above)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="with --model: a model config field, value as YAML (e.g. correction_floor_db=-6)")
    parser.add_argument("--overwrite", action="store_true", help="with --model: replace an existing OUT")
    parser.add_argument("--unknown-from", metavar="CHECKPOINT",
                        help="with --model: join this model (a file or a built-in name; one that holds a pair gives "
                             "its own unknown-bitrate part, so `default` gives v13's) to restore the inputs of "
                             "unknown bitrate (WAV/FLAC), the exported one restoring the inputs told a bitrate")
    args = parser.parse_args(argv)
    if args.model is None:
        if len(args.paths) != 2 or args.set or args.overwrite or args.unknown_from:
            parser.error("a stage export takes RUN_DIR OUT_DIR (--set, --overwrite and --unknown-from go with --model)")
        try:
            written = export_stage(*args.paths, torch.float32 if args.float32 else torch.float16)
        except FileNotFoundError as err:
            parser.exit(2, f"error: {err}\n")
        for name, file in written.items():
            print(f"{name}: {file} ({file.stat().st_size / 1e6:.1f} MB)")
        return 0
    if args.float32:
        parser.error("--float32 goes with a stage export, not --model")
    try:
        out = export_model(args.paths, args.model, parse_overrides(args.set), args.overwrite, args.unknown_from)
    except (ValueError, FileExistsError) as err:  # CheckpointError is a ValueError
        parser.exit(2, f"error: {err}\n")
    print(f"model: {out} ({out.stat().st_size / 1e6:.1f} MB, from {len(args.paths)} checkpoint(s))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
