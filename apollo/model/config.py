"""Generator configuration and band layouts.

The configuration is plain data: it is written next to the weights in every checkpoint the
project saves, so a model can always be rebuilt from its file alone.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

BAND_LAYOUTS = ("v1", "paper")


@dataclass(frozen=True)
class ApolloConfig:
    """Hyper-parameters of the Apollo generator (paper Sec. II, released defaults)."""

    sample_rate: int = 44100
    win_ms: int = 20
    feature_dim: int = 256
    num_blocks: int = 6
    num_heads: int = 8
    band_layout: str = "v1"  # "v1": released checkpoints; "paper": 160 Hz bands
    band_hz: float = 160.0  # bandwidth of the paper layout
    tcn_blocks: int = 3
    tcn_kernel: int = 7
    rope_positions: int = 100  # rows of the rotary tables (released: 100)
    # False (released, paper): the reconstruction is the output spectrum. True: it is added to
    # the input spectrum, and starts at zero, so an untrained model returns its input and
    # training only has to learn what the codec removed (docs/default-model.md).
    residual: bool = False
    # True (needs residual): bins up to the input's band limit keep the input spectrum, and the
    # model writes only the band above it, the band an MP3 lowpass emptied (model/band_limit.py).
    keep_input_band: bool = False
    # True (needs keep_input_band): no written bin is louder than the kept band's top 1 kHz in
    # its frame, so a source with nothing near the cutoff gets nothing above it (band_limit.py).
    cap_emptied_band: bool = False
    # != 0 (needs residual): what the model writes above the input's band limit (the band an
    # MP3 lowpass emptied) is scaled by this many dB. A calibration of the fill's level, chosen
    # on the validation split after training (docs/default-model.md, "four probes"); it
    # scales what the model writes, so a band the model leaves empty (dark music) stays empty.
    fill_gain_db: float = 0.0
    # Set (needs bitrate_classes): one fill gain in dB per entry of bitrate_classes, used instead of
    # fill_gain_db for an input told that bitrate; an input of unknown bitrate keeps fill_gain_db.
    # The fill falls short of the reference by different amounts at different bitrates (v8: 4-7 dB
    # under at 24-32 kbps, within 3 dB at 48; docs/default-model.md, "A louder fill per bitrate").
    fill_gain_db_told: tuple[float, ...] = ()
    # Set (needs fill_gain_db_told): one frequency in Hz per entry of bitrate_classes (0: every input).
    # A told input gets its row's fill gain only where its loudest frames (band_limit.SOURCE_QUANTILE)
    # reach this frequency: music that ends well under the encoder's edge may have been dark before it
    # was coded, and a louder fill over it is louder invention (docs/default-model.md, "A louder fill
    # for bright inputs"). An input it holds back is restored as without the gain.
    fill_gain_from_hz_told: tuple[float, ...] = ()
    # Set (needs fill_gain_db): (from, under) in Hz. An input of unknown bitrate (any input, without
    # fill_gain_db_told) gets fill_gain_db only where its loudest frames (band_limit.SOURCE_QUANTILE)
    # end in [from, under): where a WAV decoded from a 24-48 kbps MP3 ends (the encoder's edge), not
    # where music dull at the source coded at a high bitrate does (10-14 kHz), nor music dark under
    # 3.5 kHz. An input it holds back is restored as without the gain (docs/default-model.md, "A
    # louder fill where an unknown input ends low").
    fill_gain_window_hz: tuple[float, ...] = ()
    # Set (needs bitrate_classes and residual): one frequency in Hz per entry of bitrate_classes (0:
    # none). A told input whose band limit in its loudest frames (band_limit.SOURCE_QUANTILE) lies
    # under it ended there at the source, well before the encoder's lowpass at that bitrate, so
    # the band above is not the codec's damage, and nothing is written above its band limit (its
    # loudest frames' limit where the band limit finds no cliff): it keeps the input there
    # (docs/default-model.md, "Dark at the source"). The encoder's edge
    # comes from degrade.codec_cutoff_hz at export. For an input sampled under the model's rate the
    # Restorer reads that limit against the input's own Nyquist (band_limit.at_own_rate). Where an
    # MP3's LAME tag states the encoder's lowpass, 0.75 of it replaces the row's frequency for that
    # file (a row at 0 stays without); a VBR MP3 without one, whose mean bitrate does not set its
    # edge, is never taken for dark (Restorer.file_bitrate).
    dark_source_hz_told: tuple[float, ...] = ()
    # Set (needs bitrate_classes and residual): one gain in dB per entry of bitrate_classes. Under
    # a told input's band limit, where the model writes more than the input cell holds (the
    # codec's holes: |correction| > |input|), what it writes is scaled by this many dB. The hole
    # share under the cutoff at 24 kbps is the fill target the model misses by least
    # (docs/default-model.md, "Louder in the codec's holes").
    hole_gain_db_told: tuple[float, ...] = ()
    # Set (needs residual): the part of a correction that is out of phase with the input cell it
    # is added to is dropped softly when it is more than this many dB under that cell (gain
    # |q|^2 / (|q|^2 + t^2 |x|^2), half at the floor); the in-phase part, a change of level, stays.
    # A small model leaves an error floor ~35 dB down wherever it writes, which costs SI-SNR on
    # clean high-bitrate MP3s; holes and the emptied band (|x| ~ 0) are written in full. Per cell,
    # so chunked output equals one pass (band_reconstruction.drop_small_corrections).
    correction_floor_db: float | None = None
    # True: nothing depends on audio later than the current STFT window, so the model can
    # restore a live stream (streaming.py). The temporal convolutions look back only and the
    # STFT pads with zeros instead of reflecting; the band limit rule, which reads the whole
    # file, is not available. Same weights and shapes as the non-causal model.
    causal: bool = False
    # True: Restorer scales the whole input to peak 1, the level every training pair has
    # (data/examples.py coded_pair), and the output back. The generator is not scale-equivariant:
    # the same music 20 dB quieter gets a high band up to 15 dB too loud for its level. False
    # (released): the input is restored at the level it comes in.
    normalize_peak: bool = False
    # Nominal MP3 bitrates (kbps, ascending) the model is told its input was coded at: a learnt
    # vector per bitrate and band is added to the band features (Apollo.bitrate_index), one more
    # for "unknown" (WAV/FLAC input, a live stream, training examples with the bitrate withheld).
    # An MP3's frame headers say its bitrate (audio.mp3_bitrate), and a dull source coded at 128
    # kbps and a bright one at 48 kbps end at the same frequency, which the band alone cannot
    # tell apart (docs/default-model.md, "Told the bitrate"). Empty: not conditioned (released).
    bitrate_classes: tuple[int, ...] = ()
    # Set (needs bitrate_classes): a second generator, with its own config and weights, that restores
    # every input of unknown bitrate (WAV/FLAC input) while this one restores the inputs told a
    # bitrate: a told model whose "unknown" row is weaker than an earlier model's can ship with that
    # model's weights for unknown inputs (docs/default-model.md, "v13's weights for inputs of unknown
    # bitrate"). It shares the rate, the STFT and the whole-file measures the Restorer reads
    # (normalize_peak, the band limit, the loudest frames' limit), so chunking and the Restorer treat
    # the pair as one model. Inference only: training starts from the told generator alone.
    unknown: ApolloConfig | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # YAML and --set read -6 as an int: store -6.0, as the type says
            value = getattr(self, field.name)
            if "float" in str(field.type) and type(value) is int:
                object.__setattr__(self, field.name, float(value))
        object.__setattr__(self, "bitrate_classes", tuple(int(k) for k in self.bitrate_classes))  # JSON: a list
        if isinstance(self.unknown, dict):  # JSON and YAML: a mapping
            object.__setattr__(self, "unknown", ApolloConfig.from_dict(self.unknown))
        object.__setattr__(self, "fill_gain_db_told", tuple(float(g) for g in self.fill_gain_db_told))
        object.__setattr__(self, "fill_gain_from_hz_told", tuple(float(f) for f in self.fill_gain_from_hz_told))
        object.__setattr__(self, "fill_gain_window_hz", tuple(float(f) for f in self.fill_gain_window_hz))
        object.__setattr__(self, "dark_source_hz_told", tuple(float(f) for f in self.dark_source_hz_told))
        object.__setattr__(self, "hole_gain_db_told", tuple(float(g) for g in self.hole_gain_db_told))
        if any(k <= 0 for k in self.bitrate_classes) or list(self.bitrate_classes) != sorted(set(self.bitrate_classes)):
            raise ValueError(f"bitrate_classes must be positive kbps in ascending order, got {self.bitrate_classes}")
        if self.band_layout not in BAND_LAYOUTS:
            raise ValueError(f"band_layout must be one of {BAND_LAYOUTS}, got {self.band_layout!r}")
        if self.feature_dim % self.num_heads:
            raise ValueError("feature_dim must be divisible by num_heads")
        if (self.feature_dim // self.num_heads) % 2:
            raise ValueError("feature_dim / num_heads must be even for rotary embeddings")
        if self.sample_rate < 1000 or self.win_ms <= 0:
            raise ValueError("sample_rate must be >= 1000 Hz and win_ms positive")
        if self.tcn_kernel % 2 == 0:
            raise ValueError("tcn_kernel must be odd")
        if self.keep_input_band and not self.residual:
            raise ValueError("keep_input_band needs residual: true (the kept band is the input's)")
        if self.cap_emptied_band and not self.keep_input_band:
            raise ValueError("cap_emptied_band needs keep_input_band: true (it caps the band above the limit)")
        if self.fill_gain_db_told and len(self.fill_gain_db_told) != len(self.bitrate_classes):
            raise ValueError(f"fill_gain_db_told needs one gain per bitrate_classes entry "
                             f"({len(self.bitrate_classes)}), got {len(self.fill_gain_db_told)}")
        if self.fill_gain_from_hz_told and not self.fill_gain_db_told:
            raise ValueError("fill_gain_from_hz_told needs fill_gain_db_told (it says which inputs get those gains)")
        if self.fill_gain_from_hz_told and len(self.fill_gain_from_hz_told) != len(self.fill_gain_db_told):
            raise ValueError(f"fill_gain_from_hz_told needs one frequency per fill_gain_db_told entry "
                             f"({len(self.fill_gain_db_told)}), got {len(self.fill_gain_from_hz_told)}")
        if any(f < 0 for f in self.fill_gain_from_hz_told):
            raise ValueError(f"fill_gain_from_hz_told must be >= 0 Hz (0: every input), "
                             f"got {self.fill_gain_from_hz_told}")
        if self.fill_gain_window_hz:
            if len(self.fill_gain_window_hz) != 2 or not 0 <= self.fill_gain_window_hz[0] < self.fill_gain_window_hz[1]:
                raise ValueError(f"fill_gain_window_hz must be (from, under) in Hz with 0 <= from < under, "
                                 f"got {self.fill_gain_window_hz}")
            if not self.fill_gain_db:
                raise ValueError("fill_gain_window_hz needs fill_gain_db (the gain it gates)")
        if self.dark_source_hz_told and len(self.dark_source_hz_told) != len(self.bitrate_classes):
            raise ValueError(f"dark_source_hz_told needs one frequency per bitrate_classes entry "
                             f"({len(self.bitrate_classes)}), got {len(self.dark_source_hz_told)}")
        if self.hole_gain_db_told and len(self.hole_gain_db_told) != len(self.bitrate_classes):
            raise ValueError(f"hole_gain_db_told needs one gain per bitrate_classes entry "
                             f"({len(self.bitrate_classes)}), got {len(self.hole_gain_db_told)}")
        if any(self.hole_gain_db_told) and (not self.residual or self.causal):
            raise ValueError("hole_gain_db_told needs residual: true and a non-causal model (it scales what is "
                             "added under the whole file's band limit)")
        if any(f < 0 for f in self.dark_source_hz_told):
            raise ValueError(f"dark_source_hz_told must be >= 0 Hz (0: no rule), got {self.dark_source_hz_told}")
        if self.scales_fill and not self.residual:
            raise ValueError("fill_gain_db and dark_source_hz_told need residual: true (they scale what is added to "
                             "the input)")
        if self.correction_floor_db is not None and not self.residual:
            raise ValueError("correction_floor_db needs residual: true (it gates what is added to the input)")
        if self.causal and self.scales_fill:
            raise ValueError("causal models cannot scale the written band: its limit is measured on the whole file")
        if self.causal and self.keep_input_band:
            raise ValueError("causal models cannot keep the input band: its limit is measured on the whole file")
        if self.unknown is not None:
            self._check_unknown(self.unknown)

    def _check_unknown(self, other: ApolloConfig) -> None:
        """Refuses an unknown-bitrate generator the Restorer and the chunking could not treat as one model with this."""
        if not isinstance(other, ApolloConfig):
            raise ValueError(f"unknown must be a generator config (a mapping of its fields), got {other!r}")
        if not self.bitrate_classes:
            raise ValueError("unknown needs bitrate_classes: only a model told bitrates knows which inputs are unknown")
        if other.unknown is not None:
            raise ValueError("unknown: the unknown-bitrate generator cannot have one of its own")
        if self.causal or other.causal:
            raise ValueError("unknown: a causal model streams one generator (streaming.py); join non-causal ones")
        shared = ("sample_rate", "win_ms", "normalize_peak", "uses_band_limit", "reads_source_limit")
        differ = [name for name in shared if getattr(self, name) != getattr(other, name)]
        if differ:
            raise ValueError(f"unknown: the two generators must agree on {', '.join(differ)} (the Restorer "
                             "measures those once per file for both)")

    @property
    def window(self) -> int:
        """STFT window (= n_fft) in samples, as the released code computes it."""
        return int(self.sample_rate * self.win_ms // 1000)

    @property
    def hop(self) -> int:
        return self.window // 2

    @property
    def latency(self) -> int:
        """Samples a causal model must wait for before an output sample is final: the STFT
        window minus one (the last frame that overlaps a sample ends window - 1 samples later)."""
        return self.window - 1

    @property
    def uses_band_limit(self) -> bool:
        """Whether the model needs the input's band limit (model/band_limit.py)."""
        return self.keep_input_band or self.scales_fill or any(self.hole_gain_db_told)

    @property
    def reads_source_limit(self) -> bool:
        """Whether a rule reads where an input's loudest frames end (dark_source_hz_told,
        fill_gain_from_hz_told, fill_gain_window_hz): the whole file's, so chunks are restored alike."""
        return any(self.dark_source_hz_told) or any(self.fill_gain_from_hz_told) or bool(self.fill_gain_window_hz)

    @property
    def scales_fill(self) -> bool:
        """Whether what is written above the band limit is scaled (fill_gain_db, fill_gain_db_told,
        dark_source_hz_told)."""
        return self.fill_gain_db != 0 or any(self.fill_gain_db_told) or any(self.dark_source_hz_told)

    @property
    def num_bins(self) -> int:
        return self.window // 2 + 1

    @property
    def bands(self) -> list[tuple[int, int]]:
        """Band layout as (number of bands, bins per band) groups, low to high frequency."""
        if self.band_layout == "v1":
            return v1_layout(self.window)
        return paper_layout(self.window, self.sample_rate, self.band_hz)

    @property
    def num_bands(self) -> int:
        return sum(count for count, _ in self.bands)

    def to_dict(self) -> dict[str, Any]:
        """Every field; `unknown` only where it is set, so a config without it writes the JSON it wrote
        before the field existed (the same export, the same SHA-256)."""
        data = dataclasses.asdict(self)
        if self.unknown is None:
            del data["unknown"]
        else:
            data["unknown"] = self.unknown.to_dict()
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ApolloConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        return cls(**data)


