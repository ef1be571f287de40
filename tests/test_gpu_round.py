"""scripts/gpu_round.py: packing within a budget, weights in parts and back, a whole round on the CPU."""

from __future__ import annotations

import csv
import dataclasses
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from repo_scripts import load_script
from safetensors.torch import save_file

import apollo
from apollo.model import Apollo
from apollo.model.config import PRESETS
from apollo.states import save_checkpoint
from apollo.training import load_config
from apollo.training.discriminator import MultiResolutionDiscriminator

gpu_round = load_script("scripts/gpu_round.py")


def _corpus(root: Path, sizes: dict[str, list[int]], split: str = "train", suffix: str = "flac") -> Path:
    """A real-music corpus manifest over small noise files: sizes are seconds per package."""
    tracks = []
    for package, seconds_list in sizes.items():
        for i, seconds in enumerate(seconds_list):
            rel = f"tracks/{package}/t{i}.{suffix}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(len(tracks))
            sf.write(root / rel, (rng.standard_normal((int(seconds * 44100), 2)) * 0.1).astype(np.float32), 44100)
            tracks.append({"name": f"{package}/t{i}.{suffix}", "package": package, "path": rel, "kept": True,
                           "split": split if i else "valid", "seconds": float(seconds)})
    (root / "manifest.json").write_text(json.dumps({"rule": {}, "tracks": tracks}))
    return root


def test_pack_takes_every_package_in_turn_within_the_budget(tmp_path):
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12, 12, 12], "b": [12, 12], "c": [12]})
    size = (corpus / "tracks/a/t1.flac").stat().st_size
    info = gpu_round.pack(corpus, train_mb=3.5 * size / 2 ** 20, valid_mb=0, dest=tmp_path / "pack", wheels=False,
                          tree=0)
    packed = json.loads((tmp_path / "pack" / "music" / "manifest.json").read_text())["tracks"]
    # 3.5 files of budget: a, b and one more a (c's only track is its valid one)
    assert [t["package"] for t in packed] == ["a", "b", "a"] and info["train"] == 3 and info["valid"] == 0
    assert all((tmp_path / "pack" / "music" / t["path"]).is_file() for t in packed)


def test_an_ogg_prefix_decodes_to_the_tracks_first_samples_exactly(tmp_path):
    path = tmp_path / "t.ogg"
    rng = np.random.default_rng(0)
    sf.write(path, (rng.standard_normal((12 * 44100, 2)) * 0.1).astype(np.float32), 44100)  # Ogg Vorbis
    whole, _ = sf.read(path, dtype="float32")
    cut = gpu_round.ogg_prefix_bytes(path, 4.0)
    assert cut is not None and cut < path.stat().st_size / 2
    prefix = tmp_path / "prefix.ogg"
    prefix.write_bytes(path.read_bytes()[:cut])
    start, _ = sf.read(prefix, dtype="float32")
    assert 4 * 44100 <= len(start) < 5 * 44100  # whole pages: a little past 4 s
    np.testing.assert_array_equal(start, whole[:len(start)])  # not re-encoded
    assert gpu_round.ogg_prefix_bytes(path, 12.5) is None  # the whole file
    flac = tmp_path / "t.flac"
    sf.write(flac, whole, 44100)
    with pytest.raises(ValueError, match="not an Ogg page"):
        gpu_round.ogg_prefix_bytes(flac, 4.0)


