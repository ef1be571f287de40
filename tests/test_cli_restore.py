"""`apollo restore` end to end with the built-in tiny test model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone, write, write_aac

from apollo.audio import mp3_is_truncated
from apollo.cli import main
from apollo.states import atomic_write

RUN = ["restore", "--checkpoint", "tiny-test", "--quiet"]


def restore(*args: str) -> int:
    return main([*RUN, *map(str, args)])


def test_restores_mp3_to_flac(tmp_path):
    src = write(tmp_path / "song.mp3", tone(2.0))
    out = tmp_path / "out"
    assert restore(src, "-o", out) == 0
    data, rate = sf.read(out / "song.flac")
    info = sf.info(out / "song.flac")
    assert rate == 44100 and data.shape == (88200, 2) and info.subtype == "PCM_24"
    # the file holds the model's restoration of the decoded MP3, to 24-bit rounding
    from apollo.api import Restorer
    from apollo.audio import read

    decoded, _ = read(src)
    expected, _ = Restorer("tiny-test", device="cpu").restore(decoded, 44100)
    peak = max(np.abs(expected).max(), 1.0)  # --clip rescale
    assert np.abs(data.T - expected / peak).max() < 2e-6 and np.abs(data).max() > 0.01
    assert oct(os.stat(out / "song.flac").st_mode & 0o777) != oct(0o600)


def test_resampling_22k_mono_mp3(tmp_path):
    src = write(tmp_path / "low.mp3", tone(3.0, rate=22050, channels=1), rate=22050)
    assert sf.info(str(src)).samplerate == 22050
    assert restore(src, "-o", tmp_path / "out") == 0
    info = sf.info(str(tmp_path / "out" / "low.flac"))
    assert info.samplerate == 44100 and info.channels == 1
    assert info.frames == 3 * 44100  # same duration


def test_output_rate_model_input_or_hz(tmp_path):
    # a 48-kHz file: restored at the model's 44.1 kHz, then written at the rate asked for
    src = tmp_path / "video.wav"
    sf.write(src, tone(1.5, rate=48000), 48000, subtype="FLOAT")
    outs = {}
    for rate in ("model", "input", "32000"):
        assert restore(src, "-o", tmp_path / rate, "--out-rate", rate, "--format", "wav", "--bits", "32f") == 0
        outs[rate], outs[rate + "_hz"] = sf.read(tmp_path / rate / "video.wav", dtype="float32", always_2d=True)
    assert (outs["model_hz"], outs["input_hz"], outs["32000_hz"]) == (44100, 48000, 32000)
    assert [len(outs[r]) for r in ("model", "input", "32000")] == [66150, 72000, 48000]  # 1.5 s each
    # the other rates are the model's output resampled, nothing else
    from apollo.audio import resample

    for rate in ("input", "32000"):
        expected = resample(np.ascontiguousarray(outs["model"].T), 44100, outs[rate + "_hz"])
        assert np.abs(outs[rate].T - expected).max() < 1e-5 and np.abs(expected).max() > 0.01


@pytest.mark.parametrize("value,message", [("100", "100 Hz: output rates are 8000-384000"),
                                           ("fast", "not model, input or a rate in Hz")])
def test_output_rate_out_of_range_is_refused(capsys, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["restore", "x.wav", "--out-rate", value])
    assert exit_.value.code == 2 and f"argument --out-rate: {message}" in capsys.readouterr().err


def test_restore_file_output_rate_is_checked():
    from apollo.api import output_rate

    assert output_rate(None, 48000, 44100) == 44100 and output_rate("input", 48000, 44100) == 48000
    for bad in (7999, 400000, "fast"):
        with pytest.raises(ValueError, match="output rate"):
            output_rate(bad, 48000, 44100)


@pytest.mark.parametrize("fmt,bits,subtype",
                         [("wav", "16", "PCM_16"), ("wav", "32f", "FLOAT"), ("flac", "16", "PCM_16")])
def test_formats_and_multichannel(tmp_path, fmt, bits, subtype):
    src = write(tmp_path / "surround.wav", tone(1.0, channels=6), subtype="FLOAT")
    assert restore(src, "-o", tmp_path / "o", "--format", fmt, "--bits", bits) == 0
    info = sf.info(str(tmp_path / "o" / f"surround.{fmt}"))
    assert info.channels == 6 and info.subtype == subtype and info.frames == 44100


def test_flac_cannot_hold_float(tmp_path, capsys):
    src = write(tmp_path / "a.wav", tone(0.5))
    assert restore(src, "-o", tmp_path / "o", "--bits", "32f") == 2
    assert "FLAC" in capsys.readouterr().err


def test_folder_mirroring_and_other_formats(tmp_path):
    music = tmp_path / "music"
    write(music / "a.mp3", tone(1.0))
    write(music / "album" / "b.flac", tone(1.0, channels=1))
    write(music / "album" / "disc2" / "c.ogg", tone(1.0), format="OGG", subtype="VORBIS")
    (music / "notes.txt").write_text("not audio, skipped by extension")
    out = tmp_path / "restored"
    assert restore(music, "-o", out) == 0
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == ["a.flac", "album/b.flac", "album/disc2/c.flac"]


def test_reads_m4a_through_ffmpeg(tmp_path):
    pytest.importorskip("av")
    src = write_aac(tmp_path / "clip.m4a", tone(1.0))
    assert restore(src, "-o", tmp_path / "o") == 0
    info = sf.info(str(tmp_path / "o" / "clip.flac"))
    assert info.channels == 2 and abs(info.frames - 44100) <= 2048


def test_no_clobber_then_overwrite(tmp_path, capsys):
    src = write(tmp_path / "x.wav", tone(0.5))
    out = tmp_path / "o"
    out.mkdir()
    (out / "x.flac").write_bytes(b"precious")
    # an existing output is skipped with a note, not an error: a rerun finishes the job
    assert main(["restore", "--checkpoint", "tiny-test", str(src), "-o", str(out)]) == 0
    assert (out / "x.flac").read_bytes() == b"precious"
    captured = capsys.readouterr()
    assert "skipped" in captured.out and "--overwrite" in captured.out and "error" not in captured.err
    assert restore(src, "-o", out, "--overwrite") == 0
    assert sf.info(str(out / "x.flac")).frames == 22050


def test_never_overwrites_an_input(tmp_path, capsys):
    src = write(tmp_path / "x.flac", tone(0.5))
    before = src.read_bytes()
    assert restore(src, "-o", tmp_path, "--overwrite") == 1
    assert src.read_bytes() == before
    assert "input" in capsys.readouterr().err


def test_same_name_collision_gets_distinct_names(tmp_path):
    a = write(tmp_path / "a" / "song.wav", tone(0.5))
    b = write(tmp_path / "b" / "song.mp3", tone(0.5))
    c = write(tmp_path / "c.wav", tone(0.5))
    assert restore(b, a, c, "-o", tmp_path / "o") == 0
    # every clashing input is named after its full name, whatever the order
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["c.flac", "song.mp3.flac", "song.wav.flac"]


def test_duplicates_are_restored_once(tmp_path, capsys):
    song = write(tmp_path / "music" / "song.wav", tone(0.5))
    assert restore(song, song, tmp_path / "music", "-o", tmp_path / "o") == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["song.flac"]


def _nan_wav(path):
    data = tone(0.5)
    data[100, 0] = np.nan
    return write(path, data, subtype="FLOAT")


def _truncated_mp3(path):
    full = write(path.with_name("full.mp3"), tone(3.0)).read_bytes()
    path.write_bytes(full[: len(full) // 2])
    return path


def _text(path, content):
    path.write_text(content)
    return path


def _fifo(path):
    os.mkfifo(path)
    return path


BAD_INPUTS = {
    "missing": (lambda p: p / "nope.mp3", "no such file"),
    "not audio": (lambda p: _text(p / "fake.mp3", "hello " * 200), "not a recognised audio"),
    "empty file": (lambda p: _text(p / "empty.wav", ""), "empty file"),
    "zero samples": (lambda p: write(p / "zero.wav", np.zeros((0, 2), np.float32)), "no audio samples"),
    "truncated mp3": (lambda p: _truncated_mp3(p / "cut.mp3"), "truncated MP3"),
    "nan samples": (lambda p: _nan_wav(p / "nan.wav"), "NaN"),
    "unreadable (fifo)": (lambda p: _fifo(p / "pipe.wav"), "not a regular file"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_and_others_still_processed(tmp_path, capsys, case):
    make, message = BAD_INPUTS[case]
    bad = make(tmp_path)
    good = write(tmp_path / "good.wav", tone(0.5))
    out = tmp_path / "o"
    assert restore(bad, good, "-o", out) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("apollo: error:")]
    assert len(lines) == 1
    assert (out / "good.flac").exists()
    assert sorted(p.name for p in out.iterdir()) == ["good.flac"]  # nothing half-written


def test_unwritable_output_folder(tmp_path, capsys):
    src = write(tmp_path / "x.wav", tone(0.5))
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    assert restore(src, "-o", blocker / "sub") == 1
    assert "not writable" in capsys.readouterr().err


def test_missing_default_weights_message(tmp_path, capsys, monkeypatch):
    import apollo.pretrained

    monkeypatch.setattr(apollo.pretrained, "WEIGHTS", tmp_path / "absent")
    src = write(tmp_path / "x.wav", tone(0.5))
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--checkpoint" in capsys.readouterr().err



def test_mp3_frame_walk(tmp_path):
    full = write(tmp_path / "f.mp3", tone(2.0))
    assert not mp3_is_truncated(full)
    cut = tmp_path / "c.mp3"
    cut.write_bytes(full.read_bytes()[:-300])
    assert mp3_is_truncated(cut)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.flac"

    def boom(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, boom)
    assert list(tmp_path.iterdir()) == []


def test_console_script_and_progress(tmp_path):
    import pty

    src = write(tmp_path / "x.wav", tone(1.0))
    command = [sys.executable, "-m", "apollo.cli", "restore", str(src), "--checkpoint", "tiny-test", "-o"]
    # stderr not a terminal (a log, a pipe): plain lines, no progress bars
    proc = subprocess.run([*command, str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout.startswith("restored ")
    # on a terminal the bars are drawn
    import fcntl
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 wide
    proc = subprocess.run([*command, str(tmp_path / "t")], stdout=subprocess.PIPE, stderr=follower, text=True,
                          timeout=120)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 1 << 16)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    drawn = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0 and "s audio" in drawn
    quiet = subprocess.run([*command, str(tmp_path / "q"), "-q"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""


class _Loud(torch.nn.Module):
    """A stand-in generator that triples its input, to push samples beyond full scale."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def forward(self, x):
        return 3.0 * x