def _merge(widths: list[int]) -> list[tuple[int, int]]:
    groups: list[tuple[int, int]] = []
    for width in widths:
        if groups and groups[-1][1] == width:
            groups[-1] = (groups[-1][0] + 1, width)
        else:
            groups.append((1, width))
    return groups


def v1_layout(window: int) -> list[tuple[int, int]]:
    """79 bands of int(window/160) bins plus one band with the remaining bins (released)."""
    bins = window // 2 + 1
    width = int(window / 160)
    if width < 1 or bins - 79 * width < 1:
        raise ValueError(f"window of {window} samples is too short for the v1 band layout")
    return _merge([width] * 79 + [bins - 79 * width])


def paper_layout(window: int, sample_rate: int, band_hz: float = 160.0) -> list[tuple[int, int]]:
    """Bands of `band_hz` (rounded to whole bins); the last band takes the remaining bins."""
    bins = window // 2 + 1
    width = max(1, round(band_hz * window / sample_rate))
    count = max(1, bins // width)
    return _merge([width] * (count - 1) + [bins - (count - 1) * width])


# Built-in configurations: "tiny" lets tests and CI run the whole tool in seconds.
PRESETS: dict[str, ApolloConfig] = {
    "apollo-v1": ApolloConfig(),
    "apollo-paper": ApolloConfig(band_layout="paper"),
    "tiny": ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2),
}
