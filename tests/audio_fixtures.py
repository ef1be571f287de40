"""Small audio files generated on the fly for tests (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def tone(seconds: float, rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """(samples, channels) float32 test music: a few partials plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    cols = [0.2 * np.sin(2 * np.pi * (220 * (c + 1)) * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
            + 0.01 * rng.standard_normal(t.size) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def write(path: Path, data: np.ndarray, rate: int = 44100, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mp3":
        kwargs.setdefault("format", "MP3")
        kwargs.setdefault("subtype", "MPEG_LAYER_III")
    sf.write(str(path), data, rate, **kwargs)
    return path


def write_aac(path: Path, data: np.ndarray, rate: int = 44100, container_format: str = "mp4") -> Path:
    """(samples, 2) audio as AAC through PyAV, in 1024-sample frames: "mp4" (.m4a) or raw "adts"."""
    import av

    planar = np.ascontiguousarray(data.T)
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for i in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, i:i + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


LAME_METHODS = {"cbr": 1, "abr": 2, "vbr": 4, "unknown": 0}


def with_lame_tag(data: bytes, method: str, lowpass_hz: int, checksum: bool = True) -> bytes:
    """An MPEG-1 Layer III stream (as lameenc writes it: no Xing frame) with a Xing/Info frame before
    it whose LAME tag states `method` and `lowpass_hz`, as the LAME program writes one (hydrogenaud.io
    "LAME tag" spec: frame and byte counts, then the 36-byte extension, its CRC-16 last); checksum
    False spoils that CRC."""
    from apollo.audio import _crc16, _first_frame, _frame_chain

    first = _first_frame(data)
    frames = list(_frame_chain(data, first, len(data)))
    header = frames[0][1] & ~(0xF << 12) & ~(1 << 9) | (9 << 12)  # 128 kbps, unpadded: room for the tag
    frame = bytearray(144 * 128000 // 44100)
    frame[:4] = header.to_bytes(4, "big")
    pos = 4 + (17 if (header >> 6) & 3 == 3 else 32)  # past the (empty) side info
    frame[pos:pos + 4] = b"Xing" if method in ("vbr", "abr") else b"Info"
    frame[pos + 4:pos + 8] = (1 | 2).to_bytes(4, "big")  # frame count and byte count follow
    frame[pos + 8:pos + 12] = len(frames).to_bytes(4, "big")
    frame[pos + 12:pos + 16] = (len(frame) + len(data) - first).to_bytes(4, "big")
    tag = pos + 16
    frame[tag:tag + 9] = b"LAME3.100"
    frame[tag + 9] = LAME_METHODS[method]
    frame[tag + 10] = lowpass_hz // 100
    crc = _crc16(bytes(frame[:tag + 34])) ^ (0 if checksum else 1)
    frame[tag + 34:tag + 36] = crc.to_bytes(2, "big")
    return bytes(frame) + data[first:]
