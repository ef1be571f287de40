"""The band an MP3 encoder emptied: the bins above the input's band limit.

An encoder's lowpass leaves every bin above its cutoff far below the music: a cliff. A
generator with ``keep_input_band`` keeps the input spectrum below that cliff and writes only
above it, so it cannot smear what the codec kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

# A cliff must fall at least this far to count as the codec's.
MARGIN_DB = 15.0
# Median over this many bins: the stopband of a decoded MP3 has isolated spurs.
SMOOTH_BINS = 9
# An encoder's lowpass falls over ~1 kHz: the drop is measured across this many bins.
SLOPE_BINS = 20
# Above the codec's cliff every bin is at least this far below the loudest one. A lone bass
# falls off a cliff of its own at a few hundred Hz, but its harmonics go on above it.
QUIET_DB = 50.0
# A bin's level is this quantile of its per-frame levels in dB. A codec's lowpass empties every
# frame; a hi-hat every half beat fills a fifth of them, which a mean in dB drowns in the quiet
# frames between (so a cliff of the chords' harmonics came out deeper than the codec's); the
# click at a chunk's cut edge fills one frame in hundreds, which the quantile ignores.
LEVEL_QUANTILE = 0.9
# A sharp cliff is as deep from any of the SLOPE_BINS bins before it: of the cliffs within this
# much of the deepest, the last one is the band limit.
NEAR_DB = 3.0


def band_limit(level_db: torch.Tensor, margin_db: float = MARGIN_DB) -> torch.Tensor:
    """Index of the last bin before the deepest cliff, per row of (rows, bins) levels in dB.

    The cliff after bin k is how far the smoothed level at k stands above the loudest bin
    from k + SLOPE_BINS up. Of the cliffs with nothing within QUIET_DB of the peak beyond them,
    the deepest wins (or the highest within NEAR_DB of it), and the band limit is its top.
    The deepest, not the highest, because of 24 kbps: LAME codes it as MPEG-2 at 22.05 kHz, so
    the decoded stream has a second, shallower step at its 11 kHz Nyquist, far above the 4 kHz
    the codec kept. Rows with no cliff of margin_db (full-band audio, silence) keep every bin.
    """
    half = SMOOTH_BINS // 2
    padded = F.pad(level_db[:, None], (half, half), mode="replicate")[:, 0]
    smooth = padded.unfold(-1, SMOOTH_BINS, 1).median(dim=-1).values
    beyond = smooth.flip(-1).cummax(-1).values.flip(-1)  # loudest level from each bin up
    slope = min(SLOPE_BINS, level_db.shape[-1] - 1)
    rest = beyond[:, slope:]
    drop = smooth[:, :-slope] - rest
    quiet = rest < smooth.amax(dim=-1, keepdim=True) - QUIET_DB
    drop = torch.where(quiet, drop, torch.full_like(drop, -torch.inf))
    depth = drop.amax(dim=-1, keepdim=True)
    near = drop >= depth - NEAR_DB
    positions = torch.arange(drop.shape[-1], device=drop.device).expand_as(drop)
    index = torch.where(near, positions, torch.zeros_like(positions)).amax(dim=-1)
    return torch.where(depth[:, 0] > margin_db, index, torch.full_like(index, level_db.shape[-1] - 1))


def emptied_band_mask(spec: torch.Tensor, channels: int, margin_db: float = MARGIN_DB) -> torch.Tensor:
    """(B*C, T, F, 2) spectrum -> (B*C, 1, F, 1) mask: 1 above each item's band limit, else 0.

    A bin's level is a high quantile (LEVEL_QUANTILE) of its per-frame levels in dB: heard if a
    fifth of the frames have it, unmoved by the click at a chunk's cut edge in one. An item's
    channels share the limit (joint stereo codes them to one cutoff).
    """
    rows, _, bins, _ = spec.shape
    frames = 10 * torch.log10(spec.detach().float().pow(2).sum(-1).clamp_min(1e-20))  # (B*C, T, F)
    level = torch.quantile(frames, LEVEL_QUANTILE, dim=1)  # (B*C, F)
    level = level.reshape(rows // channels, channels, bins).mean(1)
    limit = band_limit(level, margin_db).repeat_interleave(channels)
    mask = torch.arange(bins, device=spec.device) > limit[:, None]
    return mask.to(spec.dtype)[:, None, :, None]


# The written band is capped by the kept band's top this many bins (1 kHz at 20-ms windows) ...
EDGE_BINS = SLOPE_BINS
# ... taking the loudest of this many frames around each one: an encoder at low bitrates
# leaves short holes in its top band, which should not silence what is written above it.
EDGE_FRAMES = 5


def cap_to_band_edge(written: torch.Tensor, spec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Limits each written bin's magnitude to the RMS magnitude of the kept band's top.

    written, spec: (rows, T, F, 2); mask: emptied_band_mask's (rows, 1, F, 1). Music falls in
    level towards high frequencies, so the emptied band should not be louder than the band
    just below the cutoff. Where that band is silent (a lone bass or pad, or a note's
    decay) the written band is silenced with it, rather than filled at the level learned from
    full mixes, which costs ViSQOL on isolated stems. Frames and rows with no emptied band
    are left as they are.
    """
    kept = mask[:, 0, :, 0] == 0  # (rows, F): a run of kept bins from 0, then the written ones
    first = kept.sum(-1)  # the first written bin (F where nothing is written)
    index = torch.arange(kept.shape[-1], device=spec.device)
    edge = ((index < first[:, None]) & (index >= first[:, None] - EDGE_BINS)).to(spec.dtype)  # (rows, F)
    power = spec.detach().pow(2).sum(-1)  # (rows, T, F)
    edge_power = (power * edge[:, None]).sum(-1) / edge.sum(-1).clamp_min(1)[:, None]  # (rows, T)
    edge_power = F.max_pool1d(edge_power[:, None], EDGE_FRAMES, stride=1, padding=EDGE_FRAMES // 2)[:, 0]
    magnitude = written.pow(2).sum(-1, keepdim=True).clamp_min(1e-20).sqrt()
    cap = edge_power.sqrt()[:, :, None, None]
    return written * torch.clamp(cap / magnitude, max=1.0)
