"""Benchmark scripts whose numbers the docs quote: their arithmetic on rows made up here."""

from __future__ import annotations

import json

from repo_scripts import ROOT, load_script


def test_against_input_counts_pairs_under_the_input(tmp_path):
    rows = [("a", 24, "mp3", 3.0), ("a", 24, "m1", 2.9), ("a", 24, "m2", 3.5),
            ("a", 32, "mp3", 3.0), ("a", 32, "m1", 2.96), ("a", 32, "m2", 2.0),
            ("b", 24, "mp3", 4.0), ("b", 24, "m1", 3.0), ("b", 24, "m2", 4.0)]
    csv_path = tmp_path / "results.csv"
    csv_path.write_text("excerpt,bitrate,system,visqol\n" + "".join(f"{e},{b},{s},{v}\n" for e, b, s, v in rows))
    out = tmp_path / "harm.json"
    load_script("benchmarks/against_input.py").main([str(csv_path), "--margin", "0.05", "--out", str(out)])
    found = json.loads(out.read_text())["systems"]
    # m1: a/24 (-0.1) and b/24 (-1.0) count, a/32 (-0.04) is inside the margin
    assert found["m1"]["pairs"] == 3 and found["m1"]["under_input"] == 2
    assert found["m1"]["largest_loss"] == -1.0
    assert [tuple(w) for w in found["m1"]["which"]] == [("a", 24, -0.1), ("b", 24, -1.0)]
    assert found["m2"]["under_input"] == 1 and found["m2"]["largest_loss"] == -1.0
    assert "mp3" not in found


def test_by_edition_keeps_the_systems_asked(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))  # by_edition imports probe_report beside it
    header = "excerpt,bitrate,system,visqol,si_snr\n"
    rows = [("wesnoth-1.16-music/a.ogg/overall/0", 24, sys_, v, 10.0)
            for sys_, v in (("mp3", 2.0), ("default", 3.0), ("old", 1.0), ("new", 4.0))]
    rows.append(("not-in-edition-1/b.ogg/overall/0", 24, "new", 2.0, 12.0))
    csv_path = tmp_path / "results.csv"
    csv_path.write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    out = tmp_path / "by.json"
    load_script("benchmarks/by_edition.py").main([str(csv_path), "--out", str(out), "--systems", "mp3", "new"])
    report = json.loads(out.read_text())
    assert {r["system"] for r in report["rows"]} == {"mp3", "new"}
    summary = report["summary"]
    assert summary["new 24 kbps, all"]["visqol"] == 3.0 and summary["new 24 kbps, edition 1"]["visqol"] == 4.0
    assert summary["new 24 kbps, added in edition 2"]["si_snr"] == 12.0
    assert not any(key.startswith(("old", "default")) for key in summary)


def test_gain_probe_measures_the_level_an_encoding_gives_back():
    import numpy as np
    import pytest

    probe = load_script("benchmarks/gain_probe.py")
    rate = probe.RATE
    t = np.arange(2 * rate) / rate
    wav = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 660 * t)]).astype(np.float32)
    assert probe.gain_back(wav, 0.5 * wav) == pytest.approx(2.0, rel=1e-5)
    assert probe.gain_back(wav, np.roll(0.8 * wav, 30, axis=1)) == pytest.approx(1.25, rel=1e-3)  # aligned first
    # LAME's CBR presets scale the input by 0.95 up to 128 kbps, VBR does not: the finding the docs quote
    assert probe.gain_back(wav, probe.coded(wav, "cbr128")) == pytest.approx(1 / 0.95, rel=5e-3)
    assert probe.gain_back(wav, probe.coded(wav, "vbr2")) == pytest.approx(1.0, rel=5e-3)
    with pytest.raises(ValueError, match="unknown encoding"):
        probe.coded(wav, "aac128")


def test_source_edges_rolloff_tells_a_cliff_from_a_fade():
    import pytest
    import torch

    edges = load_script("benchmarks/source_edges.py")
    flat = torch.full((513,), -20.0)
    flat[200:] = -120.0  # the music stands at -20 dB up to bin 199, then an encoder's cliff
    assert edges.rolloff_db(flat, 199) == pytest.approx(0.0)
    fade = flat.clone()
    fade[:200] = -20.0 - 0.2 * torch.arange(200.0)  # 0.2 dB per bin: a source fading before it ends
    # 0.5-0.6 of the limit (bins 99-119) against 0.85-1.0 (bins 169-199): 0.2 x (184 - 109) dB
    assert edges.rolloff_db(fade, 199) == pytest.approx(15.0, abs=0.1)
