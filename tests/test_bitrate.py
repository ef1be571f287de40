"""Models told the input's MP3 bitrate (ApolloConfig.bitrate_classes): the embedding, the header
reading, the restore path that connects them and the fine-tune that adds them."""

from __future__ import annotations

import csv
import dataclasses
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
from audio_fixtures import tone, with_lame_tag, write
from repo_scripts import ROOT

import apollo
from apollo import audio, degrade
from apollo.api import Restorer
from apollo.model.config import ApolloConfig
from apollo.training.config import load_config
from apollo.training.trainer import Trainer, _unwrap

SMOKE = ROOT / "configs" / "apollo-smoke.yaml"

CLASSES = (24, 32, 48, 64, 96, 128)


def _told_model(seed: int = 0) -> apollo.Apollo:
    """A random tiny model told bitrates, with a row for 32 kbps that changes its output."""
    torch.manual_seed(seed)
    model = apollo.Apollo(ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, bitrate_classes=CLASSES)).eval()
    with torch.no_grad():
        model.bitrate_embedding[2] = torch.randn_like(model.bitrate_embedding[2])
    return model


def test_rows_are_the_nearest_class_on_a_log_scale_and_unknown_otherwise():
    model = _told_model()
    kbps = torch.tensor([24, 31, 40, 56, 80, 112, 128, 320, 8, 0, -5])
    assert model.bitrate_index(kbps, len(kbps)).tolist() == [1, 2, 3, 4, 5, 6, 6, 6, 1, 0, 0]
    assert model.bitrate_index(None, 3).tolist() == [0, 0, 0]
    assert model.bitrate_index(torch.tensor(48.0), 2).tolist() == [3, 3]  # one bitrate for the batch


@pytest.mark.parametrize("channels", [1, 2])
def test_each_item_gets_its_own_row_and_a_zero_embedding_changes_nothing(channels):
    model = _told_model()
    wav = torch.from_numpy(tone(0.3, channels=channels).T.copy())[None].repeat(2, 1, 1)
    plain = apollo.Apollo(dataclasses.replace(model.config, bitrate_classes=())).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "bitrate_embedding"})
    with torch.no_grad():
        told = model(wav, None, torch.tensor([32, 0]))
        unknown = model(wav)
        assert torch.equal(told[1], unknown[1])  # the unknown item is as if nothing were told
        assert (told[0] - unknown[0]).abs().max() > 1e-4  # the 32-kbps row moves the other
        model.bitrate_embedding.zero_()
        assert torch.equal(model(wav, None, torch.tensor([32, 128])), plain(wav))


def test_a_told_model_has_no_released_form():
    from apollo.convert import to_released

    model = _told_model()
    with pytest.raises(ValueError, match="no released form"):
        to_released(model.state_dict(), model.config)


def test_config_round_trip_and_checks():
    config = ApolloConfig(feature_dim=16, num_blocks=1, num_heads=2, bitrate_classes=[24, 128])
    assert config.bitrate_classes == (24, 128)
    assert ApolloConfig.from_dict(dict(config.to_dict(), bitrate_classes=[24, 128])) == config
    for bad in ([128, 24], [0, 24], [24, 24]):
        with pytest.raises(ValueError, match="bitrate_classes"):
            ApolloConfig(bitrate_classes=bad)


def _mp3(path, kbps=None, vbr=None, seconds=2.0):
    rate = degrade.encode_rate(44100, kbps)  # as an encoder codes it: 24 kbps is MPEG-2 at 22.05 kHz
    path.write_bytes(degrade.encode_mp3(tone(seconds, rate=rate).T.copy(), rate, kbps, vbr))
    return path


@pytest.mark.parametrize("kbps", [24, 32, 128, 320])
def test_a_cbr_mp3s_headers_give_its_bitrate(tmp_path, kbps):
    path = _mp3(tmp_path / "cbr.mp3", kbps=kbps)
    assert audio.mp3_bitrate(audio.probe(path)) == kbps


