"""Real MP3 damage: LAME encoding, FFmpeg decoding, measured alignment to zero lag.

Traps handled here (README, "MP3 damage"): LAME picks a lower output rate at low bitrates unless it
is pinned; a raw LAME stream decodes with a delay (lameenc writes no gapless tag); 24 kbps and
other rates below 32 kbps exist only in MPEG-2, at half the sample rate.
"""

from __future__ import annotations

import functools
import io

import numpy as np

from .audio import AudioError
from .metrics import cutoff_hz

MPEG1_KBPS = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
MPEG2_KBPS = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
MPEG1_RATES = (32000, 44100, 48000)
PAPER_BITRATES = (24, 32, 48, 64, 96, 128)


def encode_rate(sample_rate: int, kbps: int | None) -> int:
    """Sample rate at which a real encoder codes this bitrate (MPEG-2 halves the rate)."""
    family = 44100 if sample_rate % 11025 == 0 else 48000 if sample_rate >= 40000 else 32000
    if sample_rate in MPEG1_RATES:
        family = sample_rate
    if kbps is None or kbps in MPEG1_KBPS:
        return family
    if kbps in MPEG2_KBPS:
        return family // 2
    raise ValueError(f"{kbps} kbps is not an MP3 bitrate (MPEG-1: {MPEG1_KBPS}; MPEG-2: {MPEG2_KBPS})")


@functools.cache
def codec_cutoff_hz(sample_rate: int, kbps: int) -> float:
    """Where this encoder's lowpass cuts stereo at this bitrate, measured (metrics.cutoff_hz) on
    three seconds of white noise coded as `mp3` codes music (24 kbps at 44.1 kHz: about 3.9 kHz;
    mono gets a higher cutoff, its one channel having all the bits)."""
    noise = np.random.default_rng(0).standard_normal((2, 3 * sample_rate)).astype(np.float32) * 0.1
    return cutoff_hz(mp3(noise, sample_rate, kbps), sample_rate)


@functools.cache
def encoder_gain(sample_rate: int, kbps: int | None = 128, vbr: int | None = None) -> float:
    """The level `mp3` gives a signal back at, measured on a 1-kHz stereo tone: LAME's CBR presets
    scale the input (0.95 up to 128 kbps, 0.97 at 192), VBR and 320 kbps do not. Dividing the
    decoded signal by it leaves the codec's damage without the encoder's level change."""
    t = np.arange(2 * sample_rate) / sample_rate
    tone = np.stack([0.5 * np.sin(2 * np.pi * 1000 * t)] * 2).astype(np.float32)
    middle = slice(sample_rate // 2, 3 * sample_rate // 2)
    coded = mp3(tone, sample_rate, kbps, vbr)
    return float(np.sqrt(np.mean(coded[:, middle] ** 2) / np.mean(tone[:, middle] ** 2)))


def encode_mp3(wav: np.ndarray, sample_rate: int, kbps: int | None = 128, vbr: int | None = None,
               quality: int = 2) -> bytes:
    """(channels <= 2, samples) float -> MP3 bytes, output rate pinned to the input rate."""
    import lameenc

    if wav.shape[0] not in (1, 2):
        raise ValueError("an MP3 stream holds one or two channels")
    if (kbps is None) == (vbr is None):
        raise ValueError("give exactly one of kbps (CBR) or vbr (LAME -V quality 0-9)")
    encoder = lameenc.Encoder()
    encoder.set_in_sample_rate(sample_rate)
    encoder.set_out_sample_rate(sample_rate)
    encoder.set_channels(wav.shape[0])
    encoder.set_quality(quality)
    if vbr is None:
        encoder.set_bit_rate(int(kbps))
    else:
        if not 0 <= vbr <= 9:
            raise ValueError("vbr quality must be 0 (best) to 9")
        encoder.set_vbr(4)  # LAME's default VBR mode (mtrh)
        encoder.set_vbr_quality(int(vbr))
    pcm = (np.clip(wav.T, -1.0, 1.0) * 32767.0).round().astype("<i2")
    return bytes(encoder.encode(pcm.tobytes()) + encoder.flush())


def decode_mp3(data: bytes, vbr: bool = True) -> tuple[np.ndarray, int]:
    """MP3 bytes -> ((channels, samples) float32, rate), every frame decoded.

    FFmpeg (PyAV) decodes when it is installed. libsndfile (mpg123) is not trusted with VBR: for
    a stream without a Xing header (lameenc writes none) it stops at a length estimated from the
    first frame and silently drops the rest. A CBR stream (vbr=False) it decodes completely, to
    within 2e-6 of FFmpeg (tested), so light installs without PyAV can still code CBR pairs.
    """
    try:
        import av  # noqa: F401
    except ImportError:
        if vbr:
            raise ImportError("decoding a VBR MP3 needs PyAV: pip install av") from None
        return _decode_libsndfile(data)
    return _decode_ffmpeg(data)


def _decode_ffmpeg(data: bytes) -> tuple[np.ndarray, int]:
    import av

    av.logging.set_level(av.logging.PANIC)
    with av.open(io.BytesIO(data), format="mp3") as container:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate)
        frames = [frame.to_ndarray() for packet in container.demux(stream) for frame in packet.decode()]
    if not frames:
        raise AudioError("the MP3 stream decoded to nothing")
    wav = np.concatenate([f if f.ndim == 2 else f[None] for f in frames], axis=1)
    return np.ascontiguousarray(wav, dtype=np.float32), rate