def test_a_pack_of_track_starts_holds_more_tracks_in_the_same_bytes(tmp_path):
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 20, 20, 20], "b": [12, 20, 20], "c": [12, 20]}, suffix="ogg")
    budget = 2.5 * (corpus / "tracks/a/t1.ogg").stat().st_size / 2 ** 20  # two and a half whole tracks
    whole = gpu_round.pack(corpus, train_mb=budget, valid_mb=0, dest=tmp_path / "whole", wheels=False, tree=0)
    starts = gpu_round.pack(corpus, train_mb=budget, valid_mb=0, dest=tmp_path / "starts", wheels=False, tree=0,
                            track_seconds=5)
    assert whole["train"] == 2 and starts["train"] >= 6  # of 6 training tracks, every one
    packed = json.loads((tmp_path / "starts" / "music" / "manifest.json").read_text())["tracks"]
    for track in packed:
        carried, _ = sf.read(tmp_path / "starts" / "music" / track["path"], dtype="float32")
        source, _ = sf.read(corpus / track["path"], dtype="float32")
        assert track["packed_from_seconds"] == 20 and 5 <= track["seconds"] < 6
        assert len(carried) / 44100 == pytest.approx(track["seconds"], abs=0.01)
        np.testing.assert_array_equal(carried, source[:len(carried)])
    assert sum(f.stat().st_size for f in (tmp_path / "starts" / "music").rglob("*.ogg")) <= budget * 2 ** 20
    # the GPU machine's first step: a training cache of the pack, as of whole tracks
    from apollo.data.cache import prepare

    index = json.loads(prepare(tmp_path / "starts" / "music", tmp_path / "cache", window=2.0, hop=1.0,
                               progress=False).read_text())
    assert sorted(t["name"] for t in index["tracks"]) == sorted(t["name"] for t in packed)
    assert all(5 * 44100 <= t["length"] < 6 * 44100 for t in index["tracks"])
    with pytest.raises(ValueError, match="must be positive"):
        gpu_round.pack(corpus, train_mb=budget, valid_mb=0, dest=tmp_path / "x", wheels=False, tree=0,
                       track_seconds=0)


def test_a_pack_fits_one_device_call_beside_the_working_tree(tmp_path):
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12, 12, 12], "b": [12, 12, 12, 12]})
    file_mb = (corpus / "tracks/a/t1.flac").stat().st_size / 2 ** 20
    tree = 64 * 2 ** 20 - 2 ** 20 - int(2.5 * file_mb * 2 ** 20)  # room for two and a half files
    info = gpu_round.pack(corpus, train_mb=None, valid_mb=0, dest=tmp_path / "pack", wheels=False, tree=tree,
                          min_train_mb=0)  # the test's files are tiny
    assert info["train"] == 2 and info["travels_mb"] <= 63.0
    with pytest.raises(ValueError, match="does not fit"):
        gpu_round.pack(corpus, train_mb=3 * file_mb, valid_mb=0, dest=tmp_path / "pack", wheels=False, tree=tree)
    # a tree that leaves less than MIN_TRAIN_MB is refused, not packed with no training music
    full = 64 * 2 ** 20 - 2 ** 20 - int((gpu_round.MIN_TRAIN_MB - 0.5) * 2 ** 20)
    with pytest.raises(ValueError, match="move a kept checkpoint"):
        gpu_round.pack(corpus, train_mb=None, valid_mb=0, dest=tmp_path / "pack", wheels=False, tree=full)
    tracked = (gpu_round.ROOT / "README.md", gpu_round.ROOT / "scripts" / "gpu_round.py")
    assert gpu_round.tree_bytes() >= sum(p.stat().st_size for p in tracked)


def test_a_generator_the_tree_carries_is_named_not_copied(tmp_path):
    # the next round starts from a generator kept in git: the call carries it with the tree, so the
    # pack names it and its bytes go to training music instead of a second copy
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12, 12, 12, 12, 12]})
    kept = gpu_round.ROOT / "checkpoints" / "nsim1-step500" / "generator.safetensors"
    outside = tmp_path / "start.safetensors"
    outside.write_bytes(kept.read_bytes())
    file_bytes = (corpus / "tracks/a/t1.flac").stat().st_size
    tree = 64 * 2 ** 20 - 2 ** 20 - kept.stat().st_size - int(1.5 * file_bytes)
    pack = tmp_path / "pack"
    named = gpu_round.pack(corpus, train_mb=None, valid_mb=0, dest=pack, wheels=False, tree=tree, generator=kept,
                           min_train_mb=0)
    assert (pack / "generator.path").read_text() == "checkpoints/nsim1-step500/generator.safetensors\n"
    assert not (pack / "generator.safetensors").exists() and gpu_round.carried_generator(pack) == kept
    copied = gpu_round.pack(corpus, train_mb=None, valid_mb=0, dest=pack, wheels=False, tree=tree,
                            generator=outside, min_train_mb=0)
    assert not (pack / "generator.path").exists()
    assert gpu_round.carried_generator(pack) == pack / "generator.safetensors"
    assert copied["train"] == 1 and named["train"] == (int(1.5 * file_bytes) + kept.stat().st_size) // file_bytes > 1
    (pack / "generator.safetensors").unlink()
    assert gpu_round.carried_generator(pack) is None
    (pack / "generator.path").write_text("checkpoints/gone.safetensors\n")
    with pytest.raises(FileNotFoundError, match="the working tree does not have"):
        gpu_round.carried_generator(pack)