@pytest.mark.parametrize("clip,expected_peak", [("rescale", 1.0), ("clamp", 1.0), ("none", 1.8)])
def test_clip_modes(tmp_path, clip, expected_peak):
    from apollo.api import Restorer

    data = tone(0.5)
    src = write(tmp_path / "x.wav", 0.6 * data / np.abs(data).max(), subtype="FLOAT")  # peak 0.6 -> 1.8
    restorer = Restorer("tiny-test", device="cpu", clip=clip)
    restorer.model = _Loud(restorer.model.config)
    peaks = []
    dst = restorer.restore_file(src, tmp_path / "o.wav", bits="32f", on_rescale=peaks.append)
    out, _ = sf.read(str(dst))
    inp, _ = sf.read(str(src))
    assert np.abs(out).max() == pytest.approx(expected_peak, abs=1e-4)
    if clip == "rescale":  # one gain for the whole file: the waveform's shape is kept
        assert np.allclose(out, inp / np.abs(inp).max(), atol=1e-5)
        assert peaks == [pytest.approx(1.8, abs=1e-4)]  # and the caller is told the gain
    else:
        assert peaks == []


def test_cli_says_when_rescale_lowers_a_file(tmp_path, capsys, monkeypatch):
    import apollo.api

    data = tone(0.5)
    src = write(tmp_path / "x.wav", 0.6 * data / np.abs(data).max(), subtype="FLOAT")
    monkeypatch.setattr(apollo.api, "load_model", lambda checkpoint, device: _Loud(
        apollo.pretrained.load_model("tiny-test").config))
    assert main(["restore", str(src), "-o", str(tmp_path / "o")]) == 0
    assert "restored peak 1.800, whole file scaled by -5.11 dB" in capsys.readouterr().out


