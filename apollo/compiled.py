"""Optional torch.compile of the band-sequence blocks, where over 95% of the compute is.

Only the blocks are compiled: they are real-valued and free of data-dependent control flow,
while the STFT (complex operators) and the band limit (quantiles) are cheap and would only
break the graph. Compilation happens on the first forward pass of each new input shape: on a
GPU it fuses the elementwise work between the matrix multiplies; on a 2-core CPU it takes
about 50 s per shape and saves ~10% (docs/performance.md), so it pays off only on long jobs.
"""

from __future__ import annotations

import torch

from .model import Apollo


def compile_blocks(model: Apollo, backend: str = "inductor", fullgraph: bool = False) -> Apollo:
    """Replaces each of `model`'s band-sequence blocks by its compiled version; returns `model`."""
    if not isinstance(model, Apollo):
        raise TypeError(f"expected an Apollo generator, got {type(model).__name__}")
    for i, block in enumerate(model.blocks):
        model.blocks[i] = torch.compile(block, backend=backend, fullgraph=fullgraph)
    return model
