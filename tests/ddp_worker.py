"""Run by test_training under torchrun: 2 training steps, then each rank saves its weights."""

import sys
from pathlib import Path

import torch

from apollo.training import Trainer, load_config
from apollo.training.trainer import _unwrap

if __name__ == "__main__":
    run_dir = Path(sys.argv[1])
    config = load_config(Path(__file__).parents[1] / "configs" / "apollo-smoke.yaml",
                         {"schedule.max_steps": 2, "schedule.checkpoint_every": 1000})
    trainer = Trainer(config, run_dir, progress=False)
    initial = {k: v.clone() for k, v in _unwrap(trainer.generator).state_dict().items()}
    trainer.fit()
    torch.save({"initial": initial, "final": _unwrap(trainer.generator).state_dict(), "world": trainer.world},
               run_dir / f"rank{trainer.rank}.pt")
