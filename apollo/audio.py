"""Reading, resampling and writing audio as streams of blocks, so memory stays flat in length.

Blocks are float32 numpy arrays shaped (channels, samples). MP3, FLAC, WAV, OGG/Opus and AIFF
are read with libsndfile (soundfile); AAC/M4A and anything else with FFmpeg (PyAV).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

AUDIO_EXTENSIONS = {".mp3", ".flac", ".wav", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".aif", ".aiff",
                    ".wma", ".wv", ".caf", ".w64"}
FFMPEG_FIRST = {".m4a", ".aac", ".mp4", ".wma"}
BLOCK = 1 << 16  # samples per block read


class AudioError(ValueError):
    """An input or output file cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int  # declared length in samples (may be an estimate for compressed files)
    backend: str  # "soundfile" or "ffmpeg"
    container: str = ""  # libsndfile's format ("MPEG", "WAV", ...) or FFmpeg's

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def is_mp3(self) -> bool:
        """Whether the container is MP3 (libsndfile's "MPEG", FFmpeg's "mp3")."""
        return self.container.upper() in ("MPEG", "MP3")


# File descriptor 2 belongs to the whole process: while the decoding thread points it at /dev/null,
# a message another thread prints would vanish. This one lock orders the two (print_stderr).
STDERR_LOCK = threading.RLock()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Silences C libraries (mpg123, FFmpeg) that print notes straight to file descriptor 2."""
    with STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:
            yield
            return
        try:
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
                yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def print_stderr(message: str) -> None:
    """Prints one line to stderr, never while a decoder has silenced it (STDERR_LOCK)."""
    with STDERR_LOCK:
        print(message, file=sys.stderr, flush=True)


def probe(path: str | os.PathLike[str]) -> AudioInfo:
    """Opens a file just enough to know its rate, channels and length; AudioError if unusable."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():
        raise AudioError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise AudioError(f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    suffix = path.suffix.lower()
    ffmpeg_first = suffix in FFMPEG_FIRST or (suffix == ".mp3" and not mp3_has_length_header(path))
    backends = ("ffmpeg", "soundfile") if ffmpeg_first else ("soundfile", "ffmpeg")
    for backend in backends:
        try:
            info = _probe_soundfile(path) if backend == "soundfile" else _probe_ffmpeg(path)
        except AudioError:  # this library cannot read it: try the next one
            continue
        if info.sample_rate <= 0 or info.channels <= 0:
            continue
        return info
    raise AudioError(f"{path}: not a recognised audio file")


def _probe_soundfile(path: Path) -> AudioInfo:
    import soundfile as sf

    try:
        with quiet_native_stderr():
            info = sf.info(str(path))
    except sf.LibsndfileError as err:  # libsndfile does not know the format
        raise AudioError(f"{path}: {err}") from err
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), "soundfile", info.format)


def _probe_ffmpeg(path: Path) -> AudioInfo:
    import av

    av.logging.set_level(av.logging.PANIC)
    try:
        return _ffmpeg_info(path)
    except av.error.FFmpegError as err:  # FFmpeg does not know the format, or the file is damaged
        raise AudioError(f"{path}: {err}") from err


def _ffmpeg_info(path: Path) -> AudioInfo:
    import av

    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise AudioError(f"{path}: no audio stream")
        stream = container.streams.audio[0]
        rate = int(stream.rate or stream.codec_context.sample_rate)
        channels = int(stream.codec_context.channels)
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / 1_000_000
        else:
            seconds = 0.0
        container_name = container.format.name
    return AudioInfo(path, rate, channels, int(round(seconds * rate)), "ffmpeg", container_name)


def read_blocks(info: AudioInfo, block: int = BLOCK) -> Iterator[np.ndarray]:
    """Yields (channels, n) float32 blocks; AudioError on truncation, NaN/inf or no samples."""
    reader = _soundfile_blocks(info, block) if info.backend == "soundfile" else _ffmpeg_blocks(info)
    total = 0
    for data in reader:
        if not np.isfinite(data).all():
            raise AudioError(f"{info.path}: contains NaN or infinite samples")
        total += data.shape[1]
        yield data
    if total == 0:
        raise AudioError(f"{info.path}: contains no audio samples")
    if info.is_mp3:
        # decoders play a cut MP3 without complaint: the last frame must be whole, and when a
        # Xing/Info/VBRI header declares the length, all of it must be there
        short = info.backend == "soundfile" and info.frames - total > 1152
        if short or mp3_is_truncated(info.path):
            raise AudioError(f"{info.path}: truncated MP3 (decoded {total} of about {info.frames} samples)")


