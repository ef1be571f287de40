"""The offline synthetic corpus (needs FluidSynth and the GM soundfonts from .ci/apt-packages.txt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import welch

from apollo.data.readers import read_tracks

fluidsynth = pytest.importorskip("fluidsynth", reason="pyfluidsynth / libfluidsynth not installed")


def test_synth_few_seconds(tmp_path):
    from apollo.data.synth import synth_corpus

    count = synth_corpus(tmp_path, hours=2 * 4 / 3600, seed=3, track_seconds=4, workers=1, progress=False,
                         production=False)
    assert count == 2
    folders = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(folders) == 2
    found_high = False
    for folder in folders:
        meta = json.loads((folder / "data.json").read_text())
        mixture, rate = sf.read(str(folder / "mixture.flac"))
        assert rate == 44100 and mixture.shape == (4 * 44100, 2)
        stems = [sf.read(str(folder / s["file"]))[0] for s in meta["stems"]]
        assert len(stems) >= 1
        assert np.abs(sum(stems) - mixture).max() < 1e-4  # stems sum to the mixture
        for s, stem in zip(meta["stems"], stems):
            freqs, power = welch(stem.mean(1), rate, nperseg=4096)
            if s["category"] == "drums":
                share = power[freqs > 15000].sum() / power.sum()
                found_high |= share > 1e-4
    assert found_high, "cymbals and hats should put energy above 15 kHz"
    tracks = read_tracks(tmp_path)
    assert len(tracks) == 2 and all(t.stems for t in tracks)


def test_score_parts_takes_the_first_piece_of_an_opus(monkeypatch):
    """Some corpus files parse to an Opus (several pieces), which has no .parts (crashed synth)."""
    from music21 import converter, note, stream

    from apollo.data.synth import score_parts

    def piece(pitch: str) -> stream.Score:
        part = stream.Part()
        for _ in range(4):
            part.append(note.Note(pitch, quarterLength=1.0))
        score = stream.Score()
        score.insert(0, part)
        return score

    opus = stream.Opus()
    opus.append(piece("C4"))
    opus.append(piece("G4"))
    monkeypatch.setattr(converter, "parse", lambda path: opus)
    parts, title = score_parts("/corpus/opus.mxl", np.random.default_rng(0), seconds=4.0)
    assert title == "opus" and len(parts) == 1
    pitches = {p for _, _, p, _ in parts[0].notes}
    assert len(pitches) == 1  # only the first piece's C4, transposed by one random shift
    assert parts[0].notes and all(0 <= s < 4.0 for s, _, _, _ in parts[0].notes)


def test_produced_tracks_with_recorded_kits(tmp_path):
    pytest.importorskip("pedalboard")
    from test_production import _kit

    from apollo.data.production import CEILING
    from apollo.data.synth import synth_corpus

    _kit(tmp_path / "instruments" / "kit")
    synth_corpus(tmp_path / "corpus", hours=6 * 3 / 3600, seed=11, track_seconds=3, workers=1, progress=False,
                 instruments=tmp_path / "instruments")
    metas = [json.loads(p.read_text()) for p in sorted((tmp_path / "corpus").glob("*/data.json"))]
    assert len(metas) == 6 and all(m["production"] for m in metas)
    assert any(m["drums"] == "Test Kit" for m in metas)  # 4 in 5 drum stems are the recorded kit
    assert {m["source"] for m in metas} == {"score", "arrangement"}  # scores and pop/rock/electronic arrangements
    for meta in metas:
        mixture, _ = sf.read(str(tmp_path / "corpus" / meta["id"] / "mixture.flac"))
        assert np.abs(mixture).max() <= CEILING + 1e-4  # mastered: limited at -1 dBFS, never clipped
