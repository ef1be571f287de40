"""The Apollo generator: STFT -> band split -> band-sequence blocks -> band reconstruction -> iSTFT."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .band_limit import SOURCE_QUANTILE, FileBandLevels, cap_to_band_edge, emptied_band_mask, input_band_limit
from .band_reconstruction import BandReconstruction, drop_small_corrections
from .band_sequence import BandSequenceBlock
from .band_split import BandSplit
from .config import ApolloConfig
from .framing import pad_end, padded_length, reflects_end


class Apollo(nn.Module):
    """Restores a waveform (batch, channels, samples); each channel is processed on its own.

    With ``config.residual`` the reconstruction is added to the input spectrum; with
    ``config.keep_input_band`` too, only above the input's band limit; ``config.fill_gain_db``
    (``fill_gain_db_told`` per bitrate) scales what it writes above that limit, and
    ``dark_source_hz_told`` writes nothing there for an input that was dark before it was coded.
    With ``config.unknown`` a second generator (``self.unknown``) restores the inputs of unknown bitrate.
    """

    def __init__(self, config: ApolloConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ApolloConfig()
        layout = config.bands
        positions = max(config.rope_positions, config.num_bands)
        self.band_split = BandSplit(layout, config.feature_dim)
        self.blocks = nn.Sequential(
            *(
                BandSequenceBlock(config.feature_dim, config.num_heads, config.tcn_blocks, config.tcn_kernel, positions,
                                  config.causal)
                for _ in range(config.num_blocks)
            )
        )
        if config.bitrate_classes:  # row 0: unknown; starts at zero, so it changes nothing until trained
            self.bitrate_embedding = nn.Parameter(torch.zeros(len(config.bitrate_classes) + 1, config.num_bands,
                                                              config.feature_dim))
        self.band_reconstruction = BandReconstruction(layout, config.feature_dim)
        if config.residual:
            self.band_reconstruction.zero_output()
        # config.unknown: the generator that restores inputs of unknown bitrate (restore_spectrum)
        self.unknown = Apollo(config.unknown) if config.unknown is not None else None
        self.register_buffer("window", torch.hann_window(config.window), persistent=False)
        # training only: recompute each block's activations in backward instead of storing them
        self.activation_checkpointing = False

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def file_band_levels(self, channels: int) -> FileBandLevels | None:
        """An accumulator of a file's band limit, for models that use it (else None)."""
        if not self.config.uses_band_limit:
            return None
        return FileBandLevels(self.config.window, self.config.hop, channels)

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, L) -> (B, T, F, 2) real/imag spectrogram."""
        spec = torch.stft(
            wav, self.config.window, self.config.hop, window=self.window.to(wav.dtype),
            center=True, pad_mode="constant" if self.config.causal else "reflect",  # causal: no future samples
            normalized=False, onesided=True, return_complex=True,
        )
        return torch.view_as_real(spec).transpose(1, 2)

    def istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """(B, T, F, 2) -> (B, length)."""
        spec = torch.view_as_complex(spec.float().transpose(1, 2).contiguous())
        return torch.istft(
            spec, self.config.window, self.config.hop, window=self.window.float(),
            center=True, normalized=False, onesided=True, length=length,
        )

    def padded_length(self, length: int) -> int:
        """Samples forward() transforms for an input of `length` (framing.padded_length)."""
        return padded_length(length, self.config.window, self.config.hop)

    def bitrate_index(self, bitrate: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Rows of the bitrate embedding for nominal bitrates `bitrate` (batch,) in kbps: the
        nearest of config.bitrate_classes on a log scale (320 kbps reads as the highest class), 0
        (unknown) where the bitrate is None, 0 or negative."""
        if bitrate is None:
            return torch.zeros(batch, dtype=torch.long, device=self.window.device)
        kbps = torch.as_tensor(bitrate, dtype=torch.float32, device=self.window.device).reshape(-1).expand(batch)
        classes = torch.tensor(self.config.bitrate_classes, dtype=torch.float32, device=kbps.device)
        nearest = (kbps.clamp(min=1).log2()[:, None] - classes.log2()[None]).abs().argmin(dim=1) + 1
        return torch.where(kbps > 0, nearest, torch.zeros_like(nearest))

    def forward(self, wav: torch.Tensor, band_limit: torch.Tensor | None = None,
                bitrate: torch.Tensor | None = None, source_limit: torch.Tensor | None = None,
                dark_source_hz: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, channels, samples) -> the same shape, restored.

        band_limit (batch,) is each item's input band limit (FileBandLevels) for models that
        keep the input band: pass the whole file's when `wav` is a chunk of it. Without it the
        limit comes from `wav` itself. bitrate (batch,) is each item's nominal MP3 bitrate in
        kbps (0: unknown), for models with config.bitrate_classes; others ignore it. source_limit
        (batch,) is each item's band limit in its loudest frames (FileBandLevels.limit(SOURCE_QUANTILE)),
        for models with config.reads_source_limit: pass the whole file's when `wav` is a chunk of it.
        dark_source_hz (batch,) replaces that rule's frequency for each item's row where the row has one
        (dark_rows): from the encoder's own lowpass, where its MP3 states it (Restorer.file_bitrate).
        """
        if wav.dim() != 3:
            raise ValueError(f"expected (batch, channels, samples), got shape {tuple(wav.shape)}")
        batch, channels, length = wav.shape
        x = wav.reshape(batch * channels, length)
        padded = self.padded_length(length)
        x = pad_end(x, padded - length, reflects_end(length, self.config.window, self.config.causal))
        spec = self.stft(x)
        out, _ = self.restore_spectrum(spec, channels, band_limit, bitrate=bitrate, source_limit=source_limit,
                                       dark_source_hz=dark_source_hz)
        y = self.istft(out, padded)[:, :length]
        return y.reshape(batch, channels, length).to(wav.dtype)

    def restore_spectrum(self, spec: torch.Tensor, channels: int = 1, band_limit: torch.Tensor | None = None,
                         history: list | None = None,
                         bitrate: torch.Tensor | None = None,
                         source_limit: torch.Tensor | None = None,
                         dark_source_hz: torch.Tensor | None = None) -> tuple[torch.Tensor, list | None]:
        """(B, T, F, 2) input spectrum -> (restored spectrum, history).

        The frame-wise core of forward(). `history` continues a causal model from the frames
        before `spec` (streaming.py): pass initial_history() at the start of a stream and the returned history
        with the next frames. With history None nothing is carried over. bitrate, source_limit and
        dark_source_hz: as forward()'s, one per item of B // channels.
        """
        if self.unknown is None:
            return self._restore(spec, channels, band_limit, history, bitrate, source_limit, dark_source_hz)
        # config.unknown: items of unknown bitrate are the unknown generator's, the others this one's
        unknown = self.bitrate_index(bitrate, spec.shape[0] // channels).repeat_interleave(channels) == 0
        if bool(unknown.all()):
            return self.unknown.restore_spectrum(spec, channels, band_limit, history, None, source_limit)
        told, after = self._restore(spec, channels, band_limit, history, bitrate, source_limit, dark_source_hz)
        if not bool(unknown.any()):
            return told, after
        plain, _ = self.unknown.restore_spectrum(spec, channels, band_limit, history, None, source_limit)
        return torch.where(unknown[:, None, None, None], plain, told), None  # non-causal: no history

    def _restore(self, spec: torch.Tensor, channels: int, band_limit: torch.Tensor | None,
                 history: list | None, bitrate: torch.Tensor | None, source_limit: torch.Tensor | None,
                 dark_source_hz: torch.Tensor | None) -> tuple[torch.Tensor, list | None]:
        """restore_spectrum() with this generator's own weights (not config.unknown's)."""
        z = self.band_split(spec)
        rows = None
        if self.config.bitrate_classes:
            rows = self.bitrate_index(bitrate, spec.shape[0] // channels).repeat_interleave(channels)
            z = z + self.bitrate_embedding[rows][:, None].to(z.dtype)
        after = None if history is None else []
        for index, block in enumerate(self.blocks):
            if after is not None:
                z, past = block.step(z, history[index])
                after.append(past)
            elif self.activation_checkpointing and torch.is_grad_enabled():
                z = checkpoint(block, z, use_reentrant=False)
            else:
                z = block(z)
        out = self.band_reconstruction(z)
        if self.config.uses_band_limit:
            mask = emptied_band_mask(spec, channels, band_limit)
            if self.config.scales_fill:
                told = rows is not None and bool((rows > 0).any())  # row 0: unknown, read by one rule only
                reads = told or bool(self.config.fill_gain_window_hz)
                if source_limit is None and self.config.reads_source_limit and reads:
                    source_limit = input_band_limit(spec, channels, SOURCE_QUANTILE)
                ends = None if source_limit is None else source_limit.repeat_interleave(channels)  # (B*C,)
                dark = None  # (B*C,) on the CPU: the told items dark at the source
                if rows is not None and ends is not None and self.config.dark_source_hz_told:
                    own = None if dark_source_hz is None else dark_source_hz.repeat_interleave(channels)
                    dark = self.dark_rows(rows, ends, own)
                    # one whose 90% levels have no cliff (the limit is the top bin, nothing lies above
                    # it) keeps the input above its loudest frames' limit
                    swap = dark.to(mask.device)[:, None, None, None] & (mask.sum(dim=2, keepdim=True) == 0)
                    if swap.any():
                        mask = torch.where(swap, emptied_band_mask(spec, channels, source_limit), mask)
                out = out * (1 + self.fill_gain(rows, dark, out, ends) * mask)
            if any(self.config.hole_gain_db_told) and rows is not None:
                holes = (1 - mask) * (out.square().sum(-1, keepdim=True) > spec.square().sum(-1, keepdim=True))
                out = out * (1 + self.hole_gain(rows, out) * holes)
        if self.config.keep_input_band:
            out = out * mask
            if self.config.cap_emptied_band:
                out = cap_to_band_edge(out, spec, mask)
        if self.config.correction_floor_db is not None:
            out = drop_small_corrections(out, spec, self.config.correction_floor_db)
        if self.config.residual:
            out = out + spec
        return out, after

    def fill_gain(self, rows: torch.Tensor | None, dark: torch.Tensor | None,
                  out: torch.Tensor, ends: torch.Tensor | None = None) -> torch.Tensor:
        """What is written above the band limit is scaled by 1 + this: (B*C, 1, 1, 1) in out's dtype.

        rows (B*C,): each item's bitrate row (None: not told); dark (B*C,): dark_rows' verdict for
        each item (None: no dark-source rule applies); ends (B*C,): where each item's loudest frames
        end (bins), read by config.fill_gain_from_hz_told and config.fill_gain_window_hz. The gain is
        config.fill_gain_db_told's for its row where the item reaches that row's frequency, 0 dB
        where it does not (row 0, unknown, gets config.fill_gain_db, as every item does without
        fill_gain_db_told: where config.fill_gain_window_hz is set, only where its end lies in that
        window, else 0 dB), and -1 (nothing written) where an item is dark at the source. In float64
        on the CPU before the cast, so a single gain scales exactly as a Python float would."""
        c = self.config
        gains = torch.tensor((c.fill_gain_db, *c.fill_gain_db_told), dtype=torch.float64)
        per_row = rows is not None and bool(c.fill_gain_db_told)
        db = gains[rows.cpu()] if per_row else gains[:1].expand(out.shape[0])
        if per_row and any(c.fill_gain_from_hz_told) and ends is not None:
            held_back = self.ends_under(ends, self.row_hz(rows, c.fill_gain_from_hz_told))
            db = torch.where(held_back, torch.zeros_like(db), db)
        if c.fill_gain_window_hz and ends is not None:  # the items that get fill_gain_db: gated by where they end
            plain = rows.cpu() == 0 if per_row else torch.ones(out.shape[0], dtype=torch.bool)
            low, high = (torch.full_like(db, hz) for hz in c.fill_gain_window_hz)
            outside = self.ends_under(ends, low) | ~self.ends_under(ends, high)
            db = torch.where(plain & outside, torch.zeros_like(db), db)
        change = 10 ** (db / 20) - 1
        if dark is not None:
            change = torch.where(dark, torch.full_like(change, -1.0), change)
        return change.to(out.device, out.dtype)[:, None, None, None]

    def dark_rows(self, rows: torch.Tensor, source_limit: torch.Tensor,
                  dark_source_hz: torch.Tensor | None = None) -> torch.Tensor:
        """(B*C,) bool on the CPU: whether each told item's band limit in its loudest frames (bins)
        lies under config.dark_source_hz_told's frequency for its bitrate row (row 0, unknown: never).

        dark_source_hz (B*C,), where given and finite, replaces the frequency of an item whose row has
        one (a row at 0 Hz, no rule, stays without)."""
        edges = self.row_hz(rows, self.config.dark_source_hz_told)
        if dark_source_hz is not None:
            own = dark_source_hz.cpu().double()
            edges = torch.where((edges > 0) & own.isfinite(), own, edges)
        return self.ends_under(source_limit, edges)

    @staticmethod
    def row_hz(rows: torch.Tensor, frequencies: tuple[float, ...]) -> torch.Tensor:
        """(B*C,) float64 on the CPU: each item's frequency of a per-bitrate rule (one per entry of
        config.bitrate_classes), 0 for row 0 (unknown)."""
        return torch.tensor((0.0, *frequencies), dtype=torch.float64)[rows.cpu()]

    def ends_under(self, source_limit: torch.Tensor, hz: torch.Tensor) -> torch.Tensor:
        """(B*C,) bool on the CPU: whether each item's loudest frames' limit (bins) lies under its
        frequency `hz` (row_hz; 0: never). The one comparison both the dark-source rule and the fill
        gain's gate make."""
        c = self.config
        return source_limit.cpu().double() * c.sample_rate / c.window < hz

    def hole_gain(self, rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """What is written in the codec's holes under the band limit is scaled by 1 + this: (B*C, 1, 1,
        1), config.hole_gain_db_told's for each item's bitrate row (0 for row 0, unknown)."""
        gains = torch.tensor((0.0, *self.config.hole_gain_db_told), dtype=torch.float64)
        change = 10 ** (gains[rows.cpu()] / 20) - 1
        return change.to(out.device, out.dtype)[:, None, None, None]

    def initial_history(self, batch: int) -> list[list[torch.Tensor]]:
        """The history restore_spectrum() starts a causal stream from: zero frames before it."""
        c = self.config
        past = self.window.new_zeros(batch, c.tcn_kernel - 1, c.num_bands, c.feature_dim)
        return [[past] * c.tcn_blocks for _ in range(c.num_blocks)]

    def without_unknown(self) -> "Apollo":
        """A copy of the generator that restores inputs told a bitrate, without config.unknown's
        (itself where it has none). Training starts from it (trainer._with_overrides)."""
        if self.unknown is None:
            return self
        told = Apollo(dataclasses.replace(self.config, unknown=None)).to(self.window.device)
        told.load_state_dict({k: v for k, v in self.state_dict().items() if not k.startswith("unknown.")})
        told.activation_checkpointing = self.activation_checkpointing
        return told.train(self.training)

    def grown(self, num_blocks: int) -> "Apollo":
        """This model with band-sequence blocks appended up to `num_blocks`, computing exactly
        what it computes now: the new blocks start as identities (make_identity) and learn from
        there, so a larger model can continue from a trained smaller one."""
        if num_blocks < self.config.num_blocks:
            raise ValueError(f"cannot grow {self.config.num_blocks} blocks into {num_blocks}")
        bigger = Apollo(dataclasses.replace(self.config, num_blocks=num_blocks))
        for block in bigger.blocks[self.config.num_blocks:]:
            block.make_identity()
        state = bigger.state_dict()
        state.update(self.state_dict())
        bigger.load_state_dict(state)
        return bigger

    @torch.no_grad()
    def drop_future_taps(self) -> None:
        """Keeps only the causal part of every temporal kernel (see TCNBlock.drop_future_taps)."""
        for block in self.blocks:
            for tcn in block.tcn:
                tcn.drop_future_taps()
