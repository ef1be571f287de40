"""Recorded drum kits and the production chain of the synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from apollo.data import drumkits

RATE = 44100


@pytest.mark.parametrize("name, role", [
    ("Kick (Tama Superstar 22 inch)", "kick"), ("BassDrum", "kick"), ("Snare Rimshot", "snare"),
    ("Hi-Hat Closed (Paiste)", "hat_closed"), ("Sabian Hat Semi-Open", "hat_open"), ("Pedal HH", "hat_pedal"),
    ("Open HH", "hat_open"), ("Crash Left", "crash"), ("Ride Bell", "ride"), ("Floor Tom", "tom_low"),
    ("Tom Hi", "tom_high"), ("Pearl Tom 2", "tom_mid"), ("Hand Clap", "clap"), ("Cowbell", None)])
def test_instrument_names_to_roles(name, role):
    assert drumkits.role_of(name) == role


def _kit(folder):
    folder.mkdir(parents=True)
    for name, freq in (("kick.wav", 60), ("snare.wav", 200), ("hat.wav", 9000)):
        t = np.arange(2205) / RATE
        sf.write(folder / name, (np.sin(2 * np.pi * freq * t) * np.exp(-t * 60)).astype(np.float32), RATE)
    (folder / "drumkit.xml").write_text("""<?xml version="1.0"?>
<drumkit_info xmlns="http://www.hydrogen-music.org/drumkit"><name>Test Kit</name>
<instrumentList>
<instrument><name>Kick</name><layer><filename>kick.wav</filename><min>0</min><max>1</max></layer></instrument>
<instrument><name>Snare</name><filename>snare.wav</filename></instrument>
<instrument><name>Closed HH</name><layer><filename>hat.wav</filename></layer></instrument>
<instrument><name>Cowbell</name><layer><filename>missing.wav</filename></layer></instrument>
</instrumentList></drumkit_info>""")
    return folder


def test_kits_are_read_and_incomplete_ones_left_out(tmp_path):
    _kit(tmp_path / "kits" / "good")
    partial = tmp_path / "kits" / "partial"
    partial.mkdir(parents=True)
    (partial / "drumkit.xml").write_text("<drumkit_info><name>P</name><instrumentList><instrument><name>Kick"
                                         "</name><filename>k.wav</filename></instrument></instrumentList>"
                                         "</drumkit_info>")
    kits = drumkits.find_kits(tmp_path / "kits")
    assert [k.name for k in kits] == ["Test Kit"]
    assert sorted(kits[0].roles) == ["hat_closed", "kick", "snare"]
    assert kits[0].samples(46)[0].path.name == "hat.wav"  # an open hat falls back to the closed one


def test_render_kit_puts_each_hit_at_its_time(tmp_path):
    kit = drumkits.find_kits(_kit(tmp_path / "kit"))[0]
    notes = [(0.25, 0.1, 36, 127), (0.5, 0.1, 38, 64), (0.75, 0.1, 42, 127)]
    out = drumkits.render_kit(notes, kit, RATE, 1.0, np.random.default_rng(0), gain=1.0)
    assert out.shape == (2, RATE)
    onsets = [int(np.argmax(np.abs(out[0]) > 1e-3))]
    assert abs(onsets[0] - RATE // 4) <= 2  # silence until the kick
    kick, _ = sf.read(tmp_path / "kit" / "kick.wav")
    np.testing.assert_allclose(out[0, RATE // 4:RATE // 4 + 2205], kick, atol=1e-6)  # full velocity: as recorded
    snare, _ = sf.read(tmp_path / "kit" / "snare.wav")
    np.testing.assert_allclose(out[1, RATE // 2:RATE // 2 + 2205], snare * (64 / 127) ** 1.5, atol=1e-6)


def test_production_chain_masters_to_modern_loudness():
    pytest.importorskip("pedalboard")
    from apollo.data.production import CEILING, master, process_stem

    rng = np.random.default_rng(0)
    t = np.arange(3 * RATE) / RATE
    stem = np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)]).astype(np.float32) * 0.1
    produced = process_stem(stem, "guitar", RATE, rng)
    assert produced.shape == stem.shape and np.isfinite(produced).all() and not np.allclose(produced, stem)
    mixed = master(produced, RATE, np.random.default_rng(1))
    rms_db = 20 * np.log10(np.sqrt(np.mean(mixed ** 2)))
    assert mixed.shape == stem.shape and np.abs(mixed).max() <= CEILING + 1e-6
    assert -16 < rms_db < -8  # drawn in -14..-9 dBFS, a little lower where the limiter works
    again = process_stem(stem, "guitar", RATE, np.random.default_rng(0))
    np.testing.assert_array_equal(produced, again)  # the same draws give the same track
