"""How the generator's STFT frames an input of any length: what it pads onto the end.

The iSTFT divides by the windows' summed overlap. An input that ends just short of a whole hop
leaves its last samples under the tail of one window only (a Hann weight of ~1e-4 at the last
sample), so whatever the model changed there came back as spikes of many times full scale, and
``--clip rescale`` then turned the whole file down by tens of dB. Padded to whole hops, every kept
sample has a frame that weights it fully.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def padded_length(length: int, window: int, hop: int) -> int:
    """Samples the generator transforms for an input of `length`: at least one window (the
    STFT's reflect padding needs more than half of one), rounded up to whole hops. Lengths of
    whole hops from one window up are left as they are."""
    return -(-max(length, window) // hop) * hop


def reflects_end(length: int, window: int, causal: bool) -> bool:
    """Whether the end is extended by reflection, as the STFT pads its ends, so the extension
    adds no click of its own; zeros for causal models (whose STFT pads with zeros) and for
    inputs shorter than a window."""
    return not causal and length >= window


def pad_end(x: torch.Tensor, extra: int, reflect: bool) -> torch.Tensor:
    """(rows, n) -> (rows, n + extra): reflected about the last sample, or zeros."""
    if extra <= 0:
        return x
    return F.pad(x[:, None], (0, extra), mode="reflect" if reflect else "constant")[:, 0]
