"""The band an MP3 encoder emptied: the bins above the input's band limit.

An encoder's lowpass leaves every bin above its cutoff at the noise floor, tens of dB below
the music. A generator with ``keep_input_band`` keeps the input spectrum below that cliff and
writes only above it, so it cannot smear what the codec kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# The floor is read from the top 5% of bins: every encoder setting up to 320 kbps low-passes
# below 20 kHz, so at 44.1 kHz they are empty in coded input.
FLOOR_FRACTION = 0.05
# A bin belongs to the kept band when its smoothed level is this far above the floor.
MARGIN_DB = 15.0
# Median over this many bins: the stopband of a decoded MP3 has isolated spurs.
SMOOTH_BINS = 9


def band_limit(level_db: torch.Tensor, margin_db: float = MARGIN_DB) -> torch.Tensor:
    """Index of the highest bin more than margin_db above the floor, per row of (rows, bins).

    ``level_db`` is each bin's level in dB. Rows with no such bin (silence) return -1: their
    whole spectrum counts as emptied.
    """
    half = SMOOTH_BINS // 2
    padded = F.pad(level_db[:, None], (half, half), mode="replicate")[:, 0]
    smooth = padded.unfold(-1, SMOOTH_BINS, 1).median(dim=-1).values
    top = max(1, round(level_db.shape[-1] * FLOOR_FRACTION))
    floor = smooth[..., -top:].median(dim=-1, keepdim=True).values
    above = smooth > floor + margin_db
    index = torch.arange(level_db.shape[-1], device=level_db.device).expand_as(above)
    return torch.where(above, index, torch.full_like(index, -1)).amax(dim=-1)


def emptied_band_mask(spec: torch.Tensor, channels: int, margin_db: float = MARGIN_DB) -> torch.Tensor:
    """(B*C, T, F, 2) spectrum -> (B*C, 1, F, 1) mask: 1 above each item's band limit, else 0.

    The level is the mean over frames of each bin's level in dB: the clicks at a chunk's cut
    edges, loud in one frame, barely move it, where they would dominate the mean power. An
    item's channels share the limit (joint stereo codes them to one cutoff).
    """
    rows, _, bins, _ = spec.shape
    level = 10 * torch.log10(spec.detach().float().pow(2).sum(-1).clamp_min(1e-20)).mean(1)  # (B*C, F)
    level = level.reshape(rows // channels, channels, bins).mean(1)
    limit = band_limit(level, margin_db).repeat_interleave(channels)
    mask = torch.arange(bins, device=spec.device) > limit[:, None]
    return mask.to(spec.dtype)[:, None, :, None]