def test_weights_in_parts_and_back(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = Apollo(PRESETS["tiny"])
    source = tmp_path / "generator-last.safetensors"
    save_checkpoint(source, model.state_dict(), model.config, metadata={"step": "7"})
    monkeypatch.setattr(gpu_round, "PART_BYTES", 2 ** 16 + 40_000)  # forces several parts
    parts = gpu_round._shard(source, tmp_path, "generator")
    assert len(parts) > 2
    assert all((tmp_path / p).stat().st_size <= gpu_round.PART_BYTES for p in parts)
    joined = tmp_path / "joined.safetensors"
    gpu_round.join([tmp_path / p for p in parts], joined)
    restored = apollo.load_model(joined)
    assert restored.config == model.config
    for key, value in model.state_dict().items():
        assert torch.allclose(restored.state_dict()[key], value, rtol=1e-3, atol=1e-4), key  # float16 storage
    with pytest.raises(ValueError, match="do not make one whole"):
        gpu_round.join([tmp_path / p for p in parts[1:]], tmp_path / "broken.safetensors")


def test_a_whole_round_on_the_cpu(tmp_path):
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12], "b": [12, 12]})
    gpu_round.pack(corpus, train_mb=20, valid_mb=20, dest=tmp_path / "pack", wheels=False, tree=0)
    out = tmp_path / "out"
    tiny = ["model.feature_dim=16", "model.num_blocks=1", "model.num_heads=2", "optim.batch_size=2",
            "data.segment=0.5", "data.examples_per_epoch=8", "data.valid_examples=1", "data.workers=0",
            "schedule.checkpoint_every=1000", "schedule.log_every=1", "schedule.max_steps=2"]
    dark = ["data.darken_probability=0.5", "data.darken_octaves=1",  # as docs/gpu.md's next round sets them
            "data.more_dark_sources=[{probability: 0.3, hz: [6000, 12000], octaves: 0.5}]", "data.level_neutral=true"]
    # two steps end the training long before the time limit (which only bounds a stuck run)
    assert gpu_round.run(out, deadline=600, device="cpu", config_sets=tiny + dark, speed=False, margin=12,
                         pack_dir=tmp_path / "pack", fresh=True, work=tmp_path) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"]["prepare"]["rc"] == 0 and summary["steps"]["train"]["rc"] == 0
    assert summary["step"] == 2 and summary["examples_per_s"] > 0
    assert summary["config"]["model"]["feature_dim"] == 16
    assert summary["config"]["data"]["darken_probability"] == 0.5 and summary["config"]["data"]["darken_octaves"] == 1
    assert summary["config"]["data"]["level_neutral"] is True
    assert summary["config"]["data"]["more_dark_sources"] == [{"probability": 0.3, "hz": [6000, 12000], "octaves": 0.5,
                                                               "bitrates": [], "withheld": True}]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["discriminator.safetensors", "generator-part0.safetensors", "log.txt", "metrics.csv",
                     "summary.json"]
    gpu_round.join([out / "generator-part0.safetensors"], tmp_path / "g.safetensors")
    assert apollo.load_model(tmp_path / "g.safetensors").config.feature_dim == 16


