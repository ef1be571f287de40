"""Recorded instruments for the synthetic corpus, from Debian: Hydrogen's drum kits
(hydrogen-drumkits) and the lossless MuseScore General soundfont.

    apollo data instruments --out corpus/instruments

The package holds multi-sampled recordings of real kits (FLAC/WAV, GPL / CC licences in its
copyright file). A kit's instruments are sorted into roles (kick, snare, hats, cymbals, toms) by
their names in drumkit.xml; a kit with no kick, snare or hi-hat is left out. `render_kit` plays
a generated groove (General MIDI drum notes, as synth.drum_part writes them) with those
recordings, so drum stems carry real transients and cymbal tails instead of soundfont ones.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PACKAGE = "hydrogen-drumkits"
KITS_DIR = Path("usr/share/hydrogen/data/drumkits")
SOUNDFONT_PACKAGE = "musescore-general-soundfont-lossless"  # 330 MB: the MuseScore General samples uncompressed
SOUNDFONT_FILE = Path("usr/share/sounds/sf2/MuseScore_General_Full.sf2")
# instrument name -> role; the first pattern that matches wins
ROLES = (
    ("hat_open", r"(hi.?hat|hh|hat).*(open|semi)|open.*(hi.?hat|hh)"),
    ("hat_pedal", r"(hi.?hat|hh|hat).*(pedal|foot)|pedal.*(hi.?hat|hh)"),
    ("hat_closed", r"hi.?hat|\bhh\b|hat"),
    ("kick", r"kick|bass ?drum|\bbd\b"),
    ("clap", r"clap"),
    ("snare", r"snare"),
    ("crash", r"crash|splash|china"),
    ("ride", r"ride"),
    ("tom_low", r"tom.*(low|floor|lo\b)|floor"),
    ("tom_high", r"tom.*(hi\b|high)"),
    ("tom_mid", r"tom"),
)
# General MIDI drum notes -> role, with fallbacks when a kit lacks the role
GM_ROLES = {36: "kick", 35: "kick", 38: "snare", 40: "snare", 39: "clap", 42: "hat_closed", 44: "hat_pedal",
            46: "hat_open", 49: "crash", 57: "crash", 55: "crash", 51: "ride", 59: "ride", 53: "ride", 41: "tom_low",
            43: "tom_low", 45: "tom_mid", 47: "tom_mid", 48: "tom_high", 50: "tom_high"}
FALLBACK = {"hat_pedal": "hat_closed", "hat_open": "hat_closed", "clap": "snare", "ride": "crash", "crash": "ride",
            "tom_low": "tom_mid", "tom_high": "tom_mid", "tom_mid": "tom_low"}
REQUIRED = ("kick", "snare", "hat_closed")


@dataclass(frozen=True)
class Sample:
    path: Path
    min_velocity: float  # the layer's velocity range, 0-1
    max_velocity: float


@dataclass(frozen=True)
class Kit:
    name: str
    roles: dict[str, list[Sample]]

    def samples(self, pitch: int) -> list[Sample]:
        role = GM_ROLES.get(pitch, "tom_mid")
        for candidate in (role, FALLBACK.get(role), FALLBACK.get(FALLBACK.get(role, ""), None)):
            if candidate and self.roles.get(candidate):
                return self.roles[candidate]
        return []


def role_of(name: str) -> str | None:
    lowered = name.lower()
    return next((role for role, pattern in ROLES if re.search(pattern, lowered)), None)


def read_kit(xml: Path) -> Kit | None:
    """A kit from its drumkit.xml, or None when it lacks a kick, a snare or a hi-hat."""
    root = ET.parse(xml).getroot()
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    roles: dict[str, list[Sample]] = {}
    for instrument in root.iter(f"{ns}instrument"):
        role = role_of(instrument.findtext(f"{ns}name") or "")
        if role is None:
            continue
        layers = list(instrument.iter(f"{ns}layer")) or [instrument]
        for layer in layers:
            file = layer.findtext(f"{ns}filename")
            if file and (xml.parent / file).is_file():
                roles.setdefault(role, []).append(Sample(xml.parent / file, float(layer.findtext(f"{ns}min") or 0),
                                                         float(layer.findtext(f"{ns}max") or 1)))
    if not all(roles.get(role) for role in REQUIRED):
        return None
    return Kit(root.findtext(f"{ns}name") or xml.parent.name, roles)


def find_kits(root: str | Path) -> list[Kit]:
    """Every usable kit under root (a folder of drumkit.xml files, or `apollo data drumkits`' output)."""
    return [kit for xml in sorted(Path(root).rglob("drumkit.xml")) if (kit := read_kit(xml)) is not None]


def fetch_instruments(out: str | Path, soundfont: bool = True) -> tuple[list[Kit], list[Path]]:
    """Downloads and unpacks the kits (and the lossless soundfont) into out, resumably; returns
    the usable kits and the soundfonts found there."""
    from .realmusic import fetch, unpack

    out = Path(out)
    unpack(fetch(PACKAGE, out / "debs"), out / "unpacked" / PACKAGE)
    if soundfont:
        unpack(fetch(SOUNDFONT_PACKAGE, out / "debs"), out / "unpacked" / SOUNDFONT_PACKAGE)
    return find_kits(out), find_soundfonts(out)


def find_soundfonts(root: str | Path) -> list[Path]:
    """The .sf2/.sf3 files under root (the instruments folder)."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".sf2", ".sf3") and p.is_file())


@functools.lru_cache(maxsize=512)
def _load(path: Path, rate: int) -> np.ndarray:
    import soundfile as sf

    from ..audio import resample

    data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
    data = resample(np.ascontiguousarray(data.T), file_rate, rate)
    return np.repeat(data, 2, axis=0) if data.shape[0] == 1 else data[:2]


def render_kit(notes: list[tuple[float, float, int, int]], kit: Kit, rate: int, seconds: float,
               rng: np.random.Generator, gain: float = 0.5) -> np.ndarray:
    """(2, seconds * rate) drums: each (start s, duration s, GM pitch, velocity) note plays a
    recording of its role, the velocity layer that covers it (or any), at velocity's loudness."""
    total = int(seconds * rate)
    out = np.zeros((2, total), np.float32)
    for start, _, pitch, velocity in notes:
        at = int(start * rate)
        samples = kit.samples(pitch)
        if at >= total or not samples:
            continue
        level = velocity / 127
        layers = [s for s in samples if s.min_velocity <= level <= s.max_velocity] or samples
        hit = _load(layers[int(rng.integers(len(layers)))].path, rate)[:, : total - at]
        out[:, at:at + hit.shape[1]] += hit * (gain * level ** 1.5)
    fade = min(int(0.05 * rate), total)
    out[:, total - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return out
