"""The real-music corpus: the full-band rule, a corpus built from a local .deb, its reader and cache."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import firwin, lfilter

from apollo.data import realmusic
from apollo.data.cache import Cache, prepare
from apollo.data.readers import read_tracks

RATE = 44100


def _noise(seconds: float, seed: int, cutoff: float | None = None) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((int(seconds * RATE), 2)) * 0.1
    if cutoff is not None:  # an encoder's steep lowpass
        x = lfilter(firwin(1023, cutoff, fs=RATE, window=("kaiser", 12)), 1.0, x, axis=0)
    return x.astype(np.float32)


def test_bandwidth_rule_keeps_full_band_and_drops_a_16k_cliff(tmp_path):
    full, cut = tmp_path / "full.flac", tmp_path / "cut.flac"
    sf.write(full, _noise(12, 0), RATE)
    sf.write(cut, _noise(12, 0, cutoff=16000), RATE)
    bw_full, rate, channels, seconds = realmusic.bandwidth(full)
    assert bw_full >= realmusic.FULL_BAND_HZ and rate == RATE and channels == 2 and seconds == pytest.approx(12)
    bw_cut = realmusic.bandwidth(cut)[0]
    assert 15000 < bw_cut < 17500


def test_split_is_fixed_by_track_name():
    names = [f"pkg/music/track{i}.ogg" for i in range(400)]
    splits = [realmusic.split_of_track(n) for n in names]
    assert splits == [realmusic.split_of_track(n) for n in names]
    counts = {s: splits.count(s) for s in ("train", "valid", "test")}
    assert 0.05 < counts["valid"] / 400 < 0.15 and 0.05 < counts["test"] / 400 < 0.15


def test_reserved_packages_are_refused(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        realmusic.build_corpus(tmp_path, ("fretsonfire-songs-muldjord",), progress=False)


def _make_deb(tmp: Path, package: str = "testmusic") -> Path:
    """A small .deb as Debian ships game music: files, a zip archive of more, a copyright file."""
    root = tmp / "pkgroot"
    music = root / "usr" / "share" / "games" / package / "music"
    music.mkdir(parents=True)
    sf.write(music / "full.flac", _noise(12, 1), RATE)
    shutil.copyfile(music / "full.flac", music / "copy.flac")  # same bytes: a duplicate
    sf.write(music / "lowpass.flac", _noise(12, 2, cutoff=16000), RATE)
    sf.write(music / "short.flac", _noise(5, 3), RATE)
    sf.write(tmp / "zipped.flac", _noise(11, 4), RATE)
    sf.write(tmp / "inzip.flac", _noise(11, 5), RATE)
    with zipfile.ZipFile(root / "usr" / "share" / "games" / package / "data.pk3", "w") as zf:
        zf.write(tmp / "zipped.flac", "sound/zipped.flac")
        zf.write(tmp / "inzip.flac", "audio/music/inzip.flac")  # as 0ad-data keeps its soundtrack
    doc = root / "usr" / "share" / "doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text("Files: *\nCopyright: someone\nLicense: CC-BY-SA-3.0\n\n"
                                   "Files: debian/*\nLicense: GPL-2+\n")
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(f"Package: {package}\nVersion: 1.0-1\nArchitecture: all\n"
                                             "Maintainer: test <t@example.org>\nDescription: test music\n")
    debs = tmp / "corpus" / "debs"
    debs.mkdir(parents=True)
    deb = debs / f"{package}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "-Zgzip", str(root), str(deb)], check=True, capture_output=True)
    return deb


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_build_corpus_from_a_local_deb_then_prepare(tmp_path):
    _make_deb(tmp_path)
    out = tmp_path / "corpus"
    manifest = realmusic.build_corpus(out, ("testmusic",), workers=1, progress=False)
    by_file = {Path(t["name"]).name: t for t in manifest["tracks"]}
    assert sorted(by_file) == ["copy.flac", "full.flac", "inzip.flac", "lowpass.flac", "short.flac", "zipped.flac"]
    kept = {name for name, t in by_file.items() if t["kept"]}
    assert kept - {"copy.flac", "full.flac"} == {"inzip.flac", "zipped.flac"} and len(kept) == 3
    duplicate = by_file["full.flac"] if "copy.flac" in kept else by_file["copy.flac"]
    assert duplicate["reason"].startswith("duplicate of testmusic/")
    assert by_file["lowpass.flac"]["reason"].startswith("bandwidth 1")
    assert by_file["short.flac"]["reason"] == "shorter than 10 s"
    for name in kept:
        track = by_file[name]
        assert track["licences"] == ["CC-BY-SA-3.0", "GPL-2+"] and track["version"] == "1.0-1"
        assert track["split"] == realmusic.split_of_track(track["name"])
        linked = out / track["path"]
        assert linked.is_file() and realmusic._sha256(linked) == track["sha256"]
    assert (out / "licences" / "testmusic.copyright").is_file()
    # resumable: a second run measures nothing again and writes the same manifest
    again = realmusic.build_corpus(out, ("testmusic",), workers=1, progress=False)
    assert again == manifest
    # the reader takes the kept tracks (lossless check already done), prepare caches them
    tracks = read_tracks(out)
    assert sorted(t.name for t in tracks) == sorted(by_file[n]["name"] for n in kept)
    index = json.loads(prepare(out, tmp_path / "cache", progress=False, workers=2).read_text())
    assert sorted(t["name"] for t in index["tracks"]) == sorted(t.name for t in tracks)
    cache = Cache(tmp_path / "cache")
    first = cache.tracks[0]
    audio = cache.read(first["mixture"], first["mixture_scale"], 0, RATE)
    assert audio.shape == (2, RATE) and np.abs(audio).max() > 0.05


@pytest.mark.parametrize("relative, expected", [
    ("usr/share/games/etr/music/race.ogg", True),
    ("usr/share/games/xmoto/Textures/Musics/speed.ogg", True),
    ("usr/share/games/openclonk/Music.ocg/Frontend.ogg", True),
    ("usr/share/games/btanks/data/tunes/menu.ogg", True),
    ("usr/share/games/etr/sounds/wind.ogg", False),
    ("usr/share/games/redeclipse/data/sounds/ambience/rain.ogg", False),
    ("usr/share/games/music.ogg", False),  # the file's own name does not count
])
def test_music_folder_rule(relative, expected):
    assert realmusic.in_music_folder(Path(relative)) is expected


def test_editions_grow_without_reserved_packages():
    first, second, third = realmusic.EDITIONS[1], realmusic.EDITIONS[2], realmusic.EDITIONS[3]
    assert second[:len(first)] == first and set(realmusic.GAME_DATA_PACKAGES) <= set(second)
    assert third[:len(second)] == second and len(set(third)) == len(third)
    assert set(realmusic.GAME_DATA_PACKAGES_3) | set(realmusic.MUSIC_PACKAGES_3) == set(third) - set(second)
    assert set(realmusic.GAME_DATA_PACKAGES_3) <= set(realmusic.FOLDER_PACKAGES)
    assert not set(realmusic.MUSIC_PACKAGES_3) & set(realmusic.FOLDER_PACKAGES)
    assert not any(p.startswith(realmusic.RESERVED_PREFIX) for p in third)


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian)")
def test_game_data_packages_give_only_their_music_folder(tmp_path):
    deb = _make_deb(tmp_path)
    out = tmp_path / "folders"
    (out / "debs").mkdir(parents=True)
    shutil.copy(deb, out / "debs" / deb.name)
    manifest = realmusic.build_corpus(out, ("testmusic",), workers=1, progress=False, folder_packages=("testmusic",))
    names = sorted(Path(t["name"]).name for t in manifest["tracks"])
    # the archive's music folder counts, not its sound/ file
    assert names == ["copy.flac", "full.flac", "inzip.flac", "lowpass.flac", "short.flac"]
    assert all("/music/" in t["name"] for t in manifest["tracks"])
    assert [t["kept"] for t in manifest["tracks"] if t["name"].endswith("inzip.flac")] == [True]
    # only the music folders and the copyright file were unpacked, not the rest of the package, and
    # the archive was deleted once its music was read
    unpacked = out / "unpacked" / "testmusic"
    files = sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*") if p.is_file())
    assert files == [".unpacked", "usr/share/doc/testmusic/copyright",
                     "usr/share/games/testmusic/data.pk3.d/audio/music/inzip.flac"] + [
        f"usr/share/games/testmusic/music/{n}" for n in names if n != "inzip.flac"]
    assert {t["licences"] == ["CC-BY-SA-3.0", "GPL-2+"] for t in manifest["tracks"]} == {True}
    # a whole unpack made earlier serves a music-folder build as it is
    whole = tmp_path / "whole"
    realmusic.unpack(deb, whole)
    assert (whole / "usr/share/games/testmusic/data.pk3").is_file()
    assert realmusic.unpack(deb, whole, music_folders_only=True) == whole
    assert (whole / ".unpacked").read_text() == deb.name  # not unpacked again
    assert (whole / "usr/share/games/testmusic/data.pk3").is_file()


@pytest.mark.parametrize("argv, expected", [
    ([], realmusic.EDITIONS[1]),
    (["--edition", "2"], realmusic.EDITIONS[2]),
    (["--edition", "3"], realmusic.EDITIONS[3]),
    (["--edition", "2", "--packages", "a-music"], ("a-music",)),
])
def test_data_real_command_picks_the_edition_packages(tmp_path, monkeypatch, argv, expected):
    from apollo.cli import main

    asked = []
    monkeypatch.setattr(realmusic, "build_corpus",
                        lambda out, packages, **kw: asked.append(packages) or {"tracks": []})
    assert main(["data", "real", "--out", str(tmp_path), "-q", *argv]) == 0
    assert asked == [tuple(expected)]