def _decode_libsndfile(data: bytes) -> tuple[np.ndarray, int]:
    import soundfile as sf

    wav, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    if not wav.size:
        raise AudioError("the MP3 stream decoded to nothing")
    return np.ascontiguousarray(wav.T), int(rate)


@functools.lru_cache(maxsize=64)
def codec_delay(rate: int, channels: int, kbps: int | None, vbr: int | None) -> int:
    """The encoder + decoder delay of this setting, measured once on a probe signal."""
    rng = np.random.default_rng(0)
    n = rate  # one second of band-limited clicks in noise: a sharp, unambiguous peak
    probe = 0.05 * rng.standard_normal((channels, n))
    probe[:, :: rate // 10] += 0.8
    coded, _ = decode_mp3(encode_mp3(probe.astype(np.float32), rate, kbps, vbr), vbr=vbr is not None)
    from .metrics import find_lag

    return find_lag(probe, coded, max_lag=4 * 1152)


def mp3(wav: np.ndarray, sample_rate: int, kbps: int | None = 128, vbr: int | None = None,
        quality: int = 2) -> np.ndarray:
    """Encodes with LAME and decodes (FFmpeg; libsndfile for CBR without PyAV); the result has the
    input's shape, rate and zero lag.

    wav: (samples,) or (channels, samples). More than two channels are coded in stereo pairs.
    """
    from .audio import fit_length, resample

    x = np.asarray(wav, dtype=np.float32)
    mono = x.ndim == 1
    x = x[None] if mono else x
    length = x.shape[1]
    cbr = kbps if vbr is None else None
    rate = encode_rate(sample_rate, cbr)
    y = resample(x, sample_rate, rate)
    out = []
    for start in range(0, y.shape[0], 2):
        group = y[start:start + 2]
        coded, got = decode_mp3(encode_mp3(group, rate, cbr, vbr, quality), vbr=vbr is not None)
        if got != rate:
            raise AudioError(f"the MP3 decoder returned {got} Hz for a {rate} Hz stream")
        delay = codec_delay(rate, group.shape[0], cbr, vbr)
        out.append(fit_length(coded[:, delay:], group.shape[1]))
    z = fit_length(resample(np.concatenate(out), rate, sample_rate), length)
    return z[0] if mono else z
