"""Numeric precision of inference: float32 (exact), bfloat16 autocast, or the int8 CPU path.

float32 reproduces the released implementation to float rounding. bfloat16 runs the matrix
multiplies and attention in bf16 under autocast, while the STFT, the norms and the band limit
stay float32. It is the usual GPU setting, and on CPUs with AVX-512 BF16 it is about 1.4x
faster than float32 (docs/performance.md). int8 quantises the linear layers (CPU only; see
quantize.py). Both reduced precisions change the output slightly; `apollo evaluate --bf16 /
--int8` measures what that costs.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "int8")


class Autocast(nn.Module):
    """Runs a generator under torch.autocast in `dtype`; returns the generator's output dtype."""

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    @property
    def config(self):  # noqa: ANN201 - the wrapped generator's ApolloConfig
        return self.model.config

    def file_band_levels(self, channels: int):  # noqa: ANN201 - the wrapped generator's
        return self.model.file_band_levels(channels)

    def forward(self, wav: torch.Tensor, band_limit: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(wav.device.type, dtype=self.dtype):
            return self.model(wav, band_limit)


def check_precision(precision: str, device: torch.device | str) -> None:
    """Raises ValueError (a one-line message for users) for an unknown or unsupported choice."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ValueError("the int8 path runs on the CPU only (use --device cpu, or --precision bf16 on a GPU)")


def with_precision(model: nn.Module, precision: str, device: torch.device | str) -> nn.Module:
    """The model to run at `precision` on `device` (the float32 model itself is never changed)."""
    check_precision(precision, device)
    if precision == "int8":
        from .quantize import quantize_int8

        return quantize_int8(model)
    if precision == "bf16":
        return Autocast(model, torch.bfloat16)
    return model
