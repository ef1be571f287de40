"""Training: the paper's GAN recipe, resumable, on CPU, one GPU or many (torchrun / DDP)."""

from .config import TrainConfig, dump_config, load_config, parse_overrides
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "dump_config", "load_config", "parse_overrides"]
