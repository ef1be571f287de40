"""The band an MP3 encoder emptied: the bins above the input's band limit.

An encoder's lowpass leaves every bin above its cutoff far below the music: a cliff. A
generator with ``keep_input_band`` keeps the input spectrum below that cliff and writes only
above it, so it cannot smear what the codec kept.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .framing import pad_end, padded_length, reflects_end

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
# Whether a source was dark before it was coded is read from its loudest frames instead: at low
# bitrates an encoder empties the top few kHz under its edge in most frames (its holes), which
# puts the LEVEL_QUANTILE limit of bright music far under the edge (2.25 of 5.7 kHz at 32 kbps,
# docs/default-model.md, "Dark at the source"), while a source dark at its origin has nothing
# there in any frame.
SOURCE_QUANTILE = 0.99
# The dark-source rule (ApolloConfig.dark_source_hz_told) takes a told input for dark when its loudest
# frames end under this share of the encoder's edge at its bitrate (docs/default-model.md, "Dark at
# the source"); at_own_rate() holds an input sampled under the model's rate to the same share.
DARK_EDGE_SHARE = 0.75
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


# Levels are compared on a grid of LEVEL_STEP_DB from LEVEL_FLOOR_DB: the level of a bin is the
# grid cell of its LEVEL_QUANTILE frame, so a file's levels can be counted in a fixed histogram
# while it streams past (FileBandLevels) and come out the same as from all frames at once.
LEVEL_FLOOR_DB = -200.0  # 10 log10 of the 1e-20 power floor
LEVEL_STEP_DB = 0.1
LEVEL_CELLS = 3000  # up to +100 dB: far above any float audio's bin power at these windows


def frame_levels(spec: torch.Tensor) -> torch.Tensor:
    """(rows, T, F, 2) spectrum -> (rows, T, F) per-frame levels as grid cells (int64)."""
    db = 10 * torch.log10(spec.detach().float().pow(2).sum(-1).clamp_min(1e-20))
    return ((db - LEVEL_FLOOR_DB) / LEVEL_STEP_DB).floor().long().clamp(0, LEVEL_CELLS - 1)


def quantile_rank(frames: int, quantile: float = LEVEL_QUANTILE) -> int:
    """The 0-based rank of the `quantile` frame among `frames` sorted levels."""
    return int(quantile * (frames - 1))


def cells_to_db(cells: torch.Tensor) -> torch.Tensor:
    return LEVEL_FLOOR_DB + (cells.float() + 0.5) * LEVEL_STEP_DB


def item_band_limit(level_db: torch.Tensor, channels: int, margin_db: float = MARGIN_DB) -> torch.Tensor:
    """(items * channels, F) levels -> (items,) band limits: an item's channels share one
    (joint stereo codes them to one cutoff)."""
    rows, bins = level_db.shape
    return band_limit(level_db.reshape(rows // channels, channels, bins).mean(1), margin_db)


def input_band_limit(spec: torch.Tensor, channels: int, quantile: float = LEVEL_QUANTILE) -> torch.Tensor:
    """(B*C, T, F, 2) spectrum -> (B,) band limits from the spectrum's own frames.

    A bin's level is a high quantile (LEVEL_QUANTILE) of its per-frame levels: heard if a
    fifth of the frames have it, unmoved by the click at a chunk's cut edge in one.
    SOURCE_QUANTILE gives the limit of the loudest frames.
    """
    return item_band_limit(input_levels(spec, quantile), channels)


def input_levels(spec: torch.Tensor, quantile: float = LEVEL_QUANTILE) -> torch.Tensor:
    """(rows, T, F, 2) spectrum -> (rows, F) levels in dB: each bin's `quantile` of its frames'
    levels, on the grid FileBandLevels counts (what input_band_limit reads)."""
    cells = frame_levels(spec)  # (rows, T, F)
    rank = quantile_rank(cells.shape[1], quantile)
    return cells_to_db(cells.kthvalue(rank + 1, dim=1).values)


def emptied_band_mask(spec: torch.Tensor, channels: int, limit: torch.Tensor | None = None) -> torch.Tensor:
    """(B*C, T, F, 2) spectrum -> (B*C, 1, F, 1) mask: 1 above each item's band limit, else 0.

    `limit` (B,) is the band limit of each item's whole file (FileBandLevels); without it the
    limit comes from the spectrum at hand, which for a chunk of a longer file can differ.
    """
    bins = spec.shape[2]
    if limit is None:
        limit = input_band_limit(spec, channels)
    limit = limit.to(spec.device).repeat_interleave(channels)
    mask = torch.arange(bins, device=spec.device) > limit[:, None]
    return mask.to(spec.dtype)[:, None, :, None]


def never_dark(source_limit: torch.Tensor, window: int) -> torch.Tensor:
    """The loudest frames' limit that the dark-source rule takes for dark at no bitrate: the top bin."""
    return torch.full_like(source_limit, window // 2)


def at_own_rate(source_limit: torch.Tensor, input_rate: float, sample_rate: int, window: int) -> torch.Tensor:
    """The loudest frames' limit (bins) of an input sampled at `input_rate`, as the dark-source rule reads it.

    The rule's edges are an encoder's at the model's rate. An input sampled under it holds nothing
    above its own Nyquist (a 96-kbps MP3 at 22.05 kHz ends near 10 kHz, under the rule's 11.6 kHz for
    96 kbps), so an encoder at that rate could keep no more: one whose loudest frames reach
    DARK_EDGE_SHARE of that Nyquist is as bright as its rate allows and comes back as the top bin (dark
    at no bitrate); the others, and every input at the model's rate or above, as they are.
    """
    if input_rate >= sample_rate:
        return source_limit
    reach = DARK_EDGE_SHARE * input_rate / 2 * window / sample_rate  # in bins of the model's STFT
    return torch.where(source_limit >= reach, never_dark(source_limit, window), source_limit)


FRAMES_PER_FFT = 1024


class FileBandLevels:
    """A file's band limit from a stream of (channels, n) blocks, in flat memory.

    The frames are exactly those of one STFT over the whole file as the generator takes it
    (centred, reflect-padded, the end padded as framing.py says), so chunked restoration
    uses the limit a one-pass restoration computes for itself. Levels are counted in a
    histogram per channel and bin (LEVEL_CELLS cells), not kept per frame.
    """

    def __init__(self, window: int, hop: int, channels: int) -> None:
        self.window, self.hop, self.half, self.channels = window, hop, window // 2, channels
        self.hann = torch.hann_window(window)
        self.bins = window // 2 + 1
        self.counts = torch.zeros(channels * self.bins * LEVEL_CELLS, dtype=torch.int64)
        self.frames = 0  # frames counted so far
        self.head: list[torch.Tensor] = []  # the first samples, until the front padding can be built
        self.padded: torch.Tensor | None = None  # the padded signal from frame `frames` on
        self.length = 0
        self.finished = False

    def add(self, block: object) -> None:
        """Counts the frames that `block` (channels, n) completes."""
        if self.finished:
            raise RuntimeError("FileBandLevels: add() after levels() or limit(), which end the file")
        block = torch.as_tensor(block, dtype=torch.float32)
        self.length += block.shape[1]
        if self.padded is None:
            self.head.append(block)
            head = torch.cat(self.head, dim=1)
            if head.shape[1] <= self.window:  # a file this short is zero-padded as a whole: wait
                return
            self.head = []
            self.padded = self._front(head)
        else:
            self.padded = torch.cat([self.padded, block], dim=1)
        # count every frame that leaves a full window behind it (the end padding needs it)
        self._count(max((self.padded.shape[1] - self.window) // self.hop, 0))

    def _front(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, 1:self.half + 1].flip(1), x], dim=1)

    def _count(self, frames: int) -> None:
        """Counts the next `frames` frames, at most FRAMES_PER_FFT at a time (bounded memory)."""
        assert self.padded is not None
        offsets = (torch.arange(self.channels)[:, None, None] * self.bins
                   + torch.arange(self.bins)[None, None, :]) * LEVEL_CELLS
        done = 0
        while done < frames:
            n = min(frames - done, FRAMES_PER_FFT)
            start = done * self.hop
            windows = self.padded[:, start:start + (n - 1) * self.hop + self.window].unfold(1, self.window, self.hop)
            cells = frame_levels(torch.view_as_real(torch.fft.rfft(windows * self.hann, dim=-1)))  # (C, n, F)
            self.counts += torch.bincount((offsets + cells).reshape(-1), minlength=self.counts.numel())
            done += n
        self.frames += frames
        self.padded = self.padded[:, frames * self.hop:]

    def limit(self, quantile: float = LEVEL_QUANTILE) -> torch.Tensor:
        """The file's band limit, a (1,) bin index, as input_band_limit reads it at `quantile`;
        call after the last block."""
        return item_band_limit(self.levels(quantile), self.channels)

    def levels(self, quantile: float = LEVEL_QUANTILE) -> torch.Tensor:
        """(channels, F) levels in dB, as input_band_limit takes them; call after the last block
        (then as often as wanted, at any quantile)."""
        if not self.finished:
            self._finish()
        counts = self.counts.reshape(self.channels, self.bins, LEVEL_CELLS)
        cells = (counts.cumsum(-1) > quantile_rank(self.frames, quantile)).int().argmax(-1)  # the rank's cell
        return cells_to_db(cells)

    def _finish(self) -> None:
        """Counts the frames the end padding completes (once, after the last block)."""
        self.finished = True
        length = padded_length(self.length, self.window, self.hop)  # the end as the generator pads it
        reflect = reflects_end(self.length, self.window, causal=False)
        if self.padded is None:  # at most one window long
            head = torch.cat(self.head, dim=1) if self.head else torch.zeros(self.channels, 0)
            self.padded = self._front(pad_end(head, length - head.shape[1], reflect))
        else:
            self.padded = pad_end(self.padded, length - self.length, reflect)
        self.padded = torch.cat([self.padded, self.padded[:, -self.half - 1:-1].flip(1)], dim=1)
        total = 1 + (length + 2 * self.half - self.window) // self.hop  # torch.stft(center=True)'s count
        self._count(total - self.frames)


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
