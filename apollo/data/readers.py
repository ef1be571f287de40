"""Dataset readers: MUSDB18-HQ, MoisesDB, the real-music corpus and folders of lossless mixtures -> Tracks."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

LOSSY_EXTENSIONS = {".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".wma", ".mp4"}
LOSSLESS_EXTENSIONS = {".wav", ".flac", ".aif", ".aiff", ".w64", ".wv", ".caf"}
MUSDB_STEMS = ("vocals", "drums", "bass", "other")


@dataclass
class Track:
    """One song: stems by category (files of a category are summed) and/or a mixture file."""

    name: str
    stems: dict[str, list[Path]] = field(default_factory=dict)
    mixture: Path | None = None
    split: str = "train"


def detect_layout(root: Path) -> str:
    if (root / "manifest.json").is_file():
        return "real"
    if (root / "train").is_dir() or (root / "test").is_dir():
        return "musdb"
    if any(p.is_file() for p in root.glob("*/data.json")):
        return "moisesdb"
    return "folder"


def read_tracks(root: str | Path, layout: str = "auto", split: str | None = None) -> list[Track]:
    """Reads any supported layout; lossy targets are skipped with a warning.

    split keeps only that split's tracks, and checks only those for lossy targets.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    layout = detect_layout(root) if layout == "auto" else layout
    readers = {"musdb": read_musdb, "moisesdb": read_moisesdb, "folder": read_folder, "real": read_real}
    if layout not in readers:
        raise ValueError(f"unknown layout {layout!r} (musdb, moisesdb, folder, real, auto)")
    # the real-music corpus has passed its own, stricter full-band rule (data/realmusic.py)
    checked = layout == "real"
    return [t for t in readers[layout](root) if (split is None or t.split == split) and (checked or _keep_lossless(t))]


def read_musdb(root: Path) -> list[Track]:
    """root/{train,test}/<track>/{mixture,vocals,drums,bass,other}.wav"""
    tracks = []
    for split in ("train", "test"):
        for folder in sorted(p for p in (root / split).glob("*") if p.is_dir()):
            stems = {s: [folder / f"{s}.wav"] for s in MUSDB_STEMS if (folder / f"{s}.wav").is_file()}
            mixture = folder / "mixture.wav"
            # MUSDB has no validation folder: hold out ~10% of train tracks, chosen by name hash
            track_split = split if split == "test" else split_of(folder.name, valid=0.1, test=0.0)
            tracks.append(Track(folder.name, stems, mixture if mixture.is_file() else None, track_split))
    return tracks


def read_moisesdb(root: Path) -> list[Track]:
    """root/<track-id>/<stem-category>/*.wav with root/<track-id>/data.json (no mixture file)."""
    tracks = []
    for meta in sorted(root.glob("*/data.json")):
        folder = meta.parent
        try:
            info = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            info = {}
        stems = {}
        for category in sorted(p for p in folder.iterdir() if p.is_dir()):
            files = sorted(f for f in category.iterdir() if f.suffix.lower() in LOSSLESS_EXTENSIONS | LOSSY_EXTENSIONS)
            if files:
                stems[category.name] = files
        tracks.append(Track(folder.name, stems, None, info.get("split", split_of(folder.name))))
    return tracks


def read_folder(root: Path) -> list[Track]:
    """Every audio file under root is one mixture."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in LOSSLESS_EXTENSIONS | LOSSY_EXTENSIONS)
    return [Track(str(p.relative_to(root)), {}, p, split_of(str(p.relative_to(root)))) for p in files]


def read_real(root: Path) -> list[Track]:
    """The kept tracks of `apollo data real` (root/manifest.json): one mixture each, split by track."""
    from .realmusic import kept_tracks

    return [Track(t["name"], {}, root / t["path"], t["split"]) for t in kept_tracks(root)]


def split_of(name: str, valid: float = 0.05, test: float = 0.05) -> str:
    """A stable train/valid/test assignment from the track name (same on every machine)."""
    import hashlib

    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "valid" if u < test + valid else "train"


def _keep_lossless(track: Track) -> bool:
    paths = [p for files in track.stems.values() for p in files] + ([track.mixture] if track.mixture else [])
    for path in paths:
        reason = lossy_reason(path)
        if reason:
            warnings.warn(f"skipping {track.name}: {path.name} {reason}; a lossy target teaches nothing", stacklevel=3)
            return False
    return True


def lossy_reason(path: Path) -> str | None:
    """Why a file cannot serve as a clean target, or None if it looks lossless."""
    if path.suffix.lower() in LOSSY_EXTENSIONS:
        return f"is a lossy {path.suffix} file"
    cutoff = spectral_cliff(path)
    if cutoff is not None:
        return f"has a spectral cliff at {cutoff / 1000:.1f} kHz (decoded from a lossy codec)"
    return None


def spectral_cliff(path: Path, seconds: float = 60.0) -> float | None:
    """Frequency of an encoder's lowpass cliff in the file's average spectrum, or None.

    A codec lowpass drops > 25 dB within ~1 kHz and leaves nothing above; natural roll-off of
    instruments is gradual. Silent files, files with content up to 19 kHz and content that
    ends below 2.5 kHz (a bass line, a pure tone: no encoder cuts that low) are not flagged.
    """
    import soundfile as sf

    with sf.SoundFile(str(path)) as handle:
        rate = handle.samplerate
        data = handle.read(int(seconds * rate), dtype="float32", always_2d=True)
    return cliff_frequency(data.mean(1), rate)


def cliff_frequency(x: np.ndarray, rate: int) -> float | None:
    from ..metrics import average_spectrum_db, bandwidth_hz

    if x.size < 8192 or not np.any(x):
        return None
    top = bandwidth_hz(x, rate, 60.0)
    if top >= min(19000.0, 0.9 * rate / 2) or top < 2500:  # codecs never low-pass below ~3 kHz
        return None
    freqs, level = average_spectrum_db(x, rate, floor=1e-30)
    below = level[(freqs > top - 1500) & (freqs < top - 300)]
    after = level[(freqs > top + 300) & (freqs < top + 1500)]
    if below.size and after.size and below.mean() - after.mean() > 25:
        return float(top)
    return None
