"""A run's last state as what a later stage starts from: the generator and the discriminator.

A run folder holds everything in `last.pt` (optimizers and random states too, 20 MB for the
default's size); a later stage of a recipe needs only the two networks (`init_from`,
`init_discriminator_from`). This writes them small enough to keep in git (checkpoints/README.md):

    python -m apollo.training.export runs/real2-ln-stage1 checkpoints/real2-ln-stage1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..model.config import ApolloConfig
from ..states import atomic_write, save_checkpoint
from .trainer import STATE

GENERATOR, DISCRIMINATOR = "generator.safetensors", "discriminator.safetensors"


def save_discriminator(state: Mapping[str, torch.Tensor], path: str | os.PathLike[str],
                       dtype: torch.dtype = torch.float16, metadata: Mapping[str, str] | None = None) -> None:
    """Writes a discriminator's state dict as safetensors (atomically) in `dtype`: float16 halves
    it, and `init_discriminator_from` loads it into the float32 network all the same."""
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=dict(metadata) if metadata else None))


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m apollo.training.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run folder holding last.pt")
    parser.add_argument("out_dir", type=Path, help="where generator.safetensors and discriminator.safetensors go")
    parser.add_argument("--float32", action="store_true", help="keep the discriminator in float32 (twice the size)")
    args = parser.parse_args(argv)
    try:
        written = export_stage(args.run_dir, args.out_dir, torch.float32 if args.float32 else torch.float16)
    except FileNotFoundError as err:
        parser.exit(2, f"error: {err}\n")
    for name, file in written.items():
        print(f"{name}: {file} ({file.stat().st_size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