def test_a_vbr_mp3_gives_its_mean_and_other_files_none(tmp_path):
    vbr = audio.mp3_bitrate(audio.probe(_mp3(tmp_path / "vbr.mp3", vbr=2)))
    frames = [k for k in (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)]
    assert frames[0] <= vbr <= frames[-1] and vbr not in frames  # a mean of differing frames
    assert audio.mp3_bitrate(audio.probe(write(tmp_path / "x.wav", tone(0.5)))) is None
    assert audio.mp3_bitrate(audio.probe(write(tmp_path / "x.flac", tone(0.5)))) is None


def test_a_vbr_mp3s_frames_differ_and_a_cbr_mp3s_do_not(tmp_path):
    vbr = audio.mp3_frame_bitrates(audio.probe(_mp3(tmp_path / "vbr.mp3", vbr=5)))
    cbr = audio.mp3_frame_bitrates(audio.probe(_mp3(tmp_path / "cbr.mp3", kbps=96)))
    assert vbr and len(set(vbr)) > 1 and cbr and set(cbr) == {96}
    assert audio.mp3_frame_bitrates(audio.probe(write(tmp_path / "x.wav", tone(0.5)))) is None


@pytest.mark.parametrize(("method", "lowpass"), [("cbr", 17000), ("abr", 15100), ("vbr", 18500), ("unknown", 0)])
def test_the_lame_tag_says_how_an_mp3_was_coded(tmp_path, method, lowpass):
    raw = degrade.encode_mp3(tone(1.0).T.copy(), 44100, 128)  # lameenc writes no Xing/Info frame
    assert audio.mp3_lame_tag(_bytes(tmp_path / "raw.mp3", raw)) is None
    tag = audio.mp3_lame_tag(_bytes(tmp_path / "tagged.mp3", with_lame_tag(raw, method, lowpass)))
    assert tag == audio.LameTag("LAME3.100", method, lowpass or None)  # 0: the tag leaves it unset
    # a tag whose checksum fails says nothing; the audio frames after it are read as before
    spoilt = _bytes(tmp_path / "spoilt.mp3", with_lame_tag(raw, method, lowpass, checksum=False))
    assert audio.mp3_lame_tag(spoilt) is None
    assert audio.mp3_frame_bitrates(audio.probe(spoilt)) == audio.mp3_frame_bitrates(audio.probe(tmp_path / "raw.mp3"))


def _bytes(path, data):
    path.write_bytes(data)
    return path


def _id3v2(size: int) -> bytes:
    """An ID3v2.4 tag of `size` bytes of padding (as a large cover picture takes room)."""
    return b"ID3\x04\x00\x00" + bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0)) + bytes(size)


def test_the_lame_tag_is_read_behind_id3_tags_larger_than_a_mib(tmp_path):
    # cover art makes many ID3v2 tags larger than the MiB read for the first frame: read from the
    # file's start, such a file lost its LAME tag and its length header (decoded by FFmpeg instead)
    tagged = with_lame_tag(degrade.encode_mp3(tone(1.0).T.copy(), 44100, 128), "vbr", 18500)
    bare = _bytes(tmp_path / "bare.mp3", tagged)
    for name, head in (("cover.mp3", _id3v2(3 << 20)), ("two.mp3", _id3v2(100) + _id3v2(2 << 20))):
        covered = _bytes(tmp_path / name, head + tagged)
        assert audio.mp3_lame_tag(covered) == audio.LameTag("LAME3.100", "vbr", 18500)
        assert audio.mp3_has_length_header(covered) and audio.probe(covered).backend == "soundfile"
        assert audio.mp3_frame_bitrates(audio.probe(covered)) == audio.mp3_frame_bitrates(audio.probe(bare))
        np.testing.assert_array_equal(audio.read(covered)[0], audio.read(bare)[0])
    assert audio.mp3_lame_tag(_bytes(tmp_path / "only.mp3", _id3v2(100))) is None  # a tag and no audio


