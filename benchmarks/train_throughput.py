"""Training throughput (clips per second) of the recipes, on this machine's CPU or a GPU.

    python benchmarks/train_throughput.py [--recipes apollo-paper apollo-small] [--steps 3] [--json OUT]
                                          [--set optim.batch_size=32 ...]

Each step is a full GAN step (generator + 7 discriminators, both optimisers) on a batch of
the recipe's crops; data preparation (MP3 coding) is timed separately, per clip.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from apollo.training import Trainer, load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def measure(recipe: str, steps: int, checkpointing: bool, overrides: dict[str, Any] | None = None) -> dict:
    """One recipe's median seconds per full GAN step and mean seconds to make one training clip."""
    config = load_config(CONFIGS / f"{recipe}.yaml", {"data.source": "synthetic", "data.workers": 0,
                                                      "data.examples_per_epoch": 64,
                                                      "activation_checkpointing": checkpointing, **(overrides or {})})
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(config, run_dir, progress=False)
        trainer.step = config.loss.gan_from_step  # past any generator-only warm-up: full GAN steps
        batch = config.optim.batch_size
        start = time.perf_counter()
        items = [trainer.train_set[i] for i in range(batch)]
        data_time = (time.perf_counter() - start) / batch
        degraded = torch.stack([x[0] for x in items])
        target = torch.stack([x[1] for x in items])
        trainer.train_step(degraded, target)  # warm-up
        times = []
        for _ in range(steps):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            trainer.train_step(degraded, target)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {"recipe": recipe, "device": str(trainer.device), "batch": batch, "segment_s": config.data.segment,
            "feature_dim": trainer.model_config.feature_dim, "blocks": trainer.model_config.num_blocks,
            "step_s": round(step, 3), "clips_per_s": round(batch / step, 4),
            "data_s_per_clip": round(data_time, 3), "threads": torch.get_num_threads(),
            "activation_checkpointing": checkpointing,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["apollo-small", "apollo-paper"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--checkpointing", nargs="*", default=[], metavar="RECIPE",
                        help="recipes to run with activation checkpointing (the paper recipe needs it "
                             "on a 24 GB CPU machine)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe value for every recipe, e.g. optim.batch_size=32 or "
                             "data.source=cache (the default is synthetic clips)")
    parser.add_argument("--json")
    args = parser.parse_args()
    try:
        overrides = parse_overrides(args.set)
    except ValueError as err:
        parser.error(str(err))
    rows = []
    for recipe in args.recipes:
        row = measure(recipe, args.steps, recipe in args.checkpointing, overrides)
        rows.append(row)
        print(f"{recipe}: {row['clips_per_s']} clips/s ({row['batch']} x {row['segment_s']} s crops, "
              f"{row['step_s']} s/step on {row['device']}); data {row['data_s_per_clip']} s/clip; "
              f"peak RSS {row['peak_rss_mb']} MB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": platform.machine(), "torch": torch.__version__,
                                               "overrides": overrides, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
