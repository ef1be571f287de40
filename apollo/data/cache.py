"""The training cache: tracks resampled once to int16 .npy files plus an index of active windows.

A DataLoader memory-maps these files, so no audio is decoded during training.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import fit_length, resample
from .readers import Track, read_tracks
from .silence import active_windows

INDEX = "index.json"


def load_stem(paths: list[Path], rate: int) -> np.ndarray:
    """Sums the files of one stem category -> (2, samples) float32 at `rate` (mono is doubled)."""
    import soundfile as sf

    total: np.ndarray | None = None
    for path in paths:
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
        data = resample(np.ascontiguousarray(data.T), file_rate, rate)
        data = np.repeat(data, 2, axis=0) if data.shape[0] == 1 else data[:2]
        if total is None:
            total = data
        else:
            n = max(total.shape[1], data.shape[1])
            total = fit_length(total, n) + fit_length(data, n)
    assert total is not None
    return total


def load_track(track: Track, rate: int) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """A track's stems (cut or padded to one length) and its mixture: the mixture file, else
    the sum of the stems, else None."""
    stems = {cat: load_stem(paths, rate) for cat, paths in track.stems.items()}
    length = max([s.shape[1] for s in stems.values()] + [0])
    stems = {cat: fit_length(s, length) for cat, s in stems.items()}
    mixture = load_stem([track.mixture], rate) if track.mixture else (sum(stems.values()) if stems else None)
    return stems, mixture


def _to_int16(x: np.ndarray) -> tuple[np.ndarray, float]:
    scale = float(max(np.abs(x).max(), 1e-9))
    return (x / scale * 32767).round().astype(np.int16), scale / 32767


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]


def prepare(source: str | Path, out: str | Path, layout: str = "auto", sample_rate: int = 44100,
            window: float = 6.0, hop: float = 3.0, progress: bool = True, workers: int = 1) -> Path:
    """Builds (or extends) a cache from a dataset folder; returns the index path.

    With workers > 1 tracks are decoded in parallel processes; the index lists tracks in the
    order they finish, and only finished ones, so an interrupted run resumes where it stopped.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / INDEX
    index: dict[str, Any] = json.loads(index_path.read_text()) if index_path.exists() else {
        "sample_rate": sample_rate, "tracks": []}
    if index["sample_rate"] != sample_rate:
        raise ValueError(f"{out} holds a cache at {index['sample_rate']} Hz, not {sample_rate} Hz")
    done = {t["name"] for t in index["tracks"]}
    tracks = [t for t in read_tracks(source, layout) if t.name not in done]
    jobs = [(track, out, sample_rate, window, hop) for track in tracks]
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(jobs) > 1 else None
    results = pool.map(_prepare_job, jobs) if pool else map(_prepare_job, jobs)
    try:
        for entry in tqdm(results, total=len(jobs), desc="prepare", unit="track", disable=not progress):
            if entry is not None:
                index["tracks"].append(entry)
                tmp = index_path.with_suffix(".tmp")
                tmp.write_text(json.dumps(index, indent=1))
                tmp.replace(index_path)  # resumable: the index only lists finished tracks
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if not index_path.exists():
        index_path.write_text(json.dumps(index, indent=1))
    return index_path


def _prepare_job(job: tuple[Track, Path, int, float, float]) -> dict[str, Any] | None:
    return _prepare_track(*job)


def _prepare_track(track: Track, out: Path, rate: int, window: float, hop: float) -> dict[str, Any] | None:
    folder = out / _safe(track.name)
    folder.mkdir(parents=True, exist_ok=True)
    stems, mixture = load_track(track, rate)
    if mixture is None:
        return None
    windows = active_windows(mixture, rate, window, hop)
    if not windows:
        return None
    entry: dict[str, Any] = {"name": track.name, "split": track.split, "length": int(mixture.shape[1]),
                             "windows": windows, "stems": {}, "scales": {}}
    for key, audio in [("mixture", mixture), *stems.items()]:
        data, scale = _to_int16(audio)
        np.save(folder / f"{_safe(key)}.npy", data)
        if key == "mixture":
            entry["mixture"], entry["mixture_scale"] = f"{folder.name}/{_safe(key)}.npy", scale
        else:
            entry["stems"][key], entry["scales"][key] = f"{folder.name}/{_safe(key)}.npy", scale
    return entry


class Cache:
    """Read access to one or more prepared caches: memory-mapped int16 arrays, scaled on read.

    Several caches (the real-music and the synthetic corpus, say) read as one: their tracks are
    pooled, each still read from its own folder. They must share one sample rate.
    """

    def __init__(self, root: str | Path | list[str | Path] | tuple[str | Path, ...], split: str | None = None) -> None:
        roots = [Path(r) for r in root] if isinstance(root, (list, tuple)) else [Path(root)]
        if not roots:
            raise ValueError("no cache folder given")
        self.roots = roots
        self.tracks: list[dict[str, Any]] = []
        rates = set()
        for number, folder in enumerate(roots):
            if not (folder / INDEX).is_file():
                raise FileNotFoundError(f"{folder}: no {INDEX} "
                                        f"(build it with: apollo data prepare SOURCE --out {folder})")
            index = json.loads((folder / INDEX).read_text())
            rates.add(int(index["sample_rate"]))
            for track in index["tracks"]:
                if split is None or track["split"] == split:
                    self.tracks.append(_rooted(track, folder, number))
        if len(rates) > 1:
            raise ValueError(f"caches at different sample rates {sorted(rates)} cannot be mixed")
        self.sample_rate = rates.pop()
        self._maps: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a data worker without its open memory maps (a pickled map is its whole
        array); the worker maps what it reads itself."""
        return {**self.__dict__, "_maps": {}}

    @property
    def root(self) -> Path | list[Path]:
        """The cache folder, or the list of them when several are read as one (for messages)."""
        return self.roots[0] if len(self.roots) == 1 else self.roots

    def read(self, path: str, scale: float, start: int, length: int) -> np.ndarray:
        """`length` samples of a track's array from `start` (its path as listed in `tracks`)."""
        if path not in self._maps:
            self._maps[path] = np.load(path, mmap_mode="r")
        return fit_length(self._maps[path][:, start:start + length].astype(np.float32) * scale, length)


def _rooted(track: dict[str, Any], folder: Path, number: int) -> dict[str, Any]:
    """A track entry whose array paths include their cache folder, and which names that folder's
    place in the list (`"cache"`), so examples can be drawn from each cache in a set share."""
    track = dict(track, cache=number)
    if "mixture" in track:
        track["mixture"] = str(folder / track["mixture"])
    track["stems"] = {k: str(folder / v) for k, v in track.get("stems", {}).items()}
    return track
