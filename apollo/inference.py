"""Inference speed options: numeric precision (fp32, bf16 autocast, int8) and torch.compile.

Precision. float32 reproduces the released implementation to float rounding. bfloat16 runs the
matrix multiplies and attention in bf16 under autocast, while the STFT, the norms and the band
limit stay float32: the usual GPU setting, and on CPUs with AVX-512 BF16 about 1.4x faster than
float32 (docs/performance.md). int8 is dynamic quantisation of the generator's linear layers
(the Roformer and TCN layers, >95% of the compute; CPU only, VNNI-friendly): weights int8 per
tensor, activations quantised on the fly per batch, per-band layers and norms float32; about
1.5x faster than float32 here. Both reduced precisions change the output slightly; `apollo
evaluate --bf16 / --int8` measures what that costs. torch.ao's dynamic quantisation is
deprecated upstream (moving to torchao) but works in the tested PyTorch releases; quantize_int8
is the one place to change when it moves.

Compile. Only the band-sequence blocks are compiled: they are real-valued and free of
data-dependent control flow, while the STFT (complex operators) and the band limit are cheap and
would only break the graph. Compilation happens on the first forward pass of each new input
shape: on a GPU it fuses the elementwise work between the matrix multiplies. On a 2-core CPU it
takes ~40 s per shape and saves ~15% in bf16, but compiled float32 code is slower than eager
float32, which sends its linear layers to oneDNN (docs/performance.md); that combination is
refused.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from .model import Apollo, layers

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

    def forward(self, wav: torch.Tensor, band_limit: torch.Tensor | None = None,
                bitrate: torch.Tensor | None = None, source_limit: torch.Tensor | None = None,
                dark_source_hz: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(wav.device.type, dtype=self.dtype):
            return self.model(wav, band_limit, bitrate, source_limit=source_limit, dark_source_hz=dark_source_hz)


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
        return quantize_int8(model)
    if precision == "bf16":
        return Autocast(model, torch.bfloat16)
    return model


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with dynamic int8 linear layers, for CPU inference only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear},
                                                           dtype=torch.qint8)
    return quantized


def check_compile(precision: str, device: torch.device | str) -> None:
    """Raises ValueError (one line for users) for a precision and device that compiling slows down."""
    if precision == "int8":
        raise ValueError("the int8 path cannot be compiled; use --compile with --precision bf16")
    if precision == "fp32" and torch.device(device).type == "cpu" and layers.ONEDNN_LINEAR:
        raise ValueError("--compile would slow float32 down on this CPU (eager float32 runs its linear layers "
                         "in oneDNN, compiled code does not); use it with --precision bf16 or on a GPU")


def compile_blocks(model: Apollo, backend: str = "inductor", fullgraph: bool = False) -> Apollo:
    """Replaces each of `model`'s band-sequence blocks (and its unknown-bitrate generator's) by its
    compiled version; returns `model`."""
    if not isinstance(model, Apollo):
        raise TypeError(f"expected an Apollo generator, got {type(model).__name__}")
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, backend=backend, fullgraph=fullgraph)
    if model.unknown is not None:
        compile_blocks(model.unknown, backend, fullgraph)
    return model
