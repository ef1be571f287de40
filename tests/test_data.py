"""Dataset readers, lossy-target detection, silence removal, the cache and training examples."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from apollo import degrade
from apollo.data.cache import Cache, prepare
from apollo.data.examples import DarkSource, ExampleConfig, TrainingExamples, darken
from apollo.data.readers import cliff_frequency, read_tracks
from apollo.data.silence import active_windows
from apollo.training.config import DataConfig

SR = 44100


def _noise(seconds: float, seed: int = 0, level: float = 0.1) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal((int(seconds * SR), 2))).astype(np.float32)


def _write(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, SR)
    return path


@pytest.fixture()
def musdb(tmp_path):
    root = tmp_path / "musdb"
    for split, names in (("train", ["A", "B"]), ("test", ["C"])):
        for i, name in enumerate(names):
            stems = {s: _noise(7, seed=10 * i + k, level=0.05)
                     for k, s in enumerate(["vocals", "drums", "bass", "other"])}
            for s, d in stems.items():
                _write(root / split / name / f"{s}.wav", d)
            _write(root / split / name / "mixture.wav", sum(stems.values()))
    return root


@pytest.fixture()
def moises(tmp_path):
    root = tmp_path / "moises"
    for t in ("id1", "id2"):
        (root / t).mkdir(parents=True)
        (root / t / "data.json").write_text(json.dumps({"song": t, "stems": []}))
        _write(root / t / "guitar" / "g1.wav", _noise(7, 1))
        _write(root / t / "guitar" / "g2.wav", _noise(7, 2))
        _write(root / t / "drums" / "kit.wav", _noise(7, 3))
    return root


def test_musdb_reader(musdb):
    tracks = read_tracks(musdb)
    assert [(t.name, t.split) for t in tracks] == [("A", "train"), ("B", "train"), ("C", "test")]
    from apollo.data.readers import split_of

    names = [f"track {i}" for i in range(400)]  # ~10% of MUSDB's train folder is held out
    held_out = sum(split_of(n, valid=0.1, test=0.0) == "valid" for n in names)
    assert 20 < held_out < 60 and all(split_of(n, valid=0.1, test=0.0) != "test" for n in names)
    assert set(tracks[0].stems) == {"vocals", "drums", "bass", "other"} and tracks[0].mixture.name == "mixture.wav"
    assert [t.name for t in read_tracks(musdb, split="test")] == ["C"]
    assert [t.name for t in read_tracks(musdb, split="train")] == ["A", "B"]


def test_moisesdb_reader(moises):
    tracks = read_tracks(moises)
    assert [t.name for t in tracks] == ["id1", "id2"]
    assert {k: len(v) for k, v in tracks[0].stems.items()} == {"drums": 1, "guitar": 2}
    assert tracks[0].mixture is None


def test_folder_reader_skips_lossy_targets(tmp_path):
    clean = _noise(6)
    _write(tmp_path / "f" / "good.wav", clean)
    coded = degrade.mp3(clean.T, SR, 128).T
    _write(tmp_path / "f" / "was_mp3.wav", coded)  # decoded MP3 hiding in a lossless container
    (tmp_path / "f" / "song.mp3").write_bytes(degrade.encode_mp3(clean.T, SR, 128))
    with pytest.warns(UserWarning) as caught:
        tracks = read_tracks(tmp_path / "f")
    assert [t.name for t in tracks] == ["good.wav"]
    messages = " ".join(str(w.message) for w in caught)
    assert "spectral cliff" in messages and "lossy .mp3" in messages


def test_cliff_detector_ignores_natural_rolloff():
    from scipy.signal import lfilter

    x = np.random.default_rng(0).standard_normal(5 * SR)
    assert cliff_frequency(x, SR) is None
    dull = lfilter([0.05], [1, -0.95], x)  # one-pole lowpass: -6 dB/octave, no cliff
    assert cliff_frequency(dull, SR) is None
    assert cliff_frequency(np.zeros(SR), SR) is None
    tone = np.sin(2 * np.pi * 300 * np.arange(2 * SR) / SR)  # nothing above 300 Hz, but no codec did that
    assert cliff_frequency(tone, SR) is None
    stereo = np.stack([x, np.roll(x, 1000)]).astype(np.float32) * 0.1
    assert 9000 < cliff_frequency(degrade.mp3(stereo, SR, 64).mean(0), SR) < 13000
    mono = degrade.mp3(x.astype(np.float32) * 0.1, SR, 64)  # mono keeps more bandwidth
    assert 15000 < cliff_frequency(mono, SR) < 18500


def test_silence_removal_on_constructed_signal():
    # 0-12 s loud, 12-24 s digital silence, 24-27 s quiet hiss, 27-39 s loud. The hiss is 11% of
    # the non-silent frames, so the 15th-percentile threshold lies above it: it counts as inactive.
    parts = [_noise(12, 1).T, np.zeros((2, 12 * SR), np.float32), _noise(3, 2, level=1e-4).T, _noise(12, 3).T]
    x = np.concatenate(parts, axis=1)
    windows = active_windows(x, SR)
    starts = [s // SR for s, _ in windows]
    assert all(e - s == 6 * SR for s, e in windows)
    assert starts == [0, 3, 6, 27, 30, 33]  # 9 and 24 hold exactly half active frames: not "more than half"
    assert active_windows(np.zeros((2, 10 * SR)), SR) == []
    steady = np.sin(2 * np.pi * 441 * np.arange(12 * SR) / SR)  # equal power in every frame
    assert [s // SR for s, _ in active_windows(steady, SR)] == [0, 3, 6]


def test_prepare_cache_and_reads(musdb, tmp_path):
    index = prepare(musdb, tmp_path / "cache", progress=False)
    data = json.loads(index.read_text())
    assert len(data["tracks"]) == 3 and data["sample_rate"] == SR
    cache = Cache(tmp_path / "cache", split="train")
    track = cache.tracks[0]
    assert set(track["stems"]) == {"vocals", "drums", "bass", "other"} and track["windows"][0] == [0, 6 * SR]
    original, _ = sf.read(str(musdb / "train" / "A" / "drums.wav"), dtype="float32")
    got = cache.read(track["stems"]["drums"], track["scales"]["drums"], 1000, 500)
    assert np.abs(got - original[1000:1500].T).max() < 1e-4
    # resumable: a second run adds nothing and keeps the index
    prepare(musdb, tmp_path / "cache", progress=False)
    assert len(json.loads(index.read_text())["tracks"]) == 3
    # a data worker gets the index, not the arrays this reader has mapped, and reads the same
    sent = pickle.dumps(cache)
    assert len(sent) < 20_000 < cache._maps[track["stems"]["drums"]].nbytes
    assert np.array_equal(pickle.loads(sent).read(track["stems"]["drums"], track["scales"]["drums"], 1000, 500), got)


def _worker_draws(dataset, workers):
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, shuffle=False)
    return [int(bitrate) for _, _, bitrate, _ in loader]


def test_training_examples(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    ds = TrainingExamples(tmp_path / "cache", ExampleConfig(), seed=1, length=8)
    degraded, target, bitrate, darkened = ds[0]
    assert degraded.shape == target.shape == (2, 3 * SR)
    peak = max(degraded.abs().max(), target.abs().max())
    assert abs(float(peak) - 1.0) < 1e-5  # peak-normalised together
    assert bitrate in degrade.PAPER_BITRATES
    assert darkened is False  # no dark sources asked for
    # deterministic per index, different across indices and epochs
    again = TrainingExamples(tmp_path / "cache", ExampleConfig(), seed=1, length=8)  # a second reader, e.g. a worker
    assert torch.equal(ds[3][1], again[3][1]) and torch.equal(ds[3][0], again[3][0])
    assert not torch.equal(ds[3][1], ds[4][1])
    draws = [ds.draw(i) for i in range(200)]
    assert len({d["bitrate"] for d in draws}) == 6
    stem_draws = [d for d in draws if d["parts"][0][0] != "mixture"]
    assert 0.3 < len(stem_draws) / 200 < 0.7
    assert {len(d["parts"]) for d in stem_draws} == set(range(1, 9))
    gains = [g for d in stem_draws for *_, g in d["parts"]]
    assert min(gains) == -10 and max(gains) == 10
    ds.set_epoch(1)
    assert [d["bitrate"] for d in draws[:20]] != [ds.draw(i)["bitrate"] for i in range(20)]


def test_draws_vary_within_and_across_workers(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    ds = TrainingExamples(tmp_path / "cache", ExampleConfig(segment=0.5), seed=2, length=16)
    parallel = _worker_draws(ds, 2)
    assert parallel == _worker_draws(ds, 0)  # same examples whatever the worker count
    even, odd = parallel[0::2], parallel[1::2]  # DataLoader deals items to workers in turn
    assert len(set(even)) > 1 and len(set(odd)) > 1  # no worker is frozen on one bitrate


def test_load_track_sums_stems_of_unequal_length(tmp_path):
    from apollo.data.cache import load_track
    from apollo.data.readers import Track

    long, short = _noise(2, 1), _noise(1, 2)
    track = Track("t", {"a": [_write(tmp_path / "a.wav", long)], "b": [_write(tmp_path / "b.wav", short)]})
    stems, mixture = load_track(track, SR)
    assert {k: v.shape for k, v in stems.items()} == {"a": (2, 2 * SR), "b": (2, 2 * SR)}
    assert np.abs(stems["b"][:, SR:]).max() == 0  # padded with silence
    np.testing.assert_allclose(mixture, stems["a"] + stems["b"])
    assert load_track(Track("empty"), SR) == ({}, None)


def test_single_stem_probability(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    plain = TrainingExamples(tmp_path / "cache", ExampleConfig(), seed=1, length=8)
    lone = TrainingExamples(tmp_path / "cache", ExampleConfig(single_stem_probability=0.6), seed=1, length=8)
    counts = {name: [len(d["parts"]) for d in (ds.draw(i) for i in range(400)) if d["parts"][0][0] != "mixture"]
              for name, ds in (("plain", plain), ("lone", lone))}
    share = {name: sum(c == 1 for c in got) / len(got) for name, got in counts.items()}
    assert 0.05 < share["plain"] < 0.22  # uniform 1..8: one in eight
    assert 0.55 < share["lone"] < 0.8  # 0.6 + 0.4 / 8
    assert max(counts["lone"]) == 8  # the other draws still sum up to 8 stems


def test_darken_probability_lowpasses_that_share_of_targets(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    config = ExampleConfig(segment=0.5, bitrates=(128,))
    plain = TrainingExamples(tmp_path / "cache", config, seed=1, length=8)
    dark = TrainingExamples(tmp_path / "cache", dataclasses.replace(config, dark_sources=(
        DarkSource(probability=0.5, hz=(1500.0, 3000.0)),)), seed=1, length=8)
    draws = [(plain.draw(i), dark.draw(i)) for i in range(200)]
    # the corner is drawn last, so every other choice is the undarkened recipe's
    assert all(a["parts"] == b["parts"] and a["bitrate"] == b["bitrate"] for a, b in draws)
    assert all(a["darken_hz"] is None for a, _ in draws)
    corners = [b["darken_hz"] for _, b in draws if b["darken_hz"] is not None]
    assert 0.35 < len(corners) / len(draws) < 0.65 and all(1500 <= c <= 3000 for c in corners)
    index = next(i for i, (_, b) in enumerate(draws) if b["darken_hz"] is not None)
    corner = draws[index][1]["darken_hz"]

    def high_share(x: torch.Tensor) -> float:  # energy above 4x the corner, as a share of the whole
        power = np.abs(np.fft.rfft(x.numpy().mean(0))) ** 2
        return float(power[np.fft.rfftfreq(x.shape[-1], 1 / SR) > 4 * corner].sum() / power.sum())

    _, white, _, plain_told = plain[index]
    _, darkened, _, dark_told = dark[index]
    # a dark source is withheld from the trainer's "unknown" row as often as any example by default
    assert plain_told is False and dark_told is False and draws[index][1]["always_told"] is False
    assert high_share(white) > 0.3  # white-noise stems
    assert high_share(darkened) < 1e-4  # 4th order: -48 dB two octaves up
    with pytest.raises(ValueError, match="darken probability"):
        DarkSource(probability=1.5)
    with pytest.raises(ValueError, match="darken hz"):
        DarkSource(hz=(3000.0, 1000.0))


@pytest.mark.parametrize("order", [1, 2, 4])
def test_darken_falls_12_db_an_octave_per_order(order):
    # an octave over the corner a zero-phase Butterworth of `order` is 12 * order dB down (a little
    # more: the digital filter's bilinear warping); an octave under it, twice 10 log10(1 + 4^-order)
    t = np.arange(SR) / SR
    levels = {}
    for hz in (6000.0, 1500.0):
        tone = np.sin(2 * np.pi * hz * t)[None].astype(np.float32)
        out = darken(tone, 3000.0, SR, order)[:, SR // 4: -SR // 4]  # away from the ends' transients
        levels[hz] = 20 * np.log10(np.sqrt(2 * np.mean(out**2)))
    assert 12 * order < -levels[6000.0] < 12 * order + 4
    assert abs(-levels[1500.0] - 20 * np.log10(1 + 4.0**-order)) < 0.1
    assert darken(tone, None, SR, order) is tone


def test_darken_octaves_keeps_corners_under_the_codec_cutoff(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    source = DarkSource(probability=1.0, hz=(1000.0, 8000.0), octaves=1.0)
    config = ExampleConfig(segment=0.5, bitrates=(24, 128), dark_sources=(source,))
    examples = TrainingExamples(tmp_path / "cache", config, seed=1, length=8)
    draws = [examples.draw(i) for i in range(200)]
    corners = {b: [d["darken_hz"] for d in draws if d["bitrate"] == b] for b in (24, 128)}
    low = degrade.codec_cutoff_hz(SR, 24) / 2  # about 1.95 kHz: one octave under 24 kbps's cutoff
    assert all(c is not None and 1000 <= c <= low for c in corners[24])
    assert max(corners[128]) > 4000 and all(c <= 8000 for c in corners[128])
    # a range entirely above the allowed corner leaves that bitrate undarkened
    above = dataclasses.replace(config, dark_sources=(dataclasses.replace(source, hz=(2500.0, 8000.0)),))
    examples = TrainingExamples(tmp_path / "cache", above, seed=1, length=8)
    draws = [examples.draw(i) for i in range(100)]
    assert all((d["darken_hz"] is None) == (d["bitrate"] == 24) for d in draws)
    with pytest.raises(ValueError, match="darken octaves"):
        DarkSource(octaves=-1.0)


def test_two_dark_sources_mix_low_corners_everywhere_with_high_corners_where_there_is_room(musdb, tmp_path):
    prepare(musdb, tmp_path / "cache", progress=False)
    low = DarkSource(probability=0.2, hz=(1000.0, 8000.0), octaves=1.0)
    high = DarkSource(probability=0.4, hz=(6000.0, 12000.0), octaves=0.5)
    config = ExampleConfig(segment=0.5, bitrates=(24, 128), dark_sources=(low,))
    one = TrainingExamples(tmp_path / "cache", config, seed=1, length=8)
    two = TrainingExamples(tmp_path / "cache", dataclasses.replace(config, dark_sources=(low, high)), seed=1, length=8)
    draws = [(one.draw(i), two.draw(i)) for i in range(600)]
    # the first source's examples are the one-source recipe's, corner and all
    assert all(b["darken_hz"] == a["darken_hz"] for a, b in draws if a["darken_hz"] is not None)
    added = [b for a, b in draws if a["darken_hz"] is None and b["darken_hz"] is not None]
    # 24 kbps (cutoff ~3.9 kHz) has no room for a 6-kHz corner half an octave under it
    assert added and all(b["bitrate"] == 128 and 6000 <= b["darken_hz"] <= 12000 for b in added)
    at_128 = [b for _, b in draws if b["bitrate"] == 128]
    assert 0.45 < sum(b["darken_hz"] is not None for b in at_128) / len(at_128) < 0.75  # 0.2 + 0.4
    at_24 = [b for _, b in draws if b["bitrate"] == 24]
    assert 0.1 < sum(b["darken_hz"] is not None for b in at_24) / len(at_24) < 0.3  # the low source only
    # one source never withheld: its examples, and only those, are flagged for the trainer to tell
    kept_told = TrainingExamples(tmp_path / "cache", dataclasses.replace(
        config, dark_sources=(low, dataclasses.replace(high, withheld=False))), seed=1, length=8)
    flagged = [kept_told.draw(i) for i in range(600)]
    assert all(f["always_told"] == (a["darken_hz"] is None and b["darken_hz"] is not None)
               for f, (a, b) in zip(flagged, draws))
    first = next(i for i, f in enumerate(flagged) if f["always_told"])
    assert kept_told[first][3] is True and kept_told[0][3] is flagged[0]["always_told"]
    # the run-wide switch (data.withhold_dark_sources false) tells every dark source; true keeps each one's own
    data = DataConfig(darken_probability=0.2, more_dark_sources=(high, dataclasses.replace(low, withheld=False)))
    assert [d.withheld for d in data.examples().dark_sources] == [True, True, False]
    data.withhold_dark_sources = False
    assert [d.withheld for d in data.examples().dark_sources] == [False, False, False]
    # a bitrate list keeps a source to those bitrates, whatever room the others have
    only_24 = dataclasses.replace(config, dark_sources=(dataclasses.replace(low, probability=1.0, bitrates=(24,)),))
    limited = TrainingExamples(tmp_path / "cache", only_24, seed=1, length=8)
    assert all((d["darken_hz"] is not None) == (d["bitrate"] == 24) for d in map(limited.draw, range(100)))
    with pytest.raises(ValueError, match="add up to more than 1"):
        ExampleConfig(dark_sources=(low, dataclasses.replace(high, probability=0.9)))
    # a source kept to a bitrate the run never draws would silently never fire
    with pytest.raises(ValueError, match=r"bitrates \[96\] kbps that this run never draws"):
        ExampleConfig(bitrates=(24, 128), dark_sources=(dataclasses.replace(high, bitrates=(96, 128)),))


def test_two_caches_train_as_one_pool(musdb, moises, tmp_path):
    prepare(musdb, tmp_path / "a", progress=False)
    prepare(moises, tmp_path / "b", progress=False)
    both = Cache([tmp_path / "a", tmp_path / "b"])
    names = {t["name"] for t in both.tracks}
    assert names == ({t["name"] for t in Cache(tmp_path / "a").tracks}
                     | {t["name"] for t in Cache(tmp_path / "b").tracks})
    config = ExampleConfig(segment=0.5, examples_per_epoch=40, bitrates=(128,))
    examples = TrainingExamples(both, config, split=None)
    drawn = {part[1]["name"] for i in range(40) for part in examples.draw(i)["parts"]}
    assert drawn & {"A", "B", "C"} and drawn & {"id1", "id2"}  # both corpora feed the examples
    track = next(t for t in both.tracks if t["name"] == "id1")
    assert both.read(track["stems"]["drums"], track["scales"]["drums"], 0, 100).shape == (2, 100)
    with pytest.raises(FileNotFoundError, match="apollo data prepare"):
        Cache([tmp_path / "a", tmp_path / "missing"])


def test_cache_shares_set_each_caches_part(musdb, moises, tmp_path):
    prepare(musdb, tmp_path / "a", progress=False)
    prepare(moises, tmp_path / "b", progress=False)
    both = Cache([tmp_path / "a", tmp_path / "b"])
    config = ExampleConfig(segment=0.5, examples_per_epoch=400, bitrates=(128,))

    def share_of_b(examples: TrainingExamples) -> float:
        draws = [examples.draw(i)["parts"] for i in range(400)]
        return float(np.mean([all(part[1]["cache"] == 1 for part in parts) for parts in draws]))

    pooled = TrainingExamples(both, config, split=None)
    shared = TrainingExamples(both, dataclasses.replace(config, cache_shares=(0.4, 0.6)), split=None)
    only_a = TrainingExamples(both, dataclasses.replace(config, cache_shares=(1.0, 0.0)), split=None)
    assert 0.52 < share_of_b(shared) < 0.68  # 240 of 400 expected, binomial sd 10
    assert share_of_b(only_a) == 0.0
    for i in range(40):  # one cache's example never mixes in the other's stems
        assert len({part[1]["cache"] for part in shared.draw(i)["parts"]}) == 1
    assert share_of_b(pooled) < 0.3  # pooled, these fixtures' tracks give b about a fifth
    with pytest.raises(ValueError, match="add up to 1"):
        ExampleConfig(cache_shares=(0.5, 0.6))
    with pytest.raises(ValueError, match="1 cache shares given for 2 caches"):
        TrainingExamples(both, dataclasses.replace(config, cache_shares=(1.0,)), split=None)
