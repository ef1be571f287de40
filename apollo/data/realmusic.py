"""The real-music corpus: DFSG-free recordings from Debian's archive, rebuilt offline by one command.

    apollo data real --out corpus/real

Each package is fetched with `apt-get download` (no root needed), unpacked with `dpkg-deb -x`
(and the zip archives some games keep their music in; of a game data package, only its music
folders), and every audio file in it is measured. Only truly full-band tracks are kept
(FULL_BAND_HZ): most of these are Ogg Vorbis or Opus, and a target with an encoder's lowpass at
16 kHz would teach the model to stop there. Kept files are linked, never re-encoded, into
`tracks/<package>/`, and `manifest.json` records each track's package, version, licences,
SHA-256, bandwidth, length and split. Every step is resumable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".flac", ".wav", ".mp3")
ARCHIVE_SUFFIXES = (".pk3", ".zip")  # zip archives some games keep their data (and music) in
# Checked music packages of Debian 12 (docs/real-music.md has the per-package counts).
MUSIC_PACKAGES = (
    "wesnoth-1.16-music", "warzone2100-music", "nexuiz-music", "ufoai-music", "singularity-music",
    "asc-music", "hyperrogue-music", "fb-music-high", "xblast-tnt-musics", "drascula-music",
    "planetblupi-music-ogg",
)
# Game data packages of Debian 12 whose soundtrack sits in a music folder beside the sound effects:
# only their files under such a folder are read (`in_music_folder`). Edition 2 adds them.
GAME_DATA_PACKAGES = (
    "supertuxkart-data", "supertux-data", "hedgewars-data", "widelands-data", "naev-data", "warmux-data",
    "extremetuxracer-data", "openclonk-data", "xmoto-data", "megaglest-data",
)  # checked and left out, no music file full-band: freedroidrpg-data, flare-game, marsshooter-data,
#    redeclipse-data (19.0-19.4 kHz), btanks-data
# Edition 3 (2026-12-07): more game soundtracks in a music folder (0ad-data's inside its zip archive) ...
GAME_DATA_PACKAGES_3 = (
    "0ad-data", "freecol", "starfighter-data", "berusky2-data", "lincity-ng-data", "gunroar-data", "mu-cade-data",
    "titanion-data", "torus-trooper-data",
)
# ... and small game data packages read whole, since every file of theirs of 10 s or more is music.
MUSIC_PACKAGES_3 = ("parsec47-data", "rrootage-data", "tumiki-fighters-data", "funnyboat")
# checked and left out for edition 3, no music file full-band: scorched3d-data (15 kHz), noiz2sa-data
# (16.6 kHz), powermanga-data, holotz-castle-data, alienblaster-data (22.05-kHz files); no audio file of
# 10 s or more: pokerth-data, ri-li-data; none read at all: blobwars-data, crawl-tiles-data, pingus-data
# (tracker modules).
FOLDER_PACKAGES = GAME_DATA_PACKAGES + GAME_DATA_PACKAGES_3  # of these only the music folders are read
MUSIC_FOLDERS = frozenset({"music", "musics", "tunes"})
# Edition 1 is the corpus every result before 2026-11-27 was measured on; a track's split depends on
# its name only, so each edition keeps the earlier ones' tracks in the same splits and adds new ones.
EDITIONS = {1: MUSIC_PACKAGES, 2: MUSIC_PACKAGES + GAME_DATA_PACKAGES,
            3: MUSIC_PACKAGES + GAME_DATA_PACKAGES + GAME_DATA_PACKAGES_3 + MUSIC_PACKAGES_3}
RESERVED_PREFIX = "fretsonfire-songs-"  # kept for an independent check of the project: never used
# The bandwidth rule: the long-term average spectrum of the first MEASURE_SECONDS (mono downmix)
# must stay within FLOOR_DB of its peak up to at least FULL_BAND_HZ. Opus stops at 20 kHz, good
# Vorbis near 20-22 kHz; Vorbis at low quality and MP3 stop at 15-18 kHz and fail.
FULL_BAND_HZ = 19500.0
FLOOR_DB = 70.0
MEASURE_SECONDS = 120.0
VALID_SHARE, TEST_SHARE = 0.1, 0.1


@dataclass
class TrackRecord:
    """One audio file of one package, measured; `split` is empty for files that were not kept."""

    name: str  # "<package>/<path inside the package>": the unit of the split
    package: str
    version: str
    licences: list[str]
    source: str  # path under unpacked/
    sha256: str
    sample_rate: int
    channels: int
    seconds: float
    bandwidth_hz: float
    kept: bool
    reason: str
    split: str
    path: str  # under tracks/, for kept files


def check_package_name(name: str) -> None:
    if name.startswith(RESERVED_PREFIX):
        raise ValueError(f"{name}: the {RESERVED_PREFIX}* packages are reserved for an independent check")


def in_music_folder(relative: Path) -> bool:
    """True for a file under a folder named music, musics or tunes (any case, any suffix: Music.ocg)."""
    return any(part.lower().split(".")[0] in MUSIC_FOLDERS for part in relative.parts[:-1])


def split_of_track(name: str) -> str:
    """Train/valid/test by a hash of the track name: fixed on every machine."""
    u = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < TEST_SHARE else "valid" if u < TEST_SHARE + VALID_SHARE else "train"


def fetch(package: str, debs: Path) -> Path:
    """The package's .deb in `debs`, downloaded with apt-get unless already there."""
    check_package_name(package)
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if shutil.which("apt-get") is None:
        raise RuntimeError("apt-get not found: the real-music corpus is fetched from Debian's archive")
    done = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if done.returncode or not found:
        raise RuntimeError(f"apt-get download {package} failed: {done.stderr.strip().splitlines()[-1:]}")
    return found[-1]


