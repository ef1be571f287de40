"""The int8 CPU path: dynamic quantisation of the generator's linear layers (VNNI-friendly).

Weights of every nn.Linear (the Roformer and TCN layers: >95% of the compute) become int8 per
tensor; activations are quantised on the fly per batch. The per-band bottleneck and
reconstruction layers and all norms stay float32. About 1.5x faster than float32 (which runs
its linear layers in oneDNN) on this project's 2-core AVX-512 VNNI machine (docs/performance.md);
the quality cost is measured with
`apollo evaluate --int8`.

torch.ao's dynamic quantisation is deprecated upstream (moving to torchao) but works in the
PyTorch release this project pins; this module is the one place to change when it moves.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn


def quantize_int8(model: nn.Module) -> nn.Module:
    """A copy of `model` with dynamic int8 linear layers, for CPU inference only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).cpu().eval(), {nn.Linear},
                                                           dtype=torch.qint8)
    return quantized
