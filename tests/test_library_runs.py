"""`apollo restore` over libraries: reruns finish the job, concurrent runs share it, signals clean up,
-o names a file, and options that would surprise are refused or explained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
from audio_fixtures import tone, write

from apollo.cli import main
from apollo.outputs import CLAIM_SUFFIX, Claim

RUN = ["restore", "--checkpoint", "tiny-test"]


def restore(*args: object) -> int:
    return main([*RUN, *map(str, args)])


def test_rerun_after_an_interrupted_folder_run_finishes_and_exits_0(tmp_path, capsys):
    music = tmp_path / "music"
    write(music / "a.wav", tone(0.5))
    write(music / "sub" / "b.mp3", tone(0.5))
    out = tmp_path / "out"
    assert restore(music, "-o", out, "-q") == 0
    (out / "sub" / "b.flac").unlink()  # as if the first run was stopped before b
    first = (out / "a.flac").read_bytes()
    assert restore(music, "-o", out) == 0
    captured = capsys.readouterr()
    assert f"skipped {music / 'a.wav'}" in captured.out and "restored" in captured.out
    assert (out / "a.flac").read_bytes() == first and (out / "sub" / "b.flac").is_file()
    assert restore(music, "-o", out, "-q") == 0  # and once more: nothing to do, still success


def test_an_output_claimed_by_a_live_run_is_skipped(tmp_path, capsys):
    src = write(tmp_path / "x.wav", tone(0.5))
    out = tmp_path / "o"
    out.mkdir()
    (out / f".x.flac{CLAIM_SUFFIX}").write_text(f"{os.getpid()} {os.uname().nodename}")  # a run that is alive
    assert restore(src, "-o", out) == 0
    assert "being restored by another apollo run" in capsys.readouterr().out
    assert not (out / "x.flac").exists()


def test_a_dead_runs_claim_and_scraps_are_taken_over(tmp_path):
    src = write(tmp_path / "x.wav", tone(0.5))
    out = tmp_path / "o"
    out.mkdir()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / f".x.flac{CLAIM_SUFFIX}").write_text(f"{gone.stdout.strip()} {os.uname().nodename}")
    (out / ".x.flac.k2j3h4.flac").write_bytes(b"")  # what a killed run left: its temporary files
    (out / ".x.flac.k2j3h4.flac.f32.wav").write_bytes(b"\0" * 100)
    (out / ".other.flac.zz.flac").write_bytes(b"not ours to remove")
    assert restore(src, "-o", out, "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == [".other.flac.zz.flac", "x.flac"]


def test_claims_are_exclusive(tmp_path):
    dst = tmp_path / "song.flac"
    first = Claim.take(dst)
    assert isinstance(first, Claim)
    assert Claim.take(dst) == f"another apollo run (pid {os.getpid()})"
    first.release()
    again = Claim.take(dst)
    assert isinstance(again, Claim)
    again.release()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_removes_partial_outputs(tmp_path, signum):
    src = write(tmp_path / "long.flac", tone(240.0), subtype="PCM_16")
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "apollo.cli", *RUN, str(src), "-o", str(out), "-q",
                             "--threads", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out.exists() and any(p.name.startswith(".long.flac.") and p.suffix != CLAIM_SUFFIX
                                    for p in out.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before writing"
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert f"interrupted ({signal.Signals(signum).name})" in err and "Traceback" not in err, (proc.returncode, err)
    assert list(out.iterdir()) == []  # no temp file, no scratch, no claim, no half output


def test_o_names_the_output_file_for_one_input(tmp_path):
    src = write(tmp_path / "song.mp3", tone(0.5))
    assert restore(src, "-o", tmp_path / "clean" / "restored_song.wav", "-q") == 0
    info = sf.info(str(tmp_path / "clean" / "restored_song.wav"))
    assert info.format == "WAV" and info.subtype == "FLOAT" and info.frames == 22050
    assert sorted(p.name for p in (tmp_path / "clean").iterdir()) == ["restored_song.wav"]


def test_o_errors_are_clear(tmp_path, capsys):
    a, b = write(tmp_path / "a.wav", tone(0.5)), write(tmp_path / "b.wav", tone(0.5))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder")
    assert restore(a, "-o", notes) == 2
    assert "is an existing file" in capsys.readouterr().err
    assert restore(a, b, "-o", tmp_path / "both.flac") == 2
    assert "names one output file" in capsys.readouterr().err
    assert restore(a, "-o", tmp_path / "a.mp3") == 2
    assert ".flac or .wav" in capsys.readouterr().err


def test_an_input_folder_inside_the_output_folder_is_read(tmp_path):
    out = tmp_path / "out"
    write(out / "incoming" / "x.wav", tone(0.5))
    assert restore(out / "incoming", "-o", out, "-q") == 0
    assert (out / "x.flac").is_file()


def test_overlap_longer_than_half_a_segment_is_refused(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tone(0.5))
    assert restore(src, "-o", tmp_path / "o", "--segment", "1", "--overlap", "2") == 2
    assert "more than half of --segment" in capsys.readouterr().err


def test_segment_0_on_a_long_file_warns(tmp_path, capsys):
    src = write(tmp_path / "long.wav", np.zeros((int(61 * 44100), 2), np.float32) + tone(61.0) * 0.1)
    assert restore(src, "-o", tmp_path / "o", "--segment", "0", "-q") == 0
    assert "warning: --segment 0" in capsys.readouterr().err