def test_a_round_continues_the_carried_generator_and_returns_its_kept_steps(tmp_path):
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12], "b": [12, 12]})
    torch.manual_seed(1)
    start = Apollo(dataclasses.replace(PRESETS["tiny"], feature_dim=8))  # no recipe makes this width
    carried = tmp_path / "start.safetensors"
    save_checkpoint(carried, start.state_dict(), start.config)
    critic = tmp_path / "critic.safetensors"
    save_file(MultiResolutionDiscriminator().state_dict(), str(critic))
    gpu_round.pack(corpus, train_mb=20, valid_mb=20, dest=tmp_path / "pack", wheels=False, tree=0, generator=carried,
                   discriminator=critic)
    out = tmp_path / "out"
    tiny = ["optim.batch_size=2", "data.segment=0.5", "data.examples_per_epoch=8", "data.valid_examples=1",
            "data.workers=0", "schedule.checkpoint_every=1000", "schedule.log_every=1", "schedule.max_steps=3"]
    assert gpu_round.run(out, deadline=600, device="cpu", config_sets=tiny, speed=False, margin=12,
                         pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu.yaml", keep_every=1,
                         work=tmp_path) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3 and summary["config"]["init_from"].endswith("pack/generator.safetensors")
    assert summary["config"]["init_discriminator_from"].endswith("pack/discriminator.safetensors")
    assert summary["snapshots"] == {"files": ["snapshots-0.tar"], "steps": [1, 2, 3]}
    with tarfile.open(out / "snapshots-0.tar") as tar:
        tar.extractall(tmp_path / "kept", filter="data")
    third = apollo.load_model(tmp_path / "kept" / "generator-step000003.safetensors")
    assert third.config.feature_dim == 8  # trained on from the carried model, not a fresh one
    gpu_round.join([out / "generator-part0.safetensors"], tmp_path / "g.safetensors", dtype="float32")
    last = apollo.load_model(tmp_path / "g.safetensors").state_dict()
    assert all(torch.equal(last[k], v) for k, v in third.state_dict().items())  # small: exact, not float16

    # a second call on the same (warm) machine goes on from step 3 and returns only what it adds
    more = tmp_path / "more"
    sets = [*tiny[:-1], "schedule.max_steps=5"]
    assert gpu_round.run(more, deadline=600, device="cpu", config_sets=sets, speed=False, margin=12,
                         pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu.yaml", keep_every=1,
                         work=tmp_path, more=True) == 0
    summary = json.loads((more / "summary.json").read_text())
    assert summary["more"] is True and "prepare" not in summary["steps"] and summary["step"] == 5
    assert summary["snapshots"] == {"files": ["snapshots-0.tar"], "steps": [4, 5]}
    fifth = tmp_path / "kept5"
    with tarfile.open(more / "snapshots-0.tar") as tar:
        tar.extractall(fifth, filter="data")
    assert sorted(p.name for p in fifth.iterdir()) == ["generator-step000004.safetensors",
                                                       "generator-step000005.safetensors"]
    moved = apollo.load_model(fifth / "generator-step000004.safetensors").state_dict()
    assert any(not torch.equal(moved[k], v) for k, v in third.state_dict().items())  # trained on from step 3
    # on a fresh machine (nothing to go on from) it is a round from the pack
    fresh = tmp_path / "fresh-machine"
    assert gpu_round.run(tmp_path / "again", deadline=600, device="cpu", config_sets=tiny, speed=False, margin=12,
                         pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu.yaml", work=fresh,
                         more=True) == 0
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["more"] is False and summary["steps"]["prepare"]["rc"] == 0 and summary["step"] == 3