def unpack(deb: Path, dest: Path, music_folders_only: bool = False) -> Path:
    """dpkg-deb -x into dest, then the audio inside zip archives (.pk3, .zip) beside them.

    With `music_folders_only`, only the files in a music folder (`in_music_folder`), the zip
    archives and the copyright file are written, of an archive only its audio in a music folder,
    and the archive is deleted once read: a game data package is mostly graphics (edition 2's ten
    come to 2.7 GB unpacked whole, their music folders to 0.6 GB; 0ad-data's archive is 3.3 GB,
    its music 0.2 GB).
    """
    marker = dest / ".unpacked"
    wanted = f"{deb.name} music folders" if music_folders_only else deb.name
    if marker.exists() and marker.read_text() in (deb.name, wanted):  # a whole unpack serves both
        return dest
    if shutil.which("dpkg-deb") is None:
        raise RuntimeError("dpkg-deb not found: install dpkg to unpack Debian packages")
    dest.mkdir(parents=True, exist_ok=True)
    if music_folders_only:
        _unpack_music_folders(deb, dest)
    else:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], check=True)
    for archive in sorted(p for p in dest.rglob("*") if p.suffix.lower() in ARCHIVE_SUFFIXES and p.is_file()):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                inside = Path(member)
                if (member.lower().endswith(AUDIO_SUFFIXES) and ".." not in inside.parts
                        and (not music_folders_only or in_music_folder(inside))):
                    zf.extract(member, archive.with_suffix(archive.suffix + ".d"))
        if music_folders_only:
            archive.unlink()
    marker.write_text(wanted)
    return dest


def copyright_path(package: str) -> Path:
    """Where a Debian package keeps its copyright file, relative to its root."""
    return Path("usr", "share", "doc", package, "copyright")


def _unpack_music_folders(deb: Path, dest: Path) -> None:
    """The regular files of `deb` under a music folder, and its copyright file, into dest."""
    copyright_file = copyright_path(deb.name.split("_")[0])
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|*") as tar:
            tar.extraction_filter = getattr(tarfile, "data_filter", None)  # Python >= 3.10.12 / 3.11.4
            for member in tar:
                relative = Path(os.path.normpath(member.name))
                if (member.isfile() and not relative.is_absolute() and ".." not in relative.parts
                        and (relative == copyright_file or in_music_folder(relative)
                             or relative.suffix.lower() in ARCHIVE_SUFFIXES)):
                    tar.extract(member, dest)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, ["dpkg-deb", "--fsys-tarfile", str(deb)])


def deb_version(deb: Path) -> str:
    return deb.name.split("_")[1].replace("%3a", ":")


def licences(root: Path, package: str) -> tuple[list[str], Path | None]:
    """Licence names in the package's Debian copyright file, and that file.

    Machine-readable files name them in `License:` fields; free-form ones point at
    /usr/share/common-licenses/NAME. The file itself is copied beside the corpus for the rest.
    """
    path = root / copyright_path(package)
    if not path.is_file():
        return [], None
    text = path.read_text(errors="replace")
    names = re.findall(r"^License:[ \t]*(\S[^\n]*)$", text, flags=re.MULTILINE)
    if not names:
        names = [n.rstrip(".") for n in re.findall(r"/usr/share/common-licenses/([A-Za-z0-9.+-]+)", text)]
    return sorted({n.strip() for n in names}), path


def bandwidth(path: Path) -> tuple[float, int, int, float]:
    """(bandwidth Hz, rate, channels, seconds): the top frequency within FLOOR_DB of the peak."""
    import soundfile as sf

    from ..metrics import bandwidth_hz

    with sf.SoundFile(str(path)) as handle:
        rate, channels, frames = handle.samplerate, handle.channels, handle.frames
        data = handle.read(int(min(frames, MEASURE_SECONDS * rate)), dtype="float32", always_2d=True)
    mono = data.mean(1)
    if mono.size < 8192 or not np.any(mono):
        return 0.0, rate, channels, frames / rate
    return bandwidth_hz(mono, rate, FLOOR_DB), rate, channels, frames / rate


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _measure(args: tuple[str, str]) -> dict[str, Any]:
    path, _ = args
    sha = _sha256(Path(path))
    try:
        bw, rate, channels, seconds = bandwidth(Path(path))
        return {"sha256": sha, "bandwidth_hz": bw, "sample_rate": rate, "channels": channels, "seconds": seconds,
                "error": ""}
    except (RuntimeError, OSError, ValueError) as err:  # soundfile raises LibsndfileError (a RuntimeError)
        return {"sha256": sha, "bandwidth_hz": 0.0, "sample_rate": 0, "channels": 0, "seconds": 0.0,
                "error": str(err).splitlines()[0] if str(err) else type(err).__name__}


