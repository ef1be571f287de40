"""An offline multi-stem corpus: music21 scores and generated pop/rock/electronic arrangements,
with generated drums and bass, rendered by FluidSynth and recorded drum kits, then produced.

Every part is rendered on its own with a permissively licensed General MIDI soundfont (FluidR3
GM, MuseScore General; both MIT), so each track has true stems. Output is the MoisesDB-like
layout the readers understand: <out>/<track-id>/<category>/<part>.flac, data.json, and a
mixture.flac equal to the sum of the stems. Instruments, tempo, register and dynamics vary
per track; every render has a fixed length (sustained notes are cut, then faded).
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..optional import require
from .readers import split_of

SOUNDFONTS = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/sounds/sf2/MuseScore_General_Full.sf2",  # lossless, where musescore-general-soundfont-lossless is
    "/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
    "/usr/share/sounds/sf3/MuseScore_General.sf3",
)
COMPOSERS = ("bach", "beethoven", "mozart", "haydn", "handel", "schubert", "schumann", "monteverdi",
             "palestrina", "joplin", "corelli", "josquin", "verdi", "ryansMammoth", "airdsAirs")
# GM programs by MoisesDB stem category
PROGRAMS = {
    "piano": [0, 1, 2, 4, 5, 7],
    "other_keys": [6, 8, 11, 16, 17, 19, 88, 89, 91],
    "guitar": [24, 25, 26, 27, 29],
    "bowed_strings": [40, 41, 42, 44, 48, 49],
    "wind": [56, 57, 60, 64, 65, 68, 71, 73],
    "vocals": [52, 53, 54],
    "other_plucked": [45, 46, 104, 105, 107],
    "other": [80, 81, 82, 87, 98],
}
BASS_PROGRAMS = [32, 33, 34, 35, 38, 39]


@dataclass
class Part:
    category: str
    name: str
    program: int
    notes: list[tuple[float, float, int, int]]  # (start s, duration s, pitch, velocity)
    drums: bool = False


def default_soundfonts() -> list[str]:
    found = [f for f in SOUNDFONTS if Path(f).is_file()]
    if not found:
        raise FileNotFoundError("no General MIDI soundfont found: install the Debian packages fluid-soundfont-gm "
                                "and musescore-general-soundfont (.ci/apt-packages.txt)")
    return found


def score_paths() -> list[str]:
    from music21 import corpus

    paths: list[str] = []
    for composer in COMPOSERS:
        try:
            paths += [str(p) for p in corpus.getComposer(composer)]
        except Exception:  # noqa: BLE001 - a composer missing from this music21 version
            continue
    return sorted(set(paths))


def score_parts(path: str, rng: np.random.Generator, seconds: float) -> tuple[list[Part], str]:
    """Parts of a corpus score as timed notes, with random tempo, transposition and dynamics."""
    from music21 import converter, stream

    score = converter.parse(path)
    if isinstance(score, stream.Opus):  # a file holding several pieces: take the first
        score = score.scores[0] if score.scores else stream.Score()
    bpm = float(rng.uniform(60, 160))
    beat = 60.0 / bpm
    shift = int(rng.integers(-5, 6))
    parts: list[Part] = []
    categories = list(PROGRAMS)
    for i, part in enumerate(score.parts[:6]):
        raw = []
        for n in part.flatten().notes:
            velocity = n.volume.velocity or 80
            for p in n.pitches:
                length = max(float(n.quarterLength) * beat, 0.05)
                raw.append((float(n.offset) * beat, length, int(p.midi), int(velocity)))
        if not raw:
            continue
        octave = 12 * int(rng.integers(-1, 2)) if i else 0
        dyn = float(rng.uniform(0.5, 1.1))
        notes = [(s, d, int(np.clip(p + shift + octave, 24, 100)), int(np.clip(v * dyn + rng.normal(0, 8), 20, 127)))
                 for s, d, p, v in raw]
        notes = _loop(notes, seconds)
        category = categories[int(rng.integers(len(categories)))]
        program = int(rng.choice(PROGRAMS[category]))
        parts.append(Part(category, f"part{i}", program, notes))
    return parts, Path(path).stem


PROGRESSIONS = ((0, 5, 3, 4), (0, 4, 5, 3), (5, 3, 0, 4), (0, 3, 4, 4), (0, 0, 3, 4), (5, 4, 3, 4))
MAJOR, MINOR = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
STYLES = {  # part -> (stem category, GM programs)
    "pop": {"chords": ("piano", [0, 1, 4]), "pad": ("other_keys", [48, 49, 89]), "lead": ("vocals", [52, 53, 54, 85])},
    "rock": {"chords": ("guitar", [29, 30]), "arpeggio": ("guitar", [25, 26, 27]), "lead": ("guitar", [29, 30])},
    "electronic": {"chords": ("other_keys", [88, 89, 90, 95]), "arpeggio": ("other", [80, 81, 87]),
                   "lead": ("other", [81, 82, 84])},
}


def arrangement_parts(rng: np.random.Generator, seconds: float) -> tuple[list[Part], str]:
    """A generated pop, rock or electronic arrangement: a four-chord loop in a random key, with
    chords, an arpeggio or pad and a pentatonic lead (bass and drums are added as for scores)."""
    style = str(rng.choice(list(STYLES)))
    scale = MAJOR if rng.random() < 0.6 else MINOR
    root = int(rng.integers(48, 60))
    bar = 4 * 60.0 / float(rng.uniform(80, 150))
    progression = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    bars = int(np.ceil(seconds / bar))
    chords = []  # (start, triad pitches) per bar
    for b in range(bars):
        degree = progression[b % len(progression)]
        triad = [root + scale[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)]
        chords.append((b * bar, triad))
    parts = []
    for name, (category, programs) in STYLES[style].items():
        notes: list[tuple[float, float, int, int]] = []
        if name == "chords":
            hits = 8 if style == "rock" else 2  # rock: eighth-note power chords; else half notes
            for start, triad in chords:
                voicing = [triad[0], triad[0] + 7, triad[0] + 12] if style == "rock" else triad
                for h in range(hits):
                    t = start + h * bar / hits
                    notes += [(t, bar / hits * 0.9, p, int(rng.integers(70, 110))) for p in voicing]
        elif name == "pad":
            notes = [(start, bar, p + 12, int(rng.integers(50, 80))) for start, triad in chords for p in triad]
        elif name == "arpeggio":
            for start, triad in chords:
                steps = [triad[0], triad[1], triad[2], triad[1] + 12]
                notes += [(start + i * bar / 16, bar / 16 * 0.8, steps[i % 4] + 12, int(rng.integers(60, 100)))
                          for i in range(16)]
        else:  # lead: a pentatonic random walk in eighths, an octave above the chords
            pentatonic = [scale[i] for i in (0, 1, 2, 4, 5)]
            pitch, t = 2, 0.0
            while t < seconds:
                pitch = int(np.clip(pitch + rng.integers(-2, 3), 0, 9))
                length = bar / 8 * float(rng.choice([1, 1, 2, 3]))
                if rng.random() > 0.2:  # rests
                    notes.append((t, length * 0.9, root + 12 + 12 * (pitch // 5) + pentatonic[pitch % 5],
                                  int(rng.integers(70, 115))))
                t += length
        notes = [n for n in notes if n[0] < seconds]
        parts.append(Part(category, name, int(rng.choice(programs)), notes))
    return parts, f"{style} arrangement, key {root % 12} {'major' if scale == MAJOR else 'minor'}"


def _loop(notes: list[tuple[float, float, int, int]], seconds: float) -> list[tuple[float, float, int, int]]:
    """Repeats a short piece until it fills `seconds`."""
    end = max(s + d for s, d, _, _ in notes)
    out, offset = [], 0.0
    while offset < seconds and end > 0:
        out += [(s + offset, d, p, v) for s, d, p, v in notes if s + offset < seconds]
        offset += end
    return out


def drum_part(rng: np.random.Generator, seconds: float) -> Part:
    """A generated kit groove (GM percussion): kick, snare, hats/rides, crashes, fills."""
    bpm = float(rng.uniform(70, 170))
    step = 60.0 / bpm / 4  # sixteenth notes
    kicks = [[0, 8], [0, 6, 8], [0, 3, 8, 11], [0, 10]]
    snares = [[4, 12], [4, 12, 15], [12]]
    kick, snare = kicks[int(rng.integers(len(kicks)))], snares[int(rng.integers(len(snares)))]
    hat_pitch = int(rng.choice([42, 44, 46, 51, 53]))
    hat_every = int(rng.choice([1, 2, 2, 4]))
    notes = []
    steps = int(seconds / step)
    for s in range(steps):
        t, pos = s * step, s % 16
        if pos in kick:
            notes.append((t, step, 36, int(rng.integers(90, 127))))
        if pos in snare:
            notes.append((t, step, int(rng.choice([38, 40])), int(rng.integers(80, 127))))
        if pos % hat_every == 0:
            notes.append((t, step, hat_pitch, int(rng.integers(40, 110))))
        if s % 64 == 0:
            notes.append((t, 4 * step, int(rng.choice([49, 57, 55])), int(rng.integers(80, 120))))
        if s % 64 >= 60 and rng.random() < 0.6:
            notes.append((t, step, int(rng.choice([41, 43, 45, 47, 48, 50])), int(rng.integers(70, 120))))
    return Part("drums", "kit", 0, notes, drums=True)


def bass_part(parts: list[Part], rng: np.random.Generator, seconds: float) -> Part:
    """A bass line on the lowest notes of the score (or a random riff), in the bass register."""
    lowest: dict[float, int] = {}
    for part in parts:
        for s, _, p, _ in part.notes:
            lowest[round(s, 2)] = min(lowest.get(round(s, 2), 127), p)
    program = int(rng.choice(BASS_PROGRAMS))
    if not lowest:
        root = int(rng.integers(28, 40))
        lowest = {i * 0.5: root + int(rng.choice([0, 5, 7, 12])) for i in range(int(seconds * 2))}
    times = sorted(lowest)
    notes = []
    for a, b in zip(times, times[1:] + [seconds]):
        pitch = lowest[a]
        while pitch > 52:
            pitch -= 12
        notes.append((a, max(b - a, 0.08) * 0.9, max(pitch, 28), int(rng.integers(80, 120))))
    return Part("bass", "bass", program, notes)


@functools.lru_cache(maxsize=4)
def _synth(soundfont: str, rate: int):  # noqa: ANN202
    """One synthesizer per soundfont and process: loading MuseScore's .sf3 takes seconds."""
    import fluidsynth

    synth = fluidsynth.Synth(samplerate=float(rate))
    return synth, synth.sfload(soundfont)


