"""Metrics against hand-computed values, alignment, the report and the benchmark command."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import apollo
from apollo import metrics
from apollo.cli import main
from apollo.model.config import ApolloConfig

SR = 44100


def _signal(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.stack([np.sin(2 * np.pi * 440 * t) + 0.3 * rng.standard_normal(t.size),
                  np.sin(2 * np.pi * 660 * t) + 0.3 * rng.standard_normal(t.size)])
    return x - x.mean(1, keepdims=True)


def test_identical_signals():
    x = _signal()
    assert metrics.sdr(x, x) > 100 and metrics.si_snr(x, x) > 100
    assert metrics.lsd(x, x, SR) == pytest.approx(0.0, abs=1e-9)


def test_known_gain():
    x = _signal()
    assert metrics.sdr(x, 0.5 * x) == pytest.approx(10 * math.log10(1 / 0.25), abs=1e-6)  # 6.02 dB
    assert metrics.si_snr(x, 0.5 * x) > 100  # scale does not count
    # a gain of 0.5 is -6.02 dB at every bin and frame
    assert metrics.lsd(x, 0.5 * x, SR) == pytest.approx(20 * math.log10(2), abs=1e-3)


def test_known_noise():
    x = _signal()
    noise = 0.1 * np.random.default_rng(9).standard_normal(x.shape)
    noise -= noise.mean(1, keepdims=True)
    expected = np.mean([10 * np.log10((x[c] ** 2).sum() / (noise[c] ** 2).sum()) for c in range(2)])
    assert metrics.sdr(x, x + noise) == pytest.approx(expected, abs=1e-6)
    # noise orthogonal-ish to x: SI-SNR within a hair of SDR
    assert metrics.si_snr(x, x + noise) == pytest.approx(expected, abs=0.05)


def test_lowpassed_copy():
    from scipy.signal import butter, sosfiltfilt

    x = np.random.default_rng(1).standard_normal((1, 2 * SR))
    low = sosfiltfilt(butter(12, 8000, fs=SR, output="sos"), x)
    cutoff = metrics.cutoff_hz(low, SR)
    assert 7000 < cutoff < 11000
    high = metrics.lsd(x, low, SR, min_hz=cutoff)
    full = metrics.lsd(x, low, SR)
    assert high > 30 and full < high
    assert metrics.lsd(x[:, :SR], low[:, :SR], SR, min_hz=0) == pytest.approx(
        metrics.lsd(x[:, :SR], low[:, :SR], SR), abs=1e-9)


@pytest.mark.parametrize("lag", [0, 123, -457])
def test_alignment_recovers_planted_lag(lag):
    x = _signal(1.0)
    shifted = np.roll(x, lag, axis=1)
    aligned, found = metrics.align(x, shifted, max_lag=2000)
    assert found == lag
    inner = slice(1000, -1000)
    assert np.abs(aligned[:, inner] - x[:, inner]).max() < 1e-6


def test_visqol_orders_quality():
    x = 0.3 * _signal(3.0)
    noisy = x + 0.05 * np.random.default_rng(2).standard_normal(x.shape)
    clean_score = metrics.visqol(x, x, SR)
    noisy_score = metrics.visqol(x, noisy, SR)
    assert clean_score > 4.5 and 1.0 <= noisy_score < clean_score - 0.3


def test_evaluate_pair_cli(tmp_path, capsys):
    x = 0.3 * _signal()
    sf.write(str(tmp_path / "ref.wav"), x.T, SR)
    sf.write(str(tmp_path / "est.wav"), np.roll(x, 50, axis=1).T * 0.5, SR)
    assert main(["evaluate", "--reference", str(tmp_path / "ref.wav"), "--estimate", str(tmp_path / "est.wav"),
                 "--json", "--no-visqol"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lag_fixed_samples"] == 50
    assert result["sdr"] == pytest.approx(6.02, abs=0.1)
    assert set(result) >= {"sdr", "si_snr", "lsd", "lsd_high", "cutoff_hz", "lsd_below", "holes", "hop_comb",
                           "transient_envelope", "level_2-4k"}
    assert result["level_2-4k"] == pytest.approx(-6.02, abs=0.05)  # half the amplitude in every band
    # an unreadable --degraded file is one error line, not a traceback
    assert main(["evaluate", "--reference", str(tmp_path / "ref.wav"), "--estimate", str(tmp_path / "est.wav"),
                 "--degraded", str(tmp_path / "missing.mp3"), "--no-visqol"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("apollo: error:") and "missing.mp3" in err and "Traceback" not in err


def test_report_on_tiny_dataset(tmp_path, capsys):
    root = tmp_path / "musdb" / "test" / "song"
    rng = np.random.default_rng(0)
    t = np.arange(3 * SR) / SR
    stems = {"vocals": np.sin(2 * np.pi * 300 * t), "drums": rng.standard_normal(t.size) * 0.3,
             "bass": np.sin(2 * np.pi * 80 * t), "other": np.sin(2 * np.pi * 1200 * t) * 0.5}
    root.mkdir(parents=True)
    for name, data in stems.items():
        sf.write(str(root / f"{name}.wav"), np.stack([data, data], 1) * 0.2, SR)
    sf.write(str(root / "mixture.wav"), np.stack([sum(stems.values())] * 2, 1) * 0.2, SR)
    out = tmp_path / "report"
    args = ["evaluate", "--data", str(tmp_path / "musdb"), "--checkpoint", "tiny-test", "--bitrates", "32,128",
            "--out", str(out), "--excerpt-seconds", "2", "--workers", "2", "--no-visqol", "-q"]
    assert main(args) == 0
    table = (out / "table.md").read_text()
    for header in ("Vocal", "Single Stem", "Multi-Stems", "Multi-Stems+Vocal", "Overall", "MP3 input", "tiny-test",
                   "32 kbps", "128 kbps"):
        assert header in table
    for metric in ("sdr", "si_snr", "visqol", "lsd", "lsd_high"):
        assert (out / f"{metric}_vs_bitrate.png").stat().st_size > 1000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["count"] == 4 * 2 * 2  # 4 excerpt groups x 2 bitrates x 2 systems
    assert summary["by_bitrate"]["mp3"]["32"]["lsd"] > summary["by_bitrate"]["mp3"]["128"]["lsd"]
    # the diagnostics: 32 kbps MP3 leaves the 8-11 kHz band nearly empty, 128 kbps keeps it
    assert "Diagnostics" in table and "hop comb" in table
    assert summary["by_bitrate"]["mp3"]["32"]["level_8-11k"] < summary["by_bitrate"]["mp3"]["128"]["level_8-11k"] - 10
    rows = (out / "results.csv").read_text().splitlines()
    # resumable: a second run recomputes nothing
    assert main(args) == 0
    assert (out / "results.csv").read_text().splitlines() == rows


def test_benchmark_json(capsys):
    assert main(["benchmark", "--config", "tiny", "--seconds", "0.5", "--repeats", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("parameters", "macs_per_second_mono", "gmacs_per_second_stereo", "rtf", "rtf_runs",
                "peak_memory_mb", "device", "threads", "seconds", "channels"):
        assert key in result
    assert result["parameters"] == 59948 and result["seconds"] == 0.5 and result["channels"] == 2
    # the reported RTF is the median of the timed runs, per second of audio
    assert len(result["rtf_runs"]) == 1 and result["rtf"] == pytest.approx(result["rtf_runs"][0])
    # the MAC count is the model's arithmetic: twice the mono count for stereo, in GMAC
    assert result["gmacs_per_second_stereo"] == pytest.approx(2 * result["macs_per_second_mono"] / 1e9, rel=1e-2)


def test_benchmark_times_the_told_path_of_models_told_bitrates(capsys):
    # the default is told an MP3's bitrate (apollo restore reads it from the frame headers): --bitrate
    # times that path; a model not told bitrates ignores it, and the JSON says which was timed
    args = ["benchmark", "--seconds", "0.5", "--repeats", "1", "--json", "--bitrate", "64"]
    assert main([*args, "--checkpoint", "default"]) == 0
    assert json.loads(capsys.readouterr().out)["bitrate"] == 64
    assert main([*args, "--config", "tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["bitrate"] is None
    assert main(["benchmark", "--config", "tiny", "--seconds", "0.5", "--repeats", "1"]) == 0
    assert "told" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args[:-1], "400", "--config", "tiny"])


def test_excerpts_tolerate_stems_longer_than_the_mixture(tmp_path):
    from apollo.audio import fit_length
    from apollo.evaluate import make_excerpts

    assert fit_length(np.ones((2, 5)), 3).shape == (2, 3)
    assert fit_length(np.ones((2, 5)), 7)[:, 5:].tolist() == [[0, 0], [0, 0]]
    root = tmp_path / "musdb" / "test" / "song"
    root.mkdir(parents=True)
    t = np.arange(3 * SR) / SR
    mix = 0.2 * np.sin(2 * np.pi * 300 * t)
    sf.write(str(root / "mixture.wav"), np.stack([mix, mix], 1), SR)
    longer = np.concatenate([mix, mix[:SR]])  # one second longer than the mixture
    sf.write(str(root / "vocals.wav"), np.stack([longer, longer], 1), SR)
    sf.write(str(root / "drums.wav"), np.stack([mix, mix], 1), SR)
    groups = sorted(e.group for e in make_excerpts(tmp_path / "musdb", seconds=2))
    assert groups == ["multi_stem_vocals", "single_stem", "vocals"]


def test_excerpts_keep_only_the_matching_tracks(tmp_path):
    from apollo.evaluate import make_excerpts

    t = np.arange(3 * SR) / SR
    for name, freq in (("song_a", 300), ("song_b", 500)):
        root = tmp_path / "musdb" / "test" / name
        root.mkdir(parents=True)
        mix = 0.2 * np.sin(2 * np.pi * freq * t)
        sf.write(str(root / "mixture.wav"), np.stack([mix, mix], 1), SR)
    every = make_excerpts(tmp_path / "musdb", seconds=2)
    assert sorted(e.name.split("/")[0] for e in every) == ["song_a", "song_b"]
    kept = make_excerpts(tmp_path / "musdb", seconds=2, match="_b")
    assert [e.name for e in kept] == ["song_b/overall/0"]
    assert make_excerpts(tmp_path / "musdb", seconds=2, match="nothing") == []
    # several names at once (benchmarks/dark_probe.py --match a,b): the tracks that contain any of them
    both = make_excerpts(tmp_path / "musdb", seconds=2, match=["_b", "nothing", "_a"])
    assert sorted(e.name for e in both) == ["song_a/overall/0", "song_b/overall/0"]


def _musdb_track(folder, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    stems = {name: rng.standard_normal(2 * SR) * 0.05 for name in ("drums", "bass")}
    for name, data in stems.items():
        sf.write(str(folder / f"{name}.wav"), np.stack([data, data], 1), SR)
    sf.write(str(folder / "mixture.wav"), np.stack([sum(stems.values())] * 2, 1), SR)


def test_evaluate_valid_split_scores_only_validation_tracks(tmp_path, capsys, monkeypatch):
    import apollo.evaluate as evaluation
    from apollo.data.readers import split_of

    valid_name = next(f"song-{i}" for i in range(1000) if split_of(f"song-{i}", valid=0.1, test=0.0) == "valid")
    train_name = next(f"song-{i}" for i in range(1000) if split_of(f"song-{i}", valid=0.1, test=0.0) == "train")
    _musdb_track(tmp_path / "musdb" / "test" / "held-out", 0)
    _musdb_track(tmp_path / "musdb" / "train" / train_name, 1)
    args = ["evaluate", "--data", str(tmp_path / "musdb"), "--checkpoint", "tiny-test", "--bitrates", "128",
            "--excerpt-seconds", "1", "--workers", "1", "--no-visqol", "-q"]
    # no validation track yet: an error line, not the test or training tracks
    assert main([*args, "--out", str(tmp_path / "none"), "--split", "valid"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apollo: error:") and "no valid excerpts" in err
    _musdb_track(tmp_path / "musdb" / "train" / valid_name, 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # so that --threads 1 is a change to see, on any machine
    seen = []
    real_job = evaluation._job

    def job(args):
        seen.append(torch.get_num_threads())
        return real_job(args)

    monkeypatch.setattr(evaluation, "_job", job)
    assert main([*args, "--out", str(tmp_path / "valid"), "--split", "valid", "--threads", "1"]) == 0
    after = torch.get_num_threads()
    torch.set_num_threads(before)
    assert seen and set(seen) == {1} and after == 2  # --threads holds while it scores, then is given back
    assert main([*args, "--out", str(tmp_path / "test")]) == 0
    scored = {split: {row.split(",")[0].split("/")[0]
                      for row in (tmp_path / split / "results.csv").read_text().splitlines()[1:]}
              for split in ("valid", "test")}
    assert scored == {"valid": {valid_name}, "test": {"held-out"}}


def test_evaluate_scores_reduced_precisions_as_their_own_systems(tmp_path):
    _musdb_track(tmp_path / "musdb" / "test" / "song", 0)
    out = tmp_path / "report"
    assert main(["evaluate", "--data", str(tmp_path / "musdb"), "--checkpoint", "tiny-test", "--bitrates", "128",
                 "--excerpt-seconds", "1", "--workers", "1", "--no-visqol", "--bf16", "--int8", "--out", str(out),
                 "-q"]) == 0
    with open(out / "results.csv") as handle:
        rows = list(csv.DictReader(handle))
    by_system = {row["system"]: float(row["lsd"]) for row in rows if row["excerpt"] == rows[0]["excerpt"]}
    assert set(by_system) == {"mp3", "tiny-test", "tiny-test-bf16", "tiny-test-int8"}
    # the reduced precisions restore the same audio closely, but are really scored separately
    assert len({by_system[s] for s in ("tiny-test", "tiny-test-bf16", "tiny-test-int8")}) == 3
    assert max(abs(by_system[s] - by_system["tiny-test"]) for s in ("tiny-test-bf16", "tiny-test-int8")) < 0.5


@pytest.mark.parametrize("onednn", [True, False])
def test_macs_count_the_same_on_every_linear_path(monkeypatch, onednn):
    from torch.utils.flop_counter import FlopCounterMode

    from apollo import benchmark
    from apollo.model import layers

    if onednn and not layers.ONEDNN_LINEAR:
        pytest.skip("needs oneDNN on an AVX-512 CPU")
    monkeypatch.setattr(layers, "ONEDNN_LINEAR", onednn)  # off: as on CPUs without AVX-512 (one place now)

    torch.manual_seed(0)
    model = apollo.Apollo(ApolloConfig(feature_dim=32, num_blocks=2, num_heads=2)).eval()
    counter = FlopCounterMode(display=False)
    with torch.enable_grad(), counter:  # gradients on: plain F.linear, which PyTorch counts itself
        model(torch.zeros(1, 1, model.config.sample_rate))
    assert benchmark.macs_per_second(model) == counter.get_total_flops() / 2 > 1e8


def test_a_missing_extra_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch):
    import sys

    x = 0.3 * _signal()
    sf.write(str(tmp_path / "ref.wav"), x.T, SR)
    monkeypatch.setitem(sys.modules, "visqol", None)  # as if visqol-python were not installed
    assert main(["evaluate", "--reference", str(tmp_path / "ref.wav"), "--estimate", str(tmp_path / "ref.wav")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("apollo: error: ViSQOL") and 'pip install "apollo-restore[eval]"' in err
    assert "Traceback" not in err


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--data", str(tmp_path), "--checkpoint", "tiny-test", "--out", str(tmp_path / "o"),
              "--bitrates", "24,abc"])
    assert exit_info.value.code == 2 and "comma-separated kbps" in capsys.readouterr().err
    assert main(["data", "prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "c")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("apollo: error:") and "no such folder" in err and "Traceback" not in err
    config = Path(__file__).resolve().parents[1] / "configs" / "apollo-smoke.yaml"
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "r"), "--set", "optim.lr_g=abc"]) == 2
    assert "optim.lr_g: expected a number, got 'abc'" in capsys.readouterr().err


def test_systems_have_distinct_names_and_their_files_checksums(tmp_path):
    from apollo.evaluate import checkpoint_sha256, evaluate_dataset, system_names
    from apollo.pretrained import load_model
    from apollo.states import save_checkpoint

    model = load_model("tiny-test")
    a, b = (tmp_path / "runs" / run / "generator-last.safetensors" for run in ("a", "b"))
    save_checkpoint(a, model.state_dict(), model.config)
    save_checkpoint(b, {k: v * 0.5 for k, v in model.state_dict().items()}, model.config)
    names = system_names([str(a), str(b), "tiny-test"])
    assert names == {str(a): "a/generator-last", str(b): "b/generator-last", "tiny-test": "tiny-test"}
    data = tmp_path / "songs"
    data.mkdir()
    sf.write(str(data / "one.wav"), (0.3 * _signal()).T, SR)
    out = tmp_path / "report"
    evaluate_dataset(data, [str(a), str(b)], out, bitrates=(128,), workers=1, seconds=1.0, with_visqol=False,
                     progress=False)
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {r["system"]: r["checkpoint_sha256"] for r in rows} == {
        "mp3": "", "a/generator-last": checkpoint_sha256(str(a)), "b/generator-last": checkpoint_sha256(str(b))}
    save_checkpoint(a, {k: v * 0.25 for k, v in model.state_dict().items()}, model.config)  # retrained in place
    with pytest.raises(ValueError, match="scored another file"):
        evaluate_dataset(data, [str(a), str(b)], out, bitrates=(128,), workers=1, seconds=1.0, with_visqol=False,
                         progress=False)
