"""Tags and cover art of MP3, M4A and Ogg inputs reach the restored files; AAC inputs come out aligned."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pytest
from audio_fixtures import tone, write, write_aac

from apollo.cli import main
from apollo.tags import read_tags

COVER = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # content is not checked: it is copied byte for byte
TEXT = {"title": "Night Drive", "artist": "The Testers", "album": "Fixtures Vol. 1"}


def _tagged_mp3(tmp: Path) -> Path:
    from mutagen.id3 import APIC, ID3, TALB, TIT2, TPE1

    path = write(tmp / "song.mp3", tone(0.5))
    tags = ID3()
    tags.add(TIT2(encoding=3, text=TEXT["title"]))
    tags.add(TPE1(encoding=3, text=TEXT["artist"]))
    tags.add(TALB(encoding=3, text=TEXT["album"]))
    tags.add(APIC(encoding=3, mime="image/png", type=3, desc="cover", data=COVER))
    tags.save(str(path))
    return path


def _tagged_m4a(tmp: Path) -> Path:
    from mutagen.mp4 import MP4, MP4Cover

    path = write_aac(tmp / "song.m4a", tone(0.5))
    audio = MP4(str(path))
    audio["\xa9nam"], audio["\xa9ART"], audio["\xa9alb"] = TEXT["title"], TEXT["artist"], TEXT["album"]
    audio["covr"] = [MP4Cover(COVER, imageformat=MP4Cover.FORMAT_PNG)]
    audio.save()
    return path


def _tagged_ogg(tmp: Path) -> Path:
    from mutagen.flac import Picture
    from mutagen.oggvorbis import OggVorbis

    path = write(tmp / "song.ogg", tone(0.5), format="OGG", subtype="VORBIS")
    audio = OggVorbis(str(path))
    for key, value in TEXT.items():
        audio[key] = value
    picture = Picture()
    picture.data, picture.mime, picture.type = COVER, "image/png", 3
    audio["metadata_block_picture"] = [base64.b64encode(picture.write()).decode()]
    audio.save()
    return path


@pytest.mark.parametrize("make", [_tagged_mp3, _tagged_m4a, _tagged_ogg], ids=["mp3", "m4a", "ogg"])
@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_tags_and_cover_are_copied(tmp_path, make, fmt):
    src = make(tmp_path)
    assert main(["restore", str(src), "--checkpoint", "tiny-test", "-q", "-o", str(tmp_path / "o"),
                 "--format", fmt]) == 0
    tags = read_tags(tmp_path / "o" / f"song.{fmt}")
    assert {k: tags.text.get(k) for k in TEXT} == {k: [v] for k, v in TEXT.items()}
    assert [(p.data, p.mime, p.kind) for p in tags.pictures] == [(COVER, "image/png", 3)]


def test_untagged_input_gives_an_untagged_output(tmp_path):
    src = write(tmp_path / "plain.wav", tone(0.5))
    assert main(["restore", str(src), "--checkpoint", "tiny-test", "-q", "-o", str(tmp_path / "o")]) == 0
    assert not read_tags(tmp_path / "o" / "plain.flac")


@pytest.mark.parametrize("name, fmt", [("clip.m4a", "mp4"), ("clip.aac", "adts")])
def test_aac_input_is_aligned_to_its_source(tmp_path, name, fmt):
    # AAC encoders prime the stream with 1024 samples and pad the last frame; MP4 declares
    # both, raw ADTS declares neither (its end padding, under one frame, stays)
    from apollo.audio import read
    from apollo.metrics import find_lag

    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((2, 2 * 44100))).astype(np.float32)
    x[:, ::4410] += 0.8
    decoded, _ = read(write_aac(tmp_path / name, x.T, container_format=fmt))
    assert find_lag(x, decoded, max_lag=4000) == 0
    if fmt == "mp4":
        assert decoded.shape == x.shape
    else:
        assert x.shape[1] <= decoded.shape[1] < x.shape[1] + 1024