@pytest.mark.skipif(shutil.which("lame") is None, reason="needs the lame program (.ci/apt-packages.txt)")
@pytest.mark.parametrize(("options", "tag"), [(["-V", "2"], ("vbr", 18500)), (["--abr", "96"], ("abr", 15100)),
                                              (["-b", "320"], ("cbr", 20500)), (["-b", "48"], None)])
def test_the_lame_programs_tags_are_read(tmp_path, options, tag):
    # as LAME writes them (every Xing field present, then the extension); at 48 kbps LAME's MPEG-2
    # frames are too short for one and it writes none
    src = write(tmp_path / "x.wav", tone(1.0), subtype="PCM_16")
    subprocess.run(["lame", "--quiet", *options, str(src), str(tmp_path / "x.mp3")], check=True)
    got = audio.mp3_lame_tag(tmp_path / "x.mp3")
    assert (got and (got.encoder, got.method, got.lowpass_hz)) == (tag and ("LAME3.100", *tag))


def test_file_bitrate_reads_the_dark_source_rule_from_the_lame_tag(tmp_path):
    from apollo.model.band_limit import DARK_EDGE_SHARE

    model = _told_model()
    model = apollo.Apollo(dataclasses.replace(model.config, residual=True,
                                              dark_source_hz_told=(0, 0, 5870, 8430, 11555, 12629)))
    checkpoint = tmp_path / "ruled.safetensors"
    apollo.save_checkpoint(checkpoint, model.state_dict(), model.config)
    restorer = Restorer(checkpoint, device="cpu", segment=0, threads=1)
    source, top = torch.tensor([200]), model.config.window // 2  # the top bin: dark at no bitrate
    vbr = degrade.encode_mp3(tone(2.0).T.copy(), 44100, None, vbr=2)
    for data, expect in ((vbr, (None, True)),  # VBR, no tag: never dark, as before
                         (with_lame_tag(vbr, "vbr", 18500), (DARK_EDGE_SHARE * 18500, False)),
                         (with_lame_tag(vbr, "vbr", 0), (None, True))):  # the lowpass unset: as untagged
        read = restorer.file_bitrate(audio.probe(_bytes(tmp_path / "song.mp3", data)), source)
        assert read.bitrate == audio.mp3_bitrate(audio.probe(tmp_path / "song.mp3"))
        assert (read.dark_source_hz, bool(read.source_limit[0] == top)) == expect
    cbr = degrade.encode_mp3(tone(2.0).T.copy(), 44100, 192)
    for data, hz in ((cbr, None), (with_lame_tag(cbr, "cbr", 12000), DARK_EDGE_SHARE * 12000)):
        read = restorer.file_bitrate(audio.probe(_bytes(tmp_path / "song.mp3", data)), source)
        assert (read.bitrate, read.dark_source_hz, int(read.source_limit[0])) == (192, hz, 200)
    assert restorer.file_bitrate(audio.probe(write(tmp_path / "x.wav", tone(0.5))), source) == (None, source, None)


def test_restore_file_tells_the_model_the_mp3s_bitrate(tmp_path):
    model = _told_model()
    checkpoint = tmp_path / "told.safetensors"
    apollo.save_checkpoint(checkpoint, model.state_dict(), model.config)
    restorer = Restorer(checkpoint, device="cpu", segment=0, threads=1)
    assert restorer.told_bitrate and not Restorer("tiny-test", device="cpu").told_bitrate
    src = _mp3(tmp_path / "song.mp3", kbps=32)
    out = restorer.restore_file(src, tmp_path / "out.wav", bits="32f")
    written, _ = sf.read(str(out), dtype="float32", always_2d=True)
    decoded = np.concatenate(list(audio.read_blocks(audio.probe(src))), axis=1)
    told, _ = restorer.restore(decoded, 44100, bitrate=32)
    unknown, _ = restorer.restore(decoded, 44100)
    np.testing.assert_allclose(written.T, told, atol=1e-6)
    assert np.abs(written.T - unknown).max() > 1e-4
    for bad in (-32, True, "32"):
        with pytest.raises(ValueError, match="bitrate"):
            restorer.restore(decoded, 44100, bitrate=bad)
    # the file's own bitrate can be overridden (a WAV decoded from an MP3 has none), and is checked too
    told_64, _ = restorer.restore(decoded, 44100, bitrate=64)
    written_64, _ = sf.read(str(restorer.restore_file(src, tmp_path / "out64.wav", bits="32f", bitrate=64)),
                            dtype="float32", always_2d=True)
    np.testing.assert_allclose(written_64.T, told_64, atol=1e-6)
    with pytest.raises(ValueError, match="bitrate"):
        restorer.restore_file(src, tmp_path / "bad.wav", bitrate=0)
    assert not (tmp_path / "bad.wav").exists()


