"""Optional torch.compile of the band-sequence blocks, where over 95% of the compute is.

Only the blocks are compiled: they are real-valued and free of data-dependent control flow,
while the STFT (complex operators) and the band limit (quantiles) are cheap and would only
break the graph. Compilation happens on the first forward pass of each new input shape: on a
GPU it fuses the elementwise work between the matrix multiplies. On a 2-core CPU it takes ~40 s
per shape and saves ~15% in bf16, but compiled float32 code is slower than eager float32, which
sends its linear layers to oneDNN (docs/performance.md); that combination is refused.
"""

from __future__ import annotations

import torch

from .layers import ONEDNN_LINEAR
from .model import Apollo


def check_compile(precision: str, device: torch.device | str) -> None:
    """Raises ValueError (one line for users) for a precision and device that compiling slows down."""
    if precision == "int8":
        raise ValueError("the int8 path cannot be compiled; use --compile with --precision bf16")
    if precision == "fp32" and torch.device(device).type == "cpu" and ONEDNN_LINEAR:
        raise ValueError("--compile would slow float32 down on this CPU (eager float32 runs its linear layers "
                         "in oneDNN, compiled code does not); use it with --precision bf16 or on a GPU")


def compile_blocks(model: Apollo, backend: str = "inductor", fullgraph: bool = False) -> Apollo:
    """Replaces each of `model`'s band-sequence blocks by its compiled version; returns `model`."""
    if not isinstance(model, Apollo):
        raise TypeError(f"expected an Apollo generator, got {type(model).__name__}")
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, backend=backend, fullgraph=fullgraph)
    return model
