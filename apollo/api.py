"""The Python API: `Restorer` restores arrays and files; the CLI is a thin layer over it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from . import audio
from .apply import ChunkPlan, prefetch, restore_stream
from .inference import check_compile, check_precision, compile_blocks, with_precision
from .model.band_limit import DARK_EDGE_SHARE, SOURCE_QUANTILE, at_own_rate, never_dark
from .pretrained import built_in_path, load_model
from .states import atomic_write
from .threads import CpuShare

CLIP_MODES = ("rescale", "clamp", "none")
LAYOUTS = ("channels_first", "channels_last")
MAX_CHANNELS = 64  # more is a transposed array, not a recording
MAX_LEVEL_GAIN = 1000.0  # 60 dB: normalize_peak lifts no quieter input further
MIN_RATE, MAX_RATE = 1000, 768000  # resampling from outside this range would blow the length up or down


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple MPS, then the CPU; an unavailable device is an error."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but PyTorch sees no CUDA GPU")
    if name == "mps" and not _mps_available():
        raise ValueError("device 'mps' requested but Apple MPS is not available")
    return torch.device(name)


def default_checkpoint() -> Path:
    """The shipped default model's file."""
    return built_in_path("default")


def _check_bitrate(bitrate: object) -> None:
    """Refuses a bitrate that is not a positive number of kbps (None, unknown, is fine)."""
    if bitrate is not None and (isinstance(bitrate, bool) or not isinstance(bitrate, (int, float, np.number))
                                or not bitrate > 0):
        raise ValueError(f"bitrate must be a positive number of kbps or None, got {bitrate!r}")


def dark_source_message(limit_hz: float, rule_hz: float) -> str:
    """What `apollo restore` and `apollo web` say of a file the dark-source rule takes for dark
    (Restorer.dark_source gives the two frequencies)."""
    return (f"its loudest frames end at {limit_hz / 1000:.1f} kHz, under {rule_hz / 1000:.1f} kHz for its "
            "bitrate: dark before it was coded, so nothing is invented above its band limit")


class FileBitrate(NamedTuple):
    """What a told model is told of an MP3 file (Restorer.file_bitrate)."""

    bitrate: float | None  # kbps: the frame headers' mean; None: not an MP3 (unknown)
    source_limit: torch.Tensor | None  # the loudest frames' limit as the dark-source rule reads it
    dark_source_hz: float | None  # the rule's frequency from the encoder's own lowpass; None: the model's