def test_finetune_adds_the_embedding_at_zero_and_learns_it_at_its_own_rate(tmp_path):
    model = apollo.load_model("tiny-test")
    path = tmp_path / "init.safetensors"
    apollo.save_checkpoint(path, model.state_dict(), model.config)
    recipe = load_config(SMOKE, {"init_from": str(path), "model": {"bitrate_classes": list(CLASSES)},
                                 "optim.lr_bitrate": 0.05, "data.bitrate_withheld": 0.25, "schedule.max_steps": 2})
    trainer = Trainer(recipe, tmp_path / "run", progress=False)
    tuned = _unwrap(trainer.generator)
    assert tuned.config == dataclasses.replace(model.config, bitrate_classes=CLASSES)
    assert not tuned.bitrate_embedding.any()
    assert all(torch.equal(tuned.state_dict()[k], v) for k, v in model.state_dict().items())
    assert [g["lr"] for g in trainer.opt_g.param_groups][-1] == 0.05
    # the withheld share is drawn per step, the same on every call (a resumed run withholds the same)
    told = trainer.told_bitrates(torch.full((400,), 64))
    assert torch.equal(told, trainer.told_bitrates(torch.full((400,), 64)))
    assert 0.15 < (told == 0).float().mean() < 0.35 and set(told.tolist()) == {0, 64}
    # examples flagged always told (dark sources kept out of the "unknown" row) are all told, and the
    # same other examples are withheld as before; none flagged, the draw is as without flags
    assert torch.equal(trainer.told_bitrates(torch.full((400,), 64), torch.zeros(400, dtype=torch.bool)), told)
    always = torch.arange(400) % 2 == 0
    kept_out = trainer.told_bitrates(torch.full((400,), 64), always)
    assert not (kept_out[always] == 0).any()
    assert torch.equal(kept_out[~always], told[~always]) and (kept_out[~always] == 0).any()
    trainer.fit()
    tuned = apollo.load_model(tmp_path / "run" / "generator-last.safetensors")
    assert tuned.config.bitrate_classes == CLASSES and tuned.bitrate_embedding.abs().max() > 0.01


def test_evaluate_tells_models_the_bitrate_and_scores_them_untold_too(tmp_path):
    from apollo.evaluate import evaluate_dataset

    model = _told_model()
    checkpoint = tmp_path / "told.safetensors"
    apollo.save_checkpoint(checkpoint, model.state_dict(), model.config)
    data = tmp_path / "songs"
    write(data / "one.wav", tone(1.5))
    out = tmp_path / "report"
    evaluate_dataset(data, [str(checkpoint)], out, bitrates=(32, 128), workers=1, seconds=1.0, with_visqol=False,
                     progress=False, precisions=("untold",))
    rows = {(r["system"], int(r["bitrate"])): float(r["lsd"]) for r in csv.DictReader(open(out / "results.csv"))}
    assert set(rows) == {(s, b) for s in ("mp3", "told", "told-untold") for b in (32, 128)}
    # the 32-kbps row is the only one set: told at 32 kbps it restores otherwise than untold, at 128 alike
    assert abs(rows[("told", 32)] - rows[("told-untold", 32)]) > 0.05
    assert rows[("told", 128)] == rows[("told-untold", 128)]