def test_headerless_vbr_mp3_is_restored_in_full(tmp_path):
    """lameenc writes no Xing header: libsndfile would decode a third of this file."""
    from apollo import degrade
    from apollo.audio import mp3_has_length_header, probe

    data = tone(6.0)
    src = tmp_path / "vbr.mp3"
    src.write_bytes(degrade.encode_mp3(data.T, 44100, None, vbr=6))
    assert not mp3_has_length_header(src)
    assert probe(src).backend == "ffmpeg"
    assert restore(src, "-o", tmp_path / "o") == 0
    frames = sf.info(str(tmp_path / "o" / "vbr.flac")).frames
    assert 6 * 44100 <= frames <= 6 * 44100 + 3 * 1152  # all of it (plus the codec's padding)
    tagged = write(tmp_path / "tagged.mp3", data)  # libsndfile writes a Xing/Info header
    assert mp3_has_length_header(tagged) and probe(tagged).backend == "soundfile"


def test_threads_option_sets_torch_threads(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    src = tmp_path / "x.wav"
    sf.write(str(src), np.zeros((4410, 1), np.float32), 44100)
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--checkpoint", "tiny-test", "--threads", "1",
                 "-q"]) == 0
    assert calls == [1] and (tmp_path / "o" / "x.flac").exists()
    commands = (["restore", str(src)], ["stream"], ["web"], ["benchmark"], ["train", "--config", "c", "--run-dir", "r"],
                ["evaluate"])
    for command in commands:
        with pytest.raises(SystemExit) as exit_:  # every --threads is checked by one argparse type
            main([*command, "--threads", "0"])
        assert exit_.value.code == 2 and "argument --threads: must be at least 1, got 0" in capsys.readouterr().err
    data_commands = (["data", "synth", "--out", "o"], ["data", "real", "--out", "o"], ["data", "prepare", "d"])
    for command in (["evaluate"], *data_commands):
        with pytest.raises(SystemExit) as exit_:  # and every --workers by another
            main([*command, "--workers", "0"])
        assert exit_.value.code == 2 and "argument --workers: must be at least 1, got 0" in capsys.readouterr().err
    assert calls == [1]