class Restorer:
    """Restores MP3-damaged audio of any length, rate and channel count.

    segment: seconds kept per chunk (0 = whole input at once); overlap: crossfade seconds
    between chunks; context: discarded seconds computed around each chunk (None = enough for
    the model's receptive field, at least 0.6 s); clip: what to do with samples beyond +-1
    when writing files ("rescale" the whole file, "clamp", or "none"); precision: "fp32"
    (exact), "bf16" (autocast; GPUs and AVX-512 BF16 CPUs, about 1.4x faster there) or "int8"
    (dynamic int8 linear layers, CPU only, about 1.5x faster); both reduced precisions cost a
    little quality (docs/performance.md); compile: torch.compile the band-sequence blocks
    (GPU, or bf16 on a CPU; on a CPU each new chunk length first costs ~40 s of compiling);
    threads: CPU threads for the model, or None to use the cores other programs leave idle,
    re-checked before every chunk (apollo.threads).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        segment: float = 10.0,
        overlap: float = 0.05,
        context: float | None = None,
        batch_size: int = 1,
        clip: str = "rescale",
        precision: str = "fp32",
        compile: bool = False,
        threads: int | None = None,
    ) -> None:
        if clip not in CLIP_MODES:
            raise ValueError(f"clip must be one of {CLIP_MODES}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if threads is not None and threads < 1:
            raise ValueError("threads must be at least 1")
        self.device = resolve_device(device)
        if threads is not None:
            torch.set_num_threads(threads)
        self.cpu_share = CpuShare() if threads is None and self.device.type == "cpu" else None
        check_precision(precision, self.device)  # before the (slow) load
        if compile:
            check_compile(precision, self.device)
        model = load_model(checkpoint if checkpoint is not None else default_checkpoint(), self.device)
        if compile:
            model = compile_blocks(model)
        self.model = with_precision(model, precision, self.device)
        self.precision = precision
        self.plan = ChunkPlan.from_seconds(self.model.config, segment, overlap, context)
        self.batch_size = batch_size
        self.clip = clip

    @property
    def sample_rate(self) -> int:
        return self.model.config.sample_rate

    @property
    def told_bitrate(self) -> bool:
        """Whether the model takes its input's MP3 bitrate (ApolloConfig.bitrate_classes)."""
        return bool(getattr(getattr(self.model, "config", None), "bitrate_classes", ()))

    # -- arrays -------------------------------------------------------------------------------

    def restore(self, waveform: Any, sample_rate: int, layout: str = "channels_first",
                bitrate: float | None = None, out_rate: int | str | None = None) -> tuple[Any, int]:
        """(channels, samples) or (samples,) numpy/torch array -> (restored, its rate).

        layout="channels_last" takes (samples, channels), the shape soundfile returns, and
        gives the result in that layout too. Returns the same kind of array, float32; no clipping
        is applied to arrays. Integer arrays are read as PCM (int16 as from scipy.io.wavfile:
        full scale 32768 -> 1.0; unsigned ones centred on their midpoint, as 8-bit WAV is).
        bitrate: the CBR MP3 bitrate (kbps) the array was decoded from, for models told it
        (ApolloConfig.bitrate_classes; others ignore it); None: unknown. Read as a CBR bitrate: for
        a VBR MP3, restore_file reads it right (file_bitrate); an array decoded from one is best untold.
        out_rate: the result's sample rate, as restore_file's (None or "model": the model's).
        """
        _check_bitrate(bitrate)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        rate = float(sample_rate) if isinstance(sample_rate, (int, float, np.number)) else float("nan")
        if isinstance(sample_rate, bool) or not rate.is_integer() or not MIN_RATE <= rate <= MAX_RATE:
            raise ValueError(f"sample_rate must be a whole number of Hz from {MIN_RATE} to {MAX_RATE}, "
                             f"got {sample_rate!r}")
        is_torch = isinstance(waveform, torch.Tensor)
        wav = waveform.detach().cpu().numpy() if is_torch else np.asarray(waveform)
        mono = wav.ndim == 1
        wav = wav[None] if mono else wav
        if wav.ndim != 2 or wav.shape[1] == 0:
            raise ValueError(f"expected (channels, samples) or (samples,) with samples > 0, got {wav.shape}")
        if layout == "channels_last" and not mono:
            wav = wav.T
        if wav.shape[0] > MAX_CHANNELS or wav.shape[0] > wav.shape[1]:
            raise ValueError(f"an array of shape {tuple(waveform.shape)} would be {wav.shape[0]} channels of "
                             f"{wav.shape[1]} samples; if it is (samples, channels), as soundfile returns, pass "
                             "layout='channels_last' (or its transpose)")
        if np.issubdtype(wav.dtype, np.integer):
            wav = audio.pcm_to_float(wav)
        elif not np.issubdtype(wav.dtype, np.floating):
            raise ValueError(f"expected a numeric array, got dtype {wav.dtype}")
        if not np.isfinite(wav).all():
            raise ValueError("waveform contains NaN or infinite values")
        result_rate = output_rate(out_rate, int(rate), self.sample_rate)
        wav = audio.resample(wav.astype(np.float32), int(rate), self.sample_rate)
        gain, limit, source_limit = self.whole_input(lambda: [wav], wav.shape[0], int(rate))
        out = np.concatenate(list(self.restore_blocks(iter([wav]), wav.shape[0], band_limit=limit, gain=gain,
                                                      bitrate=bitrate, source_limit=source_limit)), axis=1)
        out = audio.resample(out, self.sample_rate, result_rate)
        out = out[0] if mono else (out.T.copy() if layout == "channels_last" else out)
        return (torch.from_numpy(out) if is_torch else out), result_rate

    def whole_input(self, blocks: Callable[[], Any], channels: int,
                    input_rate: int | None = None) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
        """(level gain, band limit, source limit): what every chunk of one input must share, read from all of it.

        `blocks()` yields the input as (channels, n) blocks at the model's rate and is called once
        per pass needed: models with normalize_peak get the gain that brings the input's peak to
        1 (level_gain; else 1.0), models that use the input's band limit get it, measured at that
        level (else None), and models with a dark-source rule the limit of its loudest frames
        (SOURCE_QUANTILE; else None), read as the rule reads an input sampled at `input_rate` (the
        rate it had before it was resampled to the model's; None: the model's), band_limit.at_own_rate.
        Given to every chunk, they make chunked output equal one-pass output.
        """
        config = getattr(self.model, "config", None)  # any callable generator may stand in
        gain = level_gain(max((float(np.abs(b).max(initial=0.0)) for b in blocks()), default=0.0)) \
            if getattr(config, "normalize_peak", False) else 1.0
        make = getattr(self.model, "file_band_levels", None)
        levels = make(channels) if make is not None else None
        if levels is None:
            return gain, None, None
        for block in at_level(blocks(), gain):
            levels.add(block)
        source = None
        if getattr(config, "reads_source_limit", False):
            source = at_own_rate(levels.limit(SOURCE_QUANTILE), input_rate or self.sample_rate, self.sample_rate,
                                 config.window)
        return gain, levels.limit(), source

    def restore_blocks(self, blocks: Any, channels: int, on_progress: Callable[[int], None] | None = None,
                       band_limit: torch.Tensor | None = None, gain: float = 1.0,
                       bitrate: float | None = None, source_limit: torch.Tensor | None = None,
                       dark_source_hz: float | None = None) -> Any:
        """Streams (channels, n) blocks at the model's rate through the chunked model.

        band_limit, source_limit and gain: the whole input's (whole_input); without them each chunk
        is restored at its own level and, for models that use the input's band limit, with its own.
        bitrate: the input's MP3 bitrate in kbps, given to models told it (else unknown);
        dark_source_hz: the dark-source rule's frequency for this input (file_bitrate; None: the model's).
        """
        restored = restore_stream(self.model, at_level(blocks, gain), self.plan, channels, self.device,
                                  self.batch_size, on_progress, band_limit,
                                  self.cpu_share.update if self.cpu_share else None,
                                  bitrate if self.told_bitrate else None, source_limit, dark_source_hz)
        if gain == 1.0:
            return restored
        return (block / np.float32(gain) for block in restored)

    # -- files --------------------------------------------------------------------------------

    def file_bitrate(self, info: audio.AudioInfo, source_limit: torch.Tensor | None) -> FileBitrate:
        """What a told model restoring the file `info`, whose loudest frames end at source_limit
        (whole_input), is told.

        An MP3 is told its frame headers' mean bitrate (audio.mp3_bitrate); anything else is unknown
        (None). The dark-source rule's frequencies are DARK_EDGE_SHARE of a CBR encoder's edge at each
        bitrate. Where the MP3's LAME tag states the encoder's lowpass (audio.mp3_lame_tag: LAME's CBR,
        ABR and VBR -V 0-6), that share of it is the rule's frequency for this file instead. A VBR MP3
        without one is never taken for dark: its -V quality, not its mean bitrate, sets where it ends
        (LAME -V 9 cuts near 7.5 kHz and averages 52-87 kbps, read as 48-96 kbps, whose CBR edges are
        7.8-15.4 kHz), and read as CBR 19 of 20 -V 9 validation tracks were taken for dark
        (docs/default-model.md, "VBR MP3s", "The encoder's own lowpass").
        """
        frames = audio.mp3_frame_bitrates(info)
        if not frames:
            return FileBitrate(None, source_limit, None)
        bitrate = sum(frames) / len(frames)
        if source_limit is None:
            return FileBitrate(bitrate, None, None)
        tag = audio.mp3_lame_tag(info.path)
        if tag is not None and tag.lowpass_hz is not None:
            return FileBitrate(bitrate, source_limit, DARK_EDGE_SHARE * tag.lowpass_hz)
        if len(set(frames)) == 1:
            return FileBitrate(bitrate, source_limit, None)
        return FileBitrate(bitrate, never_dark(source_limit, self.model.config.window), None)

    def dark_source(self, bitrate: float | None, source_limit: torch.Tensor | None,
                    dark_source_hz: float | None = None) -> tuple[float, float] | None:
        """(where its loudest frames end, the rule's frequency), both in Hz, where the model's dark-source
        rule takes an input told `bitrate` for dark at the source (Apollo.dark_rows); else None."""
        model = getattr(self.model, "model", self.model)  # the generator under an Autocast wrapper
        config = getattr(model, "config", None)
        if bitrate is None or source_limit is None or not getattr(config, "dark_source_hz_told", ()):
            return None
        rows = model.bitrate_index(torch.tensor([float(bitrate)]), 1)
        own = None if dark_source_hz is None else torch.tensor([float(dark_source_hz)])
        if not bool(model.dark_rows(rows, source_limit, own)[0]):
            return None
        rule = dark_source_hz if dark_source_hz is not None else config.dark_source_hz_told[int(rows[0]) - 1]
        return float(source_limit[0]) * config.sample_rate / config.window, float(rule)

    def restore_file(
        self,
        src: str | os.PathLike[str],
        dst: str | os.PathLike[str],
        fmt: str | None = None,
        bits: str = "24",
        overwrite: bool = False,
        on_progress: Callable[[float], None] | None = None,
        info: audio.AudioInfo | None = None,
        on_rescale: Callable[[float], None] | None = None,
        bitrate: float | None = None,
        on_dark: Callable[[float, float], None] | None = None,
        out_rate: int | str | None = None,
    ) -> Path:
        """Restores src into dst (FLAC or WAV), atomically, tags and cover art copied (apollo.tags).
        An MP3's bitrate, read from its frame headers (audio.mp3_bitrate), is given to models told
        it; bitrate (kbps) overrides that, e.g. for a WAV decoded from an MP3. out_rate is the
        output's sample rate: None or "model" the model's (it restores at that rate), "input" src's
        own, or a rate in Hz; other rates are resampled from the model's output (soxr, VHQ).

        on_progress(seconds) reports seconds of input audio finished; info is src's
        audio.probe() result when the caller already has it; on_rescale(peak) is called when
        clip="rescale" scales the file down by 1/peak; on_dark(limit_hz, rule_hz) when the dark-source
        rule takes the file for dark (dark_source). Raises audio.AudioError with a one-line message for
        unusable input or output.
        """
        _check_bitrate(bitrate)
        src, dst = Path(src), Path(dst)
        fmt = (fmt or dst.suffix.lstrip(".") or "flac").lower()
        if fmt not in ("flac", "wav"):
            raise audio.AudioError(f"{dst}: output format must be flac or wav")
        subtype = audio.subtype_for(fmt, bits)
        audio.check_destination(src, dst, overwrite)
        info = info or audio.probe(src)
        rate = output_rate(out_rate, info.sample_rate, self.sample_rate)
        _check_writable(dst.parent)

        def decoded() -> Any:
            return audio.resample_blocks(audio.read_blocks(info), info.sample_rate, self.sample_rate, info.channels)

        # first decoding passes for the whole file's level and band limit, where the model needs them
        gain, limit, source_limit = self.whole_input(decoded, info.channels, info.sample_rate)
        # decoding and resampling run one thread ahead of the model
        blocks = prefetch(decoded())
        seconds_per_sample = 1.0 / self.sample_rate
        progress = (lambda n: on_progress(n * seconds_per_sample)) if on_progress else None
        told = dark_source_hz = None
        if self.told_bitrate:
            told, source_limit, dark_source_hz = (bitrate, source_limit, None) if bitrate is not None else \
                self.file_bitrate(info, source_limit)
            dark = self.dark_source(told, source_limit, dark_source_hz) if on_dark else None
            if dark:
                on_dark(*dark)
        restored = self.restore_blocks(blocks, info.channels, progress, band_limit=limit, gain=gain,
                                       source_limit=source_limit, bitrate=told, dark_source_hz=dark_source_hz)

        import soundfile as sf

        from .tags import read_tags, write_tags

        source_tags = read_tags(src)

        def write(tmp: str) -> None:
            # pass 1: float32 scratch file and the peak; pass 2: final format with clipping
            scratch = Path(tmp).with_name(Path(tmp).name + ".f32.wav")
            peak = 0.0
            try:
                with sf.SoundFile(str(scratch), "w", rate, info.channels, "FLOAT", format="WAV") as out:
                    for block in audio.resample_blocks(restored, self.sample_rate, rate, info.channels):
                        peak = max(peak, float(np.abs(block).max(initial=0.0)))
                        out.write(block.T)
                scale = 1.0 / peak if self.clip == "rescale" and peak > 1.0 else 1.0
                if scale != 1.0 and on_rescale:
                    on_rescale(peak)
                with sf.SoundFile(str(scratch)) as inp, \
                        sf.SoundFile(tmp, "w", rate, info.channels, subtype, format=fmt.upper()) as out:
                    for block in inp.blocks(audio.BLOCK, dtype="float32", always_2d=True):
                        block = block * scale if scale != 1.0 else block
                        out.write(np.clip(block, -1.0, 1.0) if self.clip == "clamp" else block)
            finally:
                scratch.unlink(missing_ok=True)
            write_tags(tmp, source_tags, fmt)  # before the rename: the output appears complete

        try:
            atomic_write(dst, write, suffix=f".{fmt}")
        except OSError as err:
            raise audio.AudioError(f"{dst}: cannot write ({err.strerror or err})") from err
        return dst