def test_kept_steps_are_thinned_evenly_to_the_files_left(tmp_path, monkeypatch):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    out.mkdir()
    for step in range(1, 16):
        (run_dir / f"generator-step{step:06d}.safetensors").write_bytes(bytes(1000))
    for name in ("log.txt", "gpu_speed.json", "generator-part0.safetensors", "metrics.csv", "discriminator.x",
                 "other.json"):
        (out / name).write_text("")
    monkeypatch.setattr(gpu_round, "PART_BYTES", 2 ** 16 + 5 * 2024)  # five per tar
    rnd = gpu_round.Round(out, 60, "cpu")  # adds nothing: log.txt is there
    gpu_round._bundle_snapshots(rnd, run_dir)
    assert rnd.summary["snapshots"] == {"files": ["snapshots-0.tar"], "steps": [3, 6, 9, 12, 15]}
    assert len(list(out.iterdir())) == gpu_round.MAX_FILES - 1  # room left for summary.json


def test_kept_steps_and_their_averages_are_thinned_together(tmp_path, monkeypatch):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    out.mkdir()
    for step in range(1, 16):
        for kind in ("step", "ema-step"):
            (run_dir / f"generator-{kind}{step:06d}.safetensors").write_bytes(bytes(1000))
    for name in ("log.txt", "gpu_speed.json", "generator-part0.safetensors", "metrics.csv", "discriminator.x",
                 "other.json"):
        (out / name).write_text("")
    monkeypatch.setattr(gpu_round, "PART_BYTES", 2 ** 16 + 5 * 2 * 2024)  # five pairs per tar
    rnd = gpu_round.Round(out, 60, "cpu")
    gpu_round._bundle_snapshots(rnd, run_dir)
    assert rnd.summary["snapshots"] == {"files": ["snapshots-0.tar"], "steps": [3, 6, 9, 12, 15], "averaged": True}
    with tarfile.open(out / "snapshots-0.tar") as tar:
        names = sorted(tar.getnames())
    assert names == sorted(f"generator-{kind}{s:06d}.safetensors" for s in (3, 6, 9, 12, 15)
                           for kind in ("step", "ema-step"))


def test_kept_steps_travel_as_float16_where_float32_would_leave_too_few_per_tar(tmp_path, monkeypatch):
    run_dir, out = tmp_path / "run", tmp_path / "out"
    run_dir.mkdir()
    out.mkdir()
    torch.manual_seed(0)
    model = Apollo(dataclasses.replace(PRESETS["tiny"], feature_dim=8))
    for step in (1, 2, 3, 4):
        for kind in ("step", "ema-step"):
            save_checkpoint(run_dir / f"generator-{kind}{step:06d}.safetensors", model.state_dict(), model.config)
    pair = 2 * (run_dir / "generator-step000001.safetensors").stat().st_size
    monkeypatch.setattr(gpu_round, "PART_BYTES", 2 ** 16 + pair + 4096)  # float32: one step's pair per tar
    rnd = gpu_round.Round(out, 60, "cpu")
    gpu_round._bundle_snapshots(rnd, run_dir)
    snapshots = rnd.summary["snapshots"]
    assert snapshots["float16"] is True and snapshots["steps"] == [1, 2, 3, 4]  # two pairs per tar, not one
    assert snapshots["files"] == ["snapshots-0.tar", "snapshots-1.tar"]
    with tarfile.open(out / "snapshots-1.tar") as tar:
        assert sorted(tar.getnames()) == [f"generator-{kind}{step:06d}.safetensors" for kind in ("ema-step", "step")
                                          for step in (3, 4)]
        tar.extractall(tmp_path / "kept", filter="data")
    back = apollo.load_model(tmp_path / "kept" / "generator-step000004.safetensors")
    assert back.config == model.config
    assert all(torch.equal(back.state_dict()[k], v.half().float()) for k, v in model.state_dict().items())