def read(path: str | os.PathLike[str]) -> tuple[np.ndarray, AudioInfo]:
    """A whole file as one (channels, samples) float32 array, with the same checks as read_blocks."""
    info = probe(path)
    return np.concatenate(list(read_blocks(info)), axis=1), info


def _soundfile_blocks(info: AudioInfo, block: int) -> Iterator[np.ndarray]:
    import soundfile as sf

    try:
        with quiet_native_stderr():
            handle = sf.SoundFile(str(info.path))
        with handle:
            while True:
                with quiet_native_stderr():
                    data = handle.read(block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                yield np.ascontiguousarray(data.T)
    except sf.LibsndfileError as err:
        raise AudioError(f"{info.path}: cannot decode ({err})") from err


# An AAC-LC encoder primes its stream with one frame (1024 samples) that a raw ADTS stream does
# not declare; MP4 declares its priming (edit list, which FFmpeg applies) and its true length.
ADTS_AAC_LC_PRIMING = 1024


def _aligned_span(info: AudioInfo, stream: object) -> tuple[int, int | None]:
    """(samples to drop at the start, total to keep or None) so output lines up with the source."""
    codec = stream.codec_context
    if info.container.startswith("mov") and info.frames > 0:
        return 0, info.frames  # MP4/M4A: the declared duration, without the last frame's padding
    if info.container == "aac" and codec.name == "aac" and codec.profile == "LC":
        return ADTS_AAC_LC_PRIMING, None
    return 0, None


def _ffmpeg_blocks(info: AudioInfo) -> Iterator[np.ndarray]:
    import av

    av.logging.set_level(av.logging.PANIC)  # FFmpeg's notes would break the one-line errors
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.audio[0]
            skip, keep = _aligned_span(info, stream)
            resampler = av.AudioResampler(format="fltp", layout=stream.codec_context.layout, rate=info.sample_rate)

            def frames() -> Iterator[np.ndarray]:
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        for out in resampler.resample(frame):
                            yield out.to_ndarray().astype(np.float32, copy=False)
                for out in resampler.resample(None):
                    yield out.to_ndarray().astype(np.float32, copy=False)

            position = 0  # decoded samples so far
            for data in frames():
                start, end = position, position + data.shape[1]
                position = end
                lo = max(skip - start, 0)
                hi = data.shape[1] if keep is None else min(data.shape[1], skip + keep - start)
                if hi > lo:
                    yield data[:, lo:hi]
                if keep is not None and position >= skip + keep:
                    break
    except av.error.FFmpegError as err:
        raise AudioError(f"{info.path}: cannot decode ({err})") from err


# --- MPEG audio frame walk -------------------------------------------------------------------

_BITRATES = {  # (mpeg1?, layer) -> kbps by index
    (True, 3): [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320],
    (False, 3): [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
    (True, 2): [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384],
    (True, 1): [0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448],
    (False, 1): [0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256],
}
_RATES = {3: [44100, 48000, 32000], 2: [22050, 24000, 16000], 0: [11025, 12000, 8000]}


def _kbps(header: int) -> int:
    """The bitrate a (valid) frame header states, in kbps."""
    mpeg1, layer = (header >> 19) & 3 == 3, 4 - ((header >> 17) & 3)
    table = _BITRATES.get((mpeg1, layer)) or _BITRATES[(False, 3)]
    return table[(header >> 12) & 15]


def _frame_length(header: int) -> int | None:
    if header >> 21 != 0x7FF:
        return None
    version, layer_bits = (header >> 19) & 3, (header >> 17) & 3
    bitrate_index, rate_index, padding = (header >> 12) & 15, (header >> 10) & 3, (header >> 9) & 1
    if version == 1 or layer_bits == 0 or bitrate_index in (0, 15) or rate_index == 3:
        return None
    layer = 4 - layer_bits
    mpeg1 = version == 3
    bitrate = _kbps(header) * 1000
    rate = _RATES[version][rate_index]
    if layer == 1:
        return (12 * bitrate // rate + padding) * 4
    factor = 144 if mpeg1 or layer == 2 else 72
    return factor * bitrate // rate + padding


def _frame_chain(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
    """(offset, header, length) of each frame from `pos` on, up to the first bytes before `end` that are
    not a frame header (a frame may run past `end`)."""
    while pos + 4 <= end:
        header = int.from_bytes(data[pos:pos + 4], "big")
        length = _frame_length(header)
        if length is None:
            return
        yield pos, header, length
        pos += length


def _is_length_header(data: bytes, start: int) -> bool:
    """Whether the frame at `start` is a Xing/Info/VBRI header frame (it states the stream's length
    and holds no audio)."""
    head = data[start:start + 200]
    return b"Xing" in head or b"Info" in head or b"VBRI" in head


def _id3v2_length(data: bytes) -> int:
    """Bytes taken by the ID3v2 tag that `data` starts with (header, body, footer), or 0: none."""
    if data[:3] != b"ID3" or len(data) < 10:
        return 0
    size = (data[6] << 21) | (data[7] << 14) | (data[8] << 7) | data[9]
    return 10 + size + (10 if data[5] & 0x10 else 0)


def _first_frame(data: bytes) -> int | None:
    """Offset of the first MPEG audio frame (after any ID3v2 tag) that a second frame follows."""
    pos = _id3v2_length(data)
    while pos + 4 <= len(data):
        length = _frame_length(int.from_bytes(data[pos:pos + 4], "big"))
        if length and pos + length + 4 <= len(data) and \
                _frame_length(int.from_bytes(data[pos + length:pos + length + 4], "big")):
            return pos
        pos += 1
    return None


# LAME writes a 36-byte extension after the Xing/Info fields: its encoder, method and lowpass
# (hydrogenaud.io "LAME tag" spec). VBR methods by the tag's low nibble; 0 is unknown (FFmpeg's
# muxer writes 0 and no lowpass).
_LAME_METHODS = {1: "cbr", 8: "cbr", 2: "abr", 9: "abr", 3: "vbr", 4: "vbr", 5: "vbr", 6: "vbr"}


@dataclass(frozen=True)
class LameTag:
    """What an MP3's LAME tag states about how it was encoded."""

    encoder: str  # "LAME3.100", "Lavf", ...
    method: str  # "cbr", "abr", "vbr" or "unknown"
    lowpass_hz: int | None  # the encoder's lowpass (to 100 Hz); None where the tag leaves it unset


def _crc16(data: bytes) -> int:
    """CRC-16/ARC (reflected 0x8005, initial 0), the LAME tag's checksum."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _lame_tag(data: bytes, start: int) -> LameTag | None:
    """The LAME tag of the Xing/Info frame at `start`, or None where there is none or its checksum
    (of every byte of the frame before it) fails."""
    header = int.from_bytes(data[start:start + 4], "big")
    mpeg1, mono = (header >> 19) & 3 == 3, (header >> 6) & 3 == 3
    pos = start + 4 + ((17 if mono else 32) if mpeg1 else (9 if mono else 17))  # past the side info
    if data[pos:pos + 4] not in (b"Xing", b"Info"):
        return None
    flags = int.from_bytes(data[pos + 4:pos + 8], "big")
    pos += 8 + sum(size for bit, size in ((1, 4), (2, 4), (4, 100), (8, 4)) if flags & bit)
    tag = data[pos:pos + 36]
    if len(tag) < 36 or _crc16(data[start:pos + 34]) != int.from_bytes(tag[34:36], "big"):
        return None
    encoder = tag[:9].split(b"\0")[0].decode("latin-1").strip()
    return LameTag(encoder, _LAME_METHODS.get(tag[9] & 15, "unknown"), tag[10] * 100 or None)


def _head(path: str | os.PathLike[str]) -> tuple[bytes, int | None]:
    """The first MiB of a file after its ID3v2 tags, and the offset of its first MPEG audio frame in
    it (None: none). Tags are skipped, not read: cover art makes many over a MiB."""
    with open(path, "rb") as handle:
        start = 0
        while skip := _id3v2_length(handle.read(10)):
            start += skip
            handle.seek(start)
        handle.seek(start)
        data = handle.read(1 << 20)
    return data, _first_frame(data)


def mp3_lame_tag(path: str | os.PathLike[str]) -> LameTag | None:
    """The LAME tag in an MP3's first frame (LAME and FFmpeg write one), or None: no Xing/Info frame
    (LAME writes none in CBR at 32, 48 or 56 kbps, whose frames are too short), or a checksum that fails."""
    data, start = _head(path)
    return None if start is None else _lame_tag(data, start)


def mp3_has_length_header(path: str | os.PathLike[str]) -> bool:
    """True when the first frame is a Xing/Info/VBRI header that states the stream's length.

    Without one, libsndfile estimates the length from the first frame's bitrate and, for VBR
    streams, stops reading there: such files are decoded with FFmpeg instead.
    """
    data, start = _head(path)
    return start is not None and _is_length_header(data, start)


def mp3_is_truncated(path: str | os.PathLike[str]) -> bool:
    """True when the MPEG frame chain runs past the end of the file (a cut download or copy)."""
    data = Path(path).read_bytes()
    end = len(data)
    if end >= 128 and data[end - 128:end - 125] == b"TAG":
        end -= 128
    pos = _first_frame(data[:end])
    if pos is None:
        return False
    after = pos  # the end of the last whole frame
    for start, _, length in _frame_chain(data, pos, end):
        if start + length > end:
            return True
        after = start + length
    # the chain stopped at a trailing tag or junk (False), or at fewer than 4 bytes: a cut header
    return after < end < after + 4


def mp3_frame_bitrates(info: AudioInfo, limit: int = 64 << 20) -> list[int] | None:
    """The bitrates (kbps) in an MP3's frame headers, in order, or None for anything that is not
    MPEG-1/2 Layer III audio. The frames of the first `limit` bytes count; a Xing/Info/VBRI header
    frame does not (it holds no audio)."""
    if not info.is_mp3:
        return None
    with open(info.path, "rb") as handle:
        data = handle.read(limit)
    first = _first_frame(data)
    if first is None:
        return None
    kbps = []
    for pos, header, _ in _frame_chain(data, first, len(data)):
        if (header >> 17) & 3 != 1:  # Layer I or II: not what the models were trained on
            return None
        if pos != first or not _is_length_header(data, first):
            kbps.append(_kbps(header))
    return kbps or None


def mp3_bitrate(info: AudioInfo, limit: int = 64 << 20) -> float | None:
    """An MP3's nominal bitrate in kbps: the mean of its frame headers' bitrates (CBR: the bitrate;
    VBR: the average, whose frames differ), or None for anything that is not MPEG-1/2 Layer III audio."""
    kbps = mp3_frame_bitrates(info, limit)
    return sum(kbps) / len(kbps) if kbps else None


# --- resampling and writing --------------------------------------------------------------------

def pcm_to_float(x: np.ndarray) -> np.ndarray:
    """Integer PCM samples -> float32 at full scale 1.0: signed ones divided by 2**(bits-1), unsigned
    ones (8-bit WAV) centred on their midpoint first."""
    bits = 8 * x.dtype.itemsize
    scale = np.float32(2.0 ** (bits - 1))
    if np.issubdtype(x.dtype, np.unsignedinteger):
        return ((x.astype(np.float64) - 2.0 ** (bits - 1)) / scale).astype(np.float32)
    return (x.astype(np.float64) / scale).astype(np.float32)


def fit_length(x: np.ndarray, length: int) -> np.ndarray:
    """Cuts or zero-pads the last axis of x to `length` samples."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1])])


def check_destination(src: Path, dst: Path, overwrite: bool) -> None:
    """An output may replace an existing file only with overwrite, and never its own input."""
    if dst.exists() and not overwrite:
        raise AudioError(f"{dst}: exists (use --overwrite to replace it)")
    if dst.exists() and src.resolve() == dst.resolve():
        raise AudioError(f"{dst}: refusing to overwrite the input file")


def resample_blocks(blocks: Iterator[np.ndarray], rate_in: int, rate_out: int, channels: int) -> Iterator[np.ndarray]:
    """Streams blocks through the soxr very-high-quality resampler; output length is exact."""
    if rate_in == rate_out:
        yield from blocks
        return
    import soxr

    stream = soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="VHQ")
    seen = emitted = 0
    for data in blocks:
        seen += data.shape[1]
        out = stream.resample_chunk(np.ascontiguousarray(data.T))
        if len(out):
            emitted += len(out)
            yield np.ascontiguousarray(out.T)
    tail = stream.resample_chunk(np.zeros((0, channels), np.float32), last=True)
    target = int(round(seen * rate_out / rate_in))
    missing = target - emitted
    if missing > 0:
        yield fit_length(np.ascontiguousarray(tail.T), missing)
    # soxr never emits more than the exact length before `last`; nothing to trim otherwise


def resample(wav: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resamples a whole (channels, samples) array."""
    if rate_in == rate_out:
        return wav
    parts = list(resample_blocks(iter([wav.astype(np.float32)]), rate_in, rate_out, wav.shape[0]))
    return np.concatenate(parts, axis=1) if parts else np.zeros((wav.shape[0], 0), np.float32)


SUBTYPES = {("flac", "16"): "PCM_16", ("flac", "24"): "PCM_24", ("wav", "16"): "PCM_16",
            ("wav", "24"): "PCM_24", ("wav", "32f"): "FLOAT"}


def subtype_for(fmt: str, bits: str) -> str:
    try:
        return SUBTYPES[(fmt, bits)]
    except KeyError:
        raise AudioError(f"{fmt.upper()} cannot store {bits}-bit samples "
                         "(FLAC: 16 or 24; WAV: 16, 24 or 32f)") from None
