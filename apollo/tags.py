"""Tags travel with the music: title, artist, album (and the rest of the common text) and cover art
are copied from the input (ID3, MP4, Vorbis comments, FLAC) to the restored FLAC or WAV (mutagen)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

# the text fields copied, in mutagen's "easy" names (the same for ID3, MP4 and Vorbis comments)
TEXT_KEYS = ("title", "artist", "album", "albumartist", "date", "tracknumber", "discnumber", "genre", "composer")
# the ID3 frame of each, for WAV outputs
ID3_FRAMES = {"title": "TIT2", "artist": "TPE1", "album": "TALB", "albumartist": "TPE2", "date": "TDRC",
              "tracknumber": "TRCK", "discnumber": "TPOS", "genre": "TCON", "composer": "TCOM"}


@dataclass
class Picture:
    data: bytes
    mime: str = "image/jpeg"
    kind: int = 3  # ID3/FLAC picture type: 3 = front cover
    description: str = ""


@dataclass
class Tags:
    text: dict[str, list[str]] = field(default_factory=dict)
    pictures: list[Picture] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.text or self.pictures)


def read_tags(path: str | Path) -> Tags:
    """The input's common text tags and pictures; empty Tags for untagged or unknown files."""
    import mutagen

    try:
        easy = mutagen.File(str(path), easy=True)
        full = mutagen.File(str(path))
    except mutagen.MutagenError:
        return Tags()
    tags = Tags()
    id3 = full is not None and hasattr(getattr(full, "tags", None), "getall")
    if id3:  # MP3, WAV, AIFF: the frames themselves (mutagen's easy view does not cover WAV)
        for key, frame in ID3_FRAMES.items():
            values = [str(v) for f in full.tags.getall(frame) for v in f.text]
            if values:
                tags.text[key] = values
    elif easy is not None and easy.tags is not None:
        for key in TEXT_KEYS:
            try:
                values = easy.tags.get(key)
            except (KeyError, ValueError):
                values = None
            if values:
                tags.text[key] = [str(v) for v in values]
    if full is not None:
        tags.pictures = _pictures(full)
    return tags


def _pictures(audio: object) -> list[Picture]:
    from mutagen.flac import FLAC
    from mutagen.flac import Picture as FlacPicture
    from mutagen.mp4 import MP4, MP4Cover

    found: list[Picture] = []
    if isinstance(audio, FLAC):
        found += [Picture(p.data, p.mime, p.type, p.desc) for p in audio.pictures]
    elif isinstance(audio, MP4):
        for cover in (audio.tags or {}).get("covr", []):
            mime = "image/png" if cover.imageformat == MP4Cover.FORMAT_PNG else "image/jpeg"
            found.append(Picture(bytes(cover), mime))
    elif getattr(audio, "tags", None) is not None and hasattr(audio.tags, "getall"):  # ID3 (MP3, AIFF, WAV)
        found += [Picture(f.data, f.mime, int(f.type), f.desc) for f in audio.tags.getall("APIC")]
    elif getattr(audio, "tags", None) is not None:  # Vorbis comments (Ogg Vorbis, Opus)
        for encoded in audio.tags.get("metadata_block_picture", []):
            try:
                picture = FlacPicture(base64.b64decode(encoded))
            except (ValueError, TypeError):
                continue
            found.append(Picture(picture.data, picture.mime, picture.type, picture.desc))
    return found


def write_tags(path: str | Path, tags: Tags, fmt: str) -> None:
    """Writes tags into a finished FLAC (Vorbis comments + pictures) or WAV (an ID3 chunk)."""
    if not tags:
        return
    if fmt == "flac":
        from mutagen.flac import FLAC
        from mutagen.flac import Picture as FlacPicture

        audio = FLAC(str(path))
        for key, values in tags.text.items():
            audio[key] = values
        for picture in tags.pictures:
            block = FlacPicture()
            block.data, block.mime = picture.data, picture.mime
            block.type, block.desc = picture.kind, picture.description
            audio.add_picture(block)
        audio.save()
    elif fmt == "wav":
        from mutagen import id3
        from mutagen.wave import WAVE

        audio = WAVE(str(path))
        if audio.tags is None:
            audio.add_tags()
        for key, values in tags.text.items():
            audio.tags.add(getattr(id3, ID3_FRAMES[key])(encoding=3, text=values))
        for picture in tags.pictures:
            audio.tags.add(id3.APIC(encoding=3, mime=picture.mime, type=picture.kind, desc=picture.description,
                                    data=picture.data))
        audio.save()
    else:
        raise ValueError(f"tags are written to flac or wav, not {fmt}")