def test_the_next_rounds_recipe_grows_a_told_default_and_runs_every_phase(tmp_path):
    # configs/apollo-default-gpu-next.yaml, the device call docs/gpu.md names, shrunk to three
    # steps (one discriminator-only, two GAN) from a tiny carried generator
    recipe = load_config(Path("configs/apollo-default-gpu-next.yaml"))
    assert recipe.model.num_blocks == 5 and recipe.loss.anchor_model == "default" and recipe.loss.anchor_uncut_only
    assert recipe.loss.gan_from_step == 0 and recipe.loss.discriminator_only_steps == 100
    assert recipe.loss.adversarial == 0.1 and recipe.optim.batch_size == 32 and recipe.schedule.keep_every == 50
    assert recipe.optim.ema_decay == 0.98  # each kept step's weight average comes back too
    # it starts from the nsim-tuned generator kept in git (docs/gpu.md, "The start, measured on the CPU"):
    # the default's size and bitrate rows, trained without the inference-only fields the export sets again
    start_config = apollo.load_model(recipe.init_from).config
    assert recipe.init_from == "checkpoints/nsim1-step500/generator.safetensors"
    assert start_config.num_blocks == 3 and start_config.bitrate_classes == (24, 32, 48, 64, 96, 128)
    assert start_config.hole_gain_db_told == () and start_config.correction_floor_db is None
    corpus = _corpus(tmp_path / "corpus", {"a": [12, 12], "b": [12, 12]})
    torch.manual_seed(1)
    start = Apollo(dataclasses.replace(PRESETS["tiny"], feature_dim=8, residual=True))  # as the default is
    carried = tmp_path / "start.safetensors"
    save_checkpoint(carried, start.state_dict(), start.config)
    gpu_round.pack(corpus, train_mb=20, valid_mb=20, dest=tmp_path / "pack", wheels=False, tree=0, generator=carried)
    out = tmp_path / "out"
    tiny = ["optim.batch_size=2", "data.segment=0.5", "data.examples_per_epoch=8", "data.valid_examples=1",
            "data.workers=0", "schedule.checkpoint_every=1000", "schedule.log_every=1", "schedule.max_steps=3",
            "loss.discriminator_only_steps=1",  # the recipe's gan_from_step 0: no warm-up
            "optim.ema_decay=0.5"]  # the recipe's average, quicker: three steps move it visibly
    assert gpu_round.run(out, deadline=600, device="cpu", config_sets=tiny, speed=False, margin=12,
                         pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu-next.yaml", keep_every=1,
                         work=tmp_path) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"]["train"]["rc"] == 0 and summary["step"] == 3
    assert summary["config"]["init_from"].endswith("pack/generator.safetensors")
    assert summary["config"]["init_discriminator_from"] is None
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    first, *gan = [{k: float(v) for k, v in r.items() if v} for r in rows]
    assert first["loss_d"] > 0 and first["adversarial"] == 0 and first["feature_matching"] == 0  # critic alone
    for row in gan:  # then the GAN, its adversarial term weighted 0.1
        assert row["adversarial"] > 0
        weighted = row["reconstruction"] + row["feature_matching"] + 0.1 * row["adversarial"]
        assert row["loss_g"] == pytest.approx(weighted, rel=1e-4)
    gpu_round.join([out / "generator-part0.safetensors"], tmp_path / "g.safetensors", dtype="float32")
    grown = apollo.load_model(tmp_path / "g.safetensors")
    assert grown.config.feature_dim == 8 and grown.config.num_blocks == 5
    assert grown.config.bitrate_classes == (24, 32, 48, 64, 96, 128) and grown.config.correction_floor_db is None
    assert grown.config.dark_source_hz_told == () and grown.config.hole_gain_db_told == ()  # trained without
    assert grown.config.fill_gain_db_told == () and grown.config.fill_gain_from_hz_told == ()
    # the default's inference rules
    assert grown.bitrate_embedding.abs().sum() > 0  # the rows it was told learnt in these steps
    # every returned generator, exported as the default is shipped, ready to score
    written = gpu_round.candidates(out, tmp_path / "candidates", gpu_round.shipped_as())
    assert summary["snapshots"] == {"files": ["snapshots-0.tar"], "steps": [1, 2, 3], "averaged": True}
    assert [p.name for p in written] == ["step000001.safetensors", "step000002.safetensors",
                                         "step000003.safetensors", "ema-step000001.safetensors",
                                         "ema-step000002.safetensors", "ema-step000003.safetensors",
                                         "last.safetensors"]
    averaged = apollo.load_model(tmp_path / "candidates" / "ema-step000003.safetensors")
    assert averaged.config == apollo.load_model(tmp_path / "candidates" / "step000003.safetensors").config
    assert any(not torch.equal(v, averaged.state_dict()[k]) for k, v in
               apollo.load_model(tmp_path / "candidates" / "step000003.safetensors").state_dict().items())
    last, third = (apollo.load_model(tmp_path / "candidates" / f"{n}.safetensors") for n in ("last", "step000003"))
    assert last.config.normalize_peak and last.config.correction_floor_db == -6 and last.config.num_blocks == 5
    shipped = apollo.load_model("default").config
    assert last.config.dark_source_hz_told == shipped.dark_source_hz_told
    assert last.config.hole_gain_db_told == shipped.hole_gain_db_told and any(shipped.hole_gain_db_told)
    assert last.config.fill_gain_db_told == shipped.fill_gain_db_told and any(shipped.fill_gain_db_told)
    assert last.config.fill_gain_from_hz_told == shipped.fill_gain_from_hz_told
    assert all(torch.equal(v, third.state_dict()[k]) for k, v in last.state_dict().items())
    with pytest.raises(ValueError, match="no generator parts or snapshots"):
        gpu_round.candidates(tmp_path / "corpus", tmp_path / "none", [])
    # joined to the default's generator for unknown bitrates (v13's since v14), as the default ships
    joined = gpu_round.candidates(out, tmp_path / "joined", gpu_round.shipped_as(), unknown="default")
    pair = apollo.load_model(joined[-1])
    assert pair.config.unknown == shipped.unknown and dataclasses.replace(pair.config, unknown=None) == last.config
    v13 = apollo.load_model("default").unknown.state_dict()
    assert all(torch.equal(v, pair.unknown.state_dict()[k]) for k, v in v13.items())