OUTPUT_RATES = (8000, 384000)  # Hz: what restore_file and --out-rate accept
NAMED_RATES = ("model", "input")  # the out_rate names: the model's rate, the input's


def check_output_hz(hz: int) -> int:
    """hz if an output may be written at that rate (OUTPUT_RATES), else ValueError."""
    if not OUTPUT_RATES[0] <= hz <= OUTPUT_RATES[1]:
        raise ValueError(f"{hz} Hz: output rates are {OUTPUT_RATES[0]}-{OUTPUT_RATES[1]}")
    return int(hz)


def output_rate(out_rate: int | str | None, input_rate: int, model_rate: int) -> int:
    """The sample rate a restored file is written at (restore_file's out_rate)."""
    if out_rate is None or out_rate == "model":
        return model_rate
    if out_rate == "input":
        return input_rate
    if isinstance(out_rate, str):
        raise ValueError(f"output rate {out_rate!r}: 'model', 'input' or {OUTPUT_RATES[0]}-{OUTPUT_RATES[1]} Hz")
    return check_output_hz(out_rate)


def level_gain(peak: float) -> float:
    """The gain that brings an input of this peak to peak 1, the training level, at most
    MAX_LEVEL_GAIN (so a near-silent file's noise is not blown up); 1.0 for silence."""
    return min(1.0 / peak, MAX_LEVEL_GAIN) if peak > 0 else 1.0


def at_level(blocks: Any, gain: float) -> Any:
    """The blocks scaled by `gain` in float32 (the blocks themselves when it is 1): one rule for
    what the model and the band-limit pass both see."""
    if gain == 1.0:
        return blocks
    factor = np.float32(gain)
    return (np.asarray(block, dtype=np.float32) * factor for block in blocks)


def _check_writable(folder: Path) -> None:
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise audio.AudioError(f"{folder}: output folder is not writable")