def render(part: Part, soundfont: str, rate: int, seconds: float, gain: float = 0.4) -> np.ndarray:
    """Renders exactly `seconds` of one part -> (2, samples) float32; held notes are cut and faded."""
    synth, sfid = _synth(soundfont, rate)
    synth.system_reset()
    synth.get_samples(rate)  # let reverb and release tails of the previous part die away
    synth.setting("synth.gain", float(gain))
    channel = 9 if part.drums else 0
    synth.program_select(channel, sfid, 128 if part.drums else 0, part.program)
    events = sorted([(s, 1, p, v) for s, d, p, v in part.notes] + [(s + d, 0, p, 0) for s, d, p, v in part.notes])
    total = int(seconds * rate)
    out = np.zeros(total * 2, np.int16)
    pos = 0
    for time, on, pitch, velocity in events:
        at = min(int(time * rate), total)
        if at > pos:
            out[2 * pos:2 * at] = synth.get_samples(at - pos)
            pos = at
        if pos >= total:
            break
        if on:
            synth.noteon(channel, pitch, velocity)
        else:
            synth.noteoff(channel, pitch)
    if pos < total:
        out[2 * pos:] = synth.get_samples(total - pos)
    synth.all_sounds_off(channel)
    audio = out.reshape(-1, 2).T.astype(np.float32) / 32768.0
    fade = min(int(0.05 * rate), total)
    audio[:, total - fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
    return audio


def synth_track(out: Path, index: int, seed: int, seconds: float, rate: int, paths: list[str],
                soundfonts: list[str], kits: tuple = (), production: bool = True) -> float:
    """Renders one track folder; returns its duration in seconds.

    Half the tracks are a corpus score, half a generated pop/rock/electronic arrangement
    (arrangement_parts). Drums are a recorded kit when kits are given (4 in 5 tracks), else
    FluidSynth's. With production, each stem goes through production.process_stem and
    mixture.flac is the mastered mix (production.master): then the stems are the pre-master
    stems and do not sum to it exactly; without it mixture.flac is their sum.
    """
    import soundfile as sf

    rng = np.random.default_rng([seed, index])
    track_id = f"synth-{seed:04d}-{index:05d}"
    folder = out / track_id
    if (folder / "data.json").exists():
        return seconds  # already rendered (the command is resumable)
    soundfont = soundfonts[int(rng.integers(len(soundfonts)))]
    source = "score" if paths and rng.random() < 0.5 else "arrangement"
    if source == "score":
        parts, title = score_parts(paths[int(rng.integers(len(paths)))], rng, seconds)
    else:
        parts, title = arrangement_parts(rng, seconds)
    stems = list(parts)
    if rng.random() < 0.8:
        stems.append(drum_part(rng, seconds))
    if rng.random() < 0.8:
        stems.append(bass_part(parts, rng, seconds))
    if not stems:
        stems.append(drum_part(rng, seconds))
    kit = kits[int(rng.integers(len(kits)))] if kits and rng.random() < 0.8 else None
    kit = kit if any(part.drums for part in stems) else None
    rendered = []
    for part in stems:
        gain = float(rng.uniform(0.2, 0.6))
        if part.drums and kit is not None:
            from .drumkits import render_kit

            rendered.append(render_kit(part.notes, kit, rate, seconds, rng, gain=gain))
        else:
            rendered.append(render(part, soundfont, rate, seconds, gain=gain))
    if production:
        from .production import master, process_stem

        rendered = [process_stem(audio, part.category, rate, rng) for part, audio in zip(stems, rendered)]
    total = sum(rendered)
    peak = float(np.abs(total).max())
    scale = 0.9 / peak if peak > 0.9 else 1.0
    mixture = master(total * scale, rate, rng) if production else total * scale
    tmp = out / f".{track_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    names: dict[str, int] = {}
    meta_stems = []
    for part, audio in zip(stems, rendered):
        n = names[part.category] = names.get(part.category, 0) + 1
        path = tmp / part.category / f"{part.name}-{n}.flac"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), (audio * scale).T, rate, subtype="PCM_24")
        meta_stems.append({"category": part.category, "file": str(path.relative_to(tmp)), "program": part.program})
    sf.write(str(tmp / "mixture.flac"), mixture.T, rate, subtype="PCM_24")
    meta = {"id": track_id, "song": title, "source": source, "artist": "apollo synth", "genre": "synthetic",
            "soundfont": Path(soundfont).name, "drums": kit.name if kit is not None else "soundfont",
            "production": production, "split": split_of(track_id), "stems": meta_stems,
            "sample_rate": rate, "seconds": seconds}
    (tmp / "data.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return seconds


def synth_corpus(out: str | Path, hours: float, seed: int = 0, rate: int = 44100, track_seconds: float = 30.0,
                 workers: int = 2, progress: bool = True, instruments: str | Path | None = None,
                 production: bool = True) -> int:
    """Renders `hours` of multi-stem music into `out`; returns the number of tracks.

    instruments: the folder of `apollo data instruments` (recorded drum kits, the lossless
    soundfont), used beside the system's soundfonts; production: the production chain.
    """
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    count = max(1, int(np.ceil(hours * 3600 / track_seconds)))
    for module in ("music21", "fluidsynth", *(("pedalboard",) if production else ())):
        require(module, "synth", "apollo data synth")  # checked up front: one clear line, not a worker's traceback
    kits: tuple = ()
    soundfonts: list[str] = []
    if instruments is not None:
        from .drumkits import find_kits, find_soundfonts

        if not Path(instruments).is_dir():
            raise FileNotFoundError(f"{instruments}: no such folder (apollo data instruments --out {instruments})")
        kits = tuple(find_kits(instruments))
        soundfonts = [str(f) for f in find_soundfonts(instruments)]
    soundfonts = soundfonts or default_soundfonts()
    paths = score_paths()
    args = [(out, i, seed, track_seconds, rate, paths, soundfonts, kits, production) for i in range(count)]
    bar = tqdm(total=count, unit="track", desc="synth", disable=not progress)
    if workers <= 1:
        for a in args:
            synth_track(*a)
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for _ in pool.map(synth_track, *zip(*args)):
                bar.update()
    bar.close()
    return count