def test_a_training_out_of_gpu_memory_goes_on_from_its_last_save_with_activation_checkpointing(tmp_path, monkeypatch):
    calls = []

    def step(self, name, command, timeout):  # the commands are recorded, not run
        calls.append((name, command))
        failed = name == "train"
        if failed:  # the GAN phase did not fit after the warm-up had saved
            (tmp_path / "gpu-round-run" / "last.pt").write_bytes(b"")  # not read: no generator was saved
            self.output = "step 300\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
        self.summary["steps"][name] = {"rc": 1 if failed else 0, "seconds": 0.0}
        return not failed

    monkeypatch.setattr(gpu_round.Round, "step", step)
    monkeypatch.setattr(gpu_round.shutil, "rmtree", lambda path, ignore_errors=False: Path(path).mkdir(exist_ok=True))
    (tmp_path / "pack").mkdir()
    assert gpu_round.run(tmp_path / "out", deadline=600, device="cpu", config_sets=[], speed=False,
                         pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu-next.yaml", work=tmp_path) == 0
    names = [name for name, _ in calls]
    assert names[-2:] == ["train", "train_checkpointed"]
    again = calls[-1][1]
    assert "--resume" in again and "activation_checkpointing=true" in again
    assert "--resume" not in calls[-2][1] and "activation_checkpointing=true" not in calls[-2][1]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["activation_checkpointing"] is True
    # a training that failed for another reason is not run again
    calls.clear()

    def broken(self, name, command, timeout):
        calls.append((name, command))
        self.output = "ValueError: unknown keys"
        self.summary["steps"][name] = {"rc": 2 if name == "train" else 0, "seconds": 0.0}
        return name != "train"

    monkeypatch.setattr(gpu_round.Round, "step", broken)
    gpu_round.run(tmp_path / "out2", deadline=600, device="cpu", config_sets=[], speed=False,
                  pack_dir=tmp_path / "pack", config="configs/apollo-default-gpu-next.yaml", work=tmp_path)
    assert [name for name, _ in calls][-1] == "train"
