"""Training: the paper's GAN recipe, resumable, on CPU, one GPU or many (torchrun / DDP)."""

from .config import TrainConfig, load_config, parse_overrides
from .trainer import Trainer

__all__ = ["TrainConfig", "Trainer", "load_config", "parse_overrides"]