@pytest.mark.parametrize(("command", "option", "value", "message"), [
    (["restore", "x.wav"], "--segment", "inf", "not a finite number of seconds"),  # was an OverflowError
    (["restore", "x.wav"], "--segment", "nan", "not a finite number of seconds"),  # was a silent one pass
    (["restore", "x.wav"], "--segment", "-1", "must be at least 0 seconds"),
    (["restore", "x.wav"], "--overlap", "nan", "not a finite number of seconds"),
    (["benchmark", "--config", "tiny"], "--seconds", "0", "must be more than 0 seconds"),
    (["evaluate"], "--excerpt-seconds", "nan", "not a finite number of seconds"),
    (["data", "synth", "--out", "o"], "--hours", "-1", "must be more than 0 hours"),
    (["web"], "--keep-minutes", "inf", "not a finite number of minutes"),
    (["web"], "--max-upload-mb", "0", "must be more than 0 MB"),
])
def test_numbers_out_of_range_are_refused_by_argparse(tmp_path, capsys, command, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        main([*command, option, value])
    assert exit_.value.code == 2 and f"argument {option}: {message}" in capsys.readouterr().err


def test_every_option_of_every_subcommand_has_help():
    import argparse

    from apollo.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [f"{p.prog}: {a.dest}" for p in parsers(build_parser()) for a in p._actions
               if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)) and not a.help]
    assert missing == []


def test_restoring_needs_none_of_the_extras(tmp_path):
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    core = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    heavy = ("music21", "pyfluidsynth", "matplotlib", "visqol", "tensorboard")
    assert not [d for d in core if d.startswith(heavy)]
    src = write(tmp_path / "x.wav", tone(0.5))
    code = ("import sys; from apollo.cli import main; "
            f"main(['restore', {str(src)!r}, '--checkpoint', 'tiny-test', '-q', '-o', {str(tmp_path / 'o')!r}]); "
            "print(sorted(m for m in ('music21', 'fluidsynth', 'matplotlib', 'visqol', 'tensorboard') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_rescale_uses_the_peak_of_the_whole_file_across_chunks(tmp_path):
    # the loudest moment is in the last of three chunks: every chunk is scaled by that one peak
    from apollo.api import Restorer

    t = np.arange(3 * 44100) / 44100
    level = np.where(t < 2.5, 0.1, 0.6)[:, None]
    data = (level * np.sin(2 * np.pi * 440 * t)[:, None] * np.ones((1, 2))).astype(np.float32)
    src = write(tmp_path / "x.wav", data, subtype="FLOAT")
    restorer = Restorer("tiny-test", device="cpu", segment=1.0, clip="rescale")
    restorer.model = _Loud(restorer.model.config)  # x3: the last chunk peaks at 1.8
    peaks = []
    out, _ = sf.read(str(restorer.restore_file(src, tmp_path / "o.wav", bits="32f", on_rescale=peaks.append)))
    assert peaks == [pytest.approx(1.8, abs=1e-3)]
    np.testing.assert_allclose(out, 3 * data / 1.8, atol=1e-5)  # the quiet first chunk too
