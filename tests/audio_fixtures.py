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