def _verdict(measured: dict[str, Any], seen: dict[str, str], name: str) -> str:
    """Why a measured file is not kept, or '' when it is."""
    if measured["error"]:
        return f"unreadable: {measured['error']}"
    if measured["sha256"] in seen:
        return f"duplicate of {seen[measured['sha256']]}"
    if measured["seconds"] < 10:
        return "shorter than 10 s"
    if measured["bandwidth_hz"] < FULL_BAND_HZ:
        return f"bandwidth {measured['bandwidth_hz'] / 1000:.1f} kHz < {FULL_BAND_HZ / 1000:.1f} kHz"
    return ""


def build_corpus(out: str | Path, packages: tuple[str, ...] = MUSIC_PACKAGES, workers: int = 2,
                 progress: bool = True, folder_packages: tuple[str, ...] = FOLDER_PACKAGES) -> dict[str, Any]:
    """Fetches, unpacks, measures and links the corpus; returns (and writes) the manifest.

    Of the packages in `folder_packages` only the files in a music folder are unpacked and read;
    the rest are read whole.
    """
    from tqdm import tqdm

    for package in packages:
        check_package_name(package)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out / "measurements.json"  # resumable: each file (by its path under out) is measured once
    measured: dict[str, dict[str, Any]] = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    records: list[TrackRecord] = []
    seen: dict[str, str] = {}
    say = tqdm.write if progress else (lambda message: None)
    for package in packages:
        deb = fetch(package, out / "debs")
        root = unpack(deb, out / "unpacked" / package, music_folders_only=package in folder_packages)
        names, copyright_file = licences(root, package)
        if copyright_file is not None:
            (out / "licences").mkdir(exist_ok=True)
            shutil.copyfile(copyright_file, out / "licences" / f"{package}.copyright")
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                       and p.suffix.lower() in AUDIO_SUFFIXES
                       and (package not in folder_packages or in_music_folder(p.relative_to(root))))
        todo = [str(p) for p in files if str(p.relative_to(out)) not in measured]
        if todo:
            with ProcessPoolExecutor(max(1, workers)) as pool:
                jobs = pool.map(_measure, [(p, package) for p in todo])
                for path, result in tqdm(zip(todo, jobs), total=len(todo), desc=package, unit="file",
                                         disable=not progress):
                    measured[str(Path(path).relative_to(out))] = result
            tmp = cache_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(measured, indent=0))
            tmp.replace(cache_path)
        for path in files:
            rel = str(path.relative_to(out))
            m = measured[rel]
            name = f"{package}/{path.relative_to(root)}"
            reason = _verdict(m, seen, name)
            split, link = "", ""
            if not reason:
                seen[m["sha256"]] = name
                split = split_of_track(name)
                target = out / "tracks" / package / "_".join(path.relative_to(root).parts[-2:])
                _link(path, target)
                link = str(target.relative_to(out))
            records.append(TrackRecord(name, package, deb_version(deb), names, rel, m["sha256"], m["sample_rate"],
                                       m["channels"], round(m["seconds"], 2), round(m["bandwidth_hz"], 1),
                                       not reason, reason, split, link))
        kept = [r for r in records if r.package == package and r.kept]
        say(f"{package}: {len(kept)} of {sum(r.package == package for r in records)} files kept "
            f"({sum(r.seconds for r in kept) / 60:.0f} min)")
    manifest = {"rule": {"full_band_hz": FULL_BAND_HZ, "floor_db": FLOOR_DB, "measure_seconds": MEASURE_SECONDS,
                         "min_seconds": 10, "valid_share": VALID_SHARE, "test_share": TEST_SHARE},
                "tracks": [asdict(r) for r in records]}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / MANIFEST)
    return manifest


def _link(source: Path, target: Path) -> None:
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def kept_tracks(root: str | Path) -> list[dict[str, Any]]:
    """The manifest's kept tracks (each with its split and path under root)."""
    manifest = json.loads((Path(root) / MANIFEST).read_text())
    return [t for t in manifest["tracks"] if t["kept"]]


def summary(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Per package: files, kept, minutes kept, and kept tracks per split (for docs/real-music.md)."""
    rows = []
    for package in dict.fromkeys(t["package"] for t in manifest["tracks"]):
        tracks = [t for t in manifest["tracks"] if t["package"] == package]
        kept = [t for t in tracks if t["kept"]]
        rows.append({"package": package, "files": len(tracks), "kept": len(kept),
                     "minutes": round(sum(t["seconds"] for t in kept) / 60, 1),
                     **{s: sum(t["split"] == s for t in kept) for s in ("train", "valid", "test")},
                     "licences": sorted({n for t in tracks for n in t["licences"]})})
    return rows
