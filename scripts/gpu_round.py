"""One GPU round in one call: GPU inference timings, then a model (the large one) trained to a deadline.

A GPU machine is lent now and then for 15 minutes, start-up included, with no network and 64 MiB
of working tree per call (docs/gpu.md). So everything travels with the call and one command does
it all. Three steps:

    # here, once per round: wheels the GPU machine lacks + as much of the real-music corpus as
    # fits in the call beside the working tree (train split, a little of valid) -> .gpu/ (ignored
    # by git, carried by the call)
    python scripts/gpu_round.py pack --corpus corpus/real3 --valid-mb 3 --track-seconds 30

    # there, in one call (device run, carry [".gpu"]); the next round's recipe: docs/gpu.md
    python3 scripts/gpu_round.py run --out $OUT --deadline 480

    # here, after: one checkpoint from the returned parts, or every returned generator as a candidate
    python scripts/gpu_round.py join OUT/generator-part*.safetensors -o apollo/weights/apollo-large.safetensors
    python scripts/gpu_round.py candidates OUT runs/candidates/gpu

`run` writes at most 8 files of at most 15 MiB to --out (the limits of what comes back): log.txt,
gpu_speed.json, summary.json, metrics.csv, discriminator.safetensors and the generator as
float16 parts (exact where the model is small), and with --keep-every N the generator of every N
steps as tar files. It starts from the generator `pack --generator` carried (.gpu/generator.safetensors,
or .gpu/generator.path naming a file the working tree carries anyway, which saves its copy for music),
else from apollo/weights/apollo-large.safetensors for the large recipe, and from the discriminator
`pack --discriminator` carried, when they exist; --config names another recipe than the large one.
Each step has its own timeout; training gets what is left of --deadline less the export margin,
and `apollo train --time-limit` stops it with a checkpoint.
`run --more`, a second call at once on the same warm machine (its files last while it is held), goes
on training the first call's run from its last save and returns only what it adds.
`run --device cpu --config-set ...` runs the same round on a CPU, to test it (tests/test_gpu_round.py).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK = ROOT / ".gpu"
# what the GPU machine lacks; PyAV (36 MB) stays home: CBR streams decode with libsndfile there
WHEELS = ("soundfile==0.14.0", "soxr==1.1.0", "lameenc==1.9.0", "cffi==2.0.0", "pycparser==2.23", "mutagen==1.48.1")
PART_BYTES = 15 * 2 ** 20
MAX_FILES = 8  # what comes back from one call
TRAVEL_BYTES = 64 * 2 ** 20  # what one call carries: the working tree git sees, and the pack
TRAVEL_SPARE_BYTES = 2 ** 20  # kept free of that, for files the session adds after packing
MIN_TRAIN_MB = 8.0  # the least training music a pack takes on its own: under it a round learns from a few tracks
OOM_RETRY_MIN_S = 90.0  # a training that ran out of memory is retried only with this much time left
EXPORT_MARGIN_S = 45.0  # default: training stops this long before the deadline to save, shard, copy
LARGE = ROOT / "apollo" / "weights" / "apollo-large.safetensors"
# pack --generator of a file the working tree carries anyway: the pack names it instead of a copy
GENERATOR_POINTER = "generator.path"
RETURNED = "returned.txt"  # in the run folder: the kept generators a call has already sent back
# kept steps travel as float16 where float32 would put fewer steps than this in a tar (a five-block step with
# its weight average fills one of 15 MiB); the screen then scores the rounded weights, which is what would ship
HALF_SNAPSHOTS_BELOW = 3
KEPT_KINDS = ("generator-step", "generator-ema-step")  # a run's kept steps and their weight averages
# the export settings of the default (normalize_peak, correction_floor_db since v5, dark_source_hz_told since
# v10, hole_gain_db_told since v11, fill_gain_db_told and fill_gain_from_hz_told since v12): the rounds train
# without all but normalize_peak (configs/apollo-default-gpu-next.yaml), exports set them again
SHIPPED_FIELDS = ("normalize_peak", "correction_floor_db", "dark_source_hz_told", "hole_gain_db_told",
                  "fill_gain_db_told", "fill_gain_from_hz_told")


def shipped_as() -> list[str]:
    """SHIPPED_FIELDS as the shipped default's file has them, as export --set items (values in JSON, which
    YAML reads)."""
    from apollo.pretrained import built_in_path
    from apollo.states import read_checkpoint

    config = read_checkpoint(built_in_path("default"))[1]
    values = {name: getattr(config, name) for name in SHIPPED_FIELDS}
    return [f"{name}={json.dumps(list(v) if isinstance(v, tuple) else v)}" for name, v in values.items()]


# -- here: pack ---------------------------------------------------------------------------------

OGG_SUFFIXES = (".ogg", ".oga", ".opus")


def ogg_prefix_bytes(path: Path, seconds: float) -> int | None:
    """The length of the shortest run of whole Ogg pages from the start of `path` that holds its
    first `seconds` (by the pages' granule positions), or None where that is the whole file.

    Those bytes are a valid stream that decodes to the file's first samples exactly, with no
    re-encoding: a pack can carry the start of many tracks instead of a few whole ones.
    """
    import soundfile as sf

    wanted = seconds * sf.info(str(path)).samplerate  # Vorbis counts granules at its rate, Opus at 48 kHz
    size = path.stat().st_size
    position = 0
    with open(path, "rb") as handle:  # page headers only: the bodies are skipped, not read
        while position + 27 <= size:
            handle.seek(position)
            header = handle.read(27)
            if header[:4] != b"OggS":
                raise ValueError(f"{path}: not an Ogg page at byte {position}")
            granule = int.from_bytes(header[6:14], "little", signed=True)
            table = handle.read(header[26])
            position += 27 + len(table) + sum(table)
            if granule >= wanted:
                return position if position < size else None
    return None


def _carried_sizes(tracks: list[dict], corpus: Path, track_seconds: float | None) -> dict[str, tuple[int, float]]:
    """Per track name: the bytes and about the seconds a pack carries of it, its first track_seconds
    (`ogg_prefix_bytes`) where it is an Ogg file longer than that, else the whole file."""
    out = {}
    for track in tracks:
        path = corpus / track["path"]
        cut = (ogg_prefix_bytes(path, track_seconds) if track_seconds and track["seconds"] > track_seconds
               and path.suffix.lower() in OGG_SUFFIXES else None)
        out[track["name"]] = ((cut, track_seconds) if cut is not None else (path.stat().st_size, track["seconds"]))
    return out


def _round_robin(tracks: list[dict], budget: int, sizes: dict[str, tuple[int, float]]) -> list[dict]:
    """Tracks taken one per package in turn while they fit, most minutes per byte first (`sizes`:
    the bytes and seconds carried of each, by name)."""
    by_package: dict[str, list[dict]] = {}
    for track in sorted(tracks, key=lambda t: (sizes[t["name"]][0] / sizes[t["name"]][1], t["name"])):
        by_package.setdefault(track["package"], []).append(track)
    chosen, used = [], 0
    while any(by_package.values()):
        for package in sorted(by_package):
            queue = by_package[package]
            while queue:
                track = queue.pop(0)
                size = sizes[track["name"]][0]
                if used + size <= budget:
                    chosen.append(track)
                    used += size
                    break
    return chosen


def tree_files(root: Path = ROOT) -> set[str]:
    """What a device call sends besides the pack: the files git tracks and the untracked ones it does
    not ignore, relative to root."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.split(b"\0")
    return {n.decode() for n in names if n and (root / n.decode()).is_file()}


def tree_bytes(root: Path = ROOT, files: set[str] | None = None) -> int:
    """The size of tree_files (`files`, where the caller has listed them already)."""
    return sum((root / n).stat().st_size for n in (tree_files(root) if files is None else files))


def in_tree(path: Path, root: Path = ROOT, files: set[str] | None = None) -> str | None:
    """path relative to root if the working tree (tree_files, or `files`) carries it to the device
    anyway, else None."""
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None
    return rel if rel in (tree_files(root) if files is None else files) else None


def carried_generator(pack_dir: Path, root: Path = ROOT) -> Path | None:
    """The generator `pack --generator` carried: the pack's copy, or the tree's file the pack names."""
    copy = pack_dir / "generator.safetensors"
    if copy.exists():
        return copy
    pointer = pack_dir / GENERATOR_POINTER
    if not pointer.exists():
        return None
    path = root / pointer.read_text().strip()
    if not path.is_file():
        raise FileNotFoundError(f"{pointer} names {path}, which the working tree does not have")
    return path


def pack(corpus: Path, train_mb: float | None, valid_mb: float, dest: Path = PACK, discriminator: Path | None = None,
         wheels: bool = True, generator: Path | None = None, tree: int | None = None,
         min_train_mb: float = MIN_TRAIN_MB, track_seconds: float | None = None) -> dict:
    """Copies the wheels and a share of the corpus into dest (replacing an earlier pack's music),
    and the generator (as is, or named in GENERATOR_POINTER where the working tree carries it) and
    discriminator (float16) a round starts from, if given. train_mb
    None: as much training music as fits in one call beside the working tree (`tree` bytes,
    tree_bytes() by default), refused where that is under min_train_mb; a larger train_mb than fits
    is refused. With track_seconds, of each Ogg track longer than that only its first
    track_seconds travel (whole pages, not re-encoded), so the same bytes hold more tracks."""
    if track_seconds is not None and not track_seconds > 0:
        raise ValueError(f"--track-seconds must be positive, not {track_seconds:g}")
    if wheels:
        fetch_wheels(dest / "wheels")
    # what travels besides the music, checked before an earlier pack is touched
    files = tree_files()  # listed once: its size, and whether it carries the generator
    tree = tree_bytes(files=files) if tree is None else tree
    weights = sum(f.stat().st_size for f in (dest / "wheels").glob("*.whl"))
    pointed = in_tree(generator, files=files) if generator is not None else None  # travels with the tree: no copy
    weights += generator.stat().st_size if generator is not None and pointed is None else 0
    weights += discriminator.stat().st_size // 2 if discriminator is not None else 0  # stored as float16
    fits = (TRAVEL_BYTES - TRAVEL_SPARE_BYTES - tree - weights - int(valid_mb * 2 ** 20)) / 2 ** 20
    if train_mb is None:
        if fits < min_train_mb:  # a round on no music, or one refused at the door, costs a lent GPU's 15 minutes
            raise ValueError(f"the working tree ({tree / 2 ** 20:.1f} MiB), wheels and weights leave "
                             f"{max(fits, 0):.1f} MiB for training music in one 64-MiB device call, under the "
                             f"{min_train_mb:g} a round "
                             "needs: move a kept checkpoint out of the tree (checkpoints/README.md)")
        train_mb = fits
    if train_mb > fits:
        raise ValueError(f"--train-mb {train_mb:g} does not fit: one device call carries 64 MiB, and the working "
                         f"tree, wheels and weights leave {max(fits, 0):.1f} MB for training music "
                         f"(omit --train-mb to take that)")
    carried = dest / "discriminator.safetensors"
    carried.unlink(missing_ok=True)
    (dest / "generator.safetensors").unlink(missing_ok=True)
    (dest / GENERATOR_POINTER).unlink(missing_ok=True)
    if generator is not None:
        dest.mkdir(parents=True, exist_ok=True)
        if pointed is not None:
            (dest / GENERATOR_POINTER).write_text(pointed + "\n")
        else:
            shutil.copyfile(generator, dest / "generator.safetensors")
    if discriminator is not None:
        from safetensors.torch import load_file

        from apollo.training.export import save_discriminator

        dest.mkdir(parents=True, exist_ok=True)
        save_discriminator(load_file(str(discriminator)), carried)  # float16
    import soundfile as sf

    from apollo.data.realmusic import MANIFEST, kept_tracks

    shutil.rmtree(dest / "music", ignore_errors=True)  # an earlier pack's
    tracks = [t for t in kept_tracks(corpus) if t["split"] in ("train", "valid")]
    sizes = _carried_sizes(tracks, corpus, track_seconds)
    chosen = (_round_robin([t for t in tracks if t["split"] == "train"], int(train_mb * 2 ** 20), sizes)
              + _round_robin([t for t in tracks if t["split"] == "valid"], int(valid_mb * 2 ** 20), sizes))
    music = dest / "music"
    for number, track in enumerate(chosen):
        target = music / track["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        size = sizes[track["name"]][0]
        if size < (corpus / track["path"]).stat().st_size:  # its first pages only
            with open(corpus / track["path"], "rb") as handle:
                target.write_bytes(handle.read(size))
            info = sf.info(str(target))
            chosen[number] = dict(track, seconds=round(info.frames / info.samplerate, 2),
                                  packed_from_seconds=track["seconds"])
        else:
            shutil.copyfile(corpus / track["path"], target)
    manifest = json.loads((corpus / MANIFEST).read_text())
    manifest["tracks"] = chosen
    manifest["packed_from"] = str(corpus)
    (music / MANIFEST).write_text(json.dumps(manifest, indent=1))
    minutes = sum(t["seconds"] for t in chosen) / 60
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    info = {"tracks": len(chosen), "train": sum(t["split"] == "train" for t in chosen),
            "valid": sum(t["split"] == "valid" for t in chosen), "minutes": round(minutes, 1),
            "train_minutes": round(sum(t["seconds"] for t in chosen if t["split"] == "train") / 60, 1),
            "packages": sorted({t["package"] for t in chosen}), "pack_mb": round(size / 2 ** 20, 1),
            "travels_mb": round((tree + size) / 2 ** 20, 1)}
    print(json.dumps(info))
    return info


def fetch_wheels(folder: Path) -> None:
    """The GPU machine's missing wheels (its Python is 3.12), downloaded unless already there."""
    if all(any(folder.glob(f"{w.split('==')[0]}-{w.split('==')[1]}-*.whl")) for w in WHEELS):
        return
    platforms = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp",
                    *[a for p in platforms for a in ("--platform", p)], "-d", str(folder), *WHEELS], check=True)


# -- there: run ---------------------------------------------------------------------------------

class Round:
    """The steps of one call, each logged with its wall time, never raising past the export."""

    def __init__(self, out: Path, deadline: float, device: str) -> None:
        self.start = time.monotonic()
        self.out, self.deadline, self.device = out, deadline, device
        self.log = open(out / "log.txt", "a", buffering=1)
        self.summary: dict = {"device": device, "steps": {}}
        self.output = ""  # the last step's output
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def say(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f} s] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")

    def step(self, name: str, command: list[str], timeout: float) -> bool:
        self.say(f"{name}: {' '.join(command)} (timeout {timeout:.0f} s)")
        began = time.monotonic()
        try:
            done = subprocess.run(command, cwd=ROOT, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
            output, code = done.stdout, done.returncode
        except subprocess.TimeoutExpired as err:
            output, code = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""), 124
        seconds = round(time.monotonic() - began, 1)
        self.output = output
        tail = "\n".join(output.splitlines()[-25:])
        self.log.write(tail + "\n")
        print(tail, flush=True)
        self.summary["steps"][name] = {"rc": code, "seconds": seconds}
        self.say(f"{name}: rc {code} in {seconds} s")
        return code == 0

    def install(self, wheels: Path) -> None:
        site = Path("/tmp/gpu-round-site")
        files = sorted(glob.glob(str(wheels / "*.whl")))
        if files:
            self.step("install", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                                  "--no-compile", "--no-cache-dir", "--upgrade", "--target", str(site), *files], 120)
        paths = [str(site), str(ROOT), self.env.get("PYTHONPATH", "")]
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)


def _shard(source: Path, out: Path, prefix: str) -> list[str]:
    """The checkpoint's tensors in parts of at most PART_BYTES, each with the config: as stored
    when the whole file fits in one part (a default-size model comes back exact), else float16."""
    from safetensors.torch import save_file

    tensors, meta = _read_safetensors(source)
    names = list(tensors)
    half = source.stat().st_size > PART_BYTES
    parts: list[dict] = [{}]
    size = 0
    for name in names:
        t = _float16(tensors[name]) if half else tensors[name]
        nbytes = t.numel() * t.element_size()
        if parts[-1] and size + nbytes > PART_BYTES - 2 ** 16:  # room for the header
            parts.append({})
            size = 0
        parts[-1][name] = t.contiguous()
        size += nbytes
    written = []
    for i, part in enumerate(parts):
        path = out / f"{prefix}-part{i}.safetensors"
        save_file(part, str(path), metadata={**meta, "part": f"{i}/{len(parts)}"})
        written.append(path.name)
    return written


def run(out: Path, deadline: float, device: str, config_sets: list[str], speed: bool = True,
        margin: float = EXPORT_MARGIN_S, pack_dir: Path = PACK, fresh: bool = False,
        compile_timing: bool = False, config: str = "configs/apollo-large.yaml", keep_every: int = 0,
        work: Path = Path("/tmp"), more: bool = False) -> int:
    """The round: install, time, prepare the cache, train `config` to the deadline, export;
    returns 0. With keep_every, the generator of every that many steps comes back too. The cache
    and the run folder go under `work`. With `more`, a later call on the same warm machine: the
    earlier call's training goes on from its last save (no timings, no new cache), and only the
    kept generators not yet returned come back."""
    out.mkdir(parents=True, exist_ok=True)
    rnd = Round(out, deadline, device)
    py = sys.executable
    cache, run_dir = work / "gpu-round-cache", work / "gpu-round-run"
    if more and not ((run_dir / "last.pt").exists() and (cache / "index.json").exists()):
        rnd.say("more: no earlier training on this machine (it was not warm); a round from the pack instead")
        more = False
    rnd.summary["more"] = more
    rnd.install(pack_dir / "wheels")
    workers = min(16, os.cpu_count() or 1)
    if not more:
        _fresh_start(rnd, py, out, device, speed, compile_timing, pack_dir, cache, run_dir, workers)
    sets = [f"data.cache={cache}", f"data.workers={max(1, workers - 2)}", *config_sets]
    if keep_every:
        sets.append(f"schedule.keep_every={keep_every}")
    carried = carried_generator(pack_dir)
    if carried is not None and not fresh:
        sets.append(f"init_from={carried}")
    elif LARGE.exists() and not fresh and config == "configs/apollo-large.yaml":
        sets.append(f"init_from={LARGE}")
    if not fresh and (pack_dir / "discriminator.safetensors").exists():
        sets.append(f"init_discriminator_from={pack_dir / 'discriminator.safetensors'}")
    budget = deadline - rnd.elapsed() - margin
    rnd.summary.update(train_time_limit_s=round(budget, 1), recipe=config)
    if budget >= 5:
        _train(rnd, py, config, run_dir, sets, budget, margin, resume=more)
        budget = deadline - rnd.elapsed() - margin
        if _out_of_memory(rnd) and budget >= OOM_RETRY_MIN_S:
            # the recipe's batch did not fit this GPU (the GAN phase needs more than the warm-up): the
            # same batch with block activations recomputed in the backward pass (a quarter of the
            # memory on the CPU; what the recomputing costs a GPU is not measured yet), from the last
            # save if there is one
            resume = (run_dir / "last.pt").exists()
            rnd.say(f"train: out of memory; {'resumed' if resume else 'again'} with activation checkpointing")
            rnd.summary.update(train_time_limit_s=round(budget, 1), activation_checkpointing=True)
            _train(rnd, py, config, run_dir, [*sets, "activation_checkpointing=true"], budget, margin,
                   "train_checkpointed", resume)
    else:
        rnd.say(f"train: skipped, only {budget:.0f} s left")
    return _finish(rnd, run_dir)


def _fresh_start(rnd: Round, py: str, out: Path, device: str, speed: bool, compile_timing: bool, pack_dir: Path,
                 cache: Path, run_dir: Path, workers: int) -> None:
    """A first call's steps before training: the machine, the timings, a new cache, an empty run folder."""
    rnd.step("machine", [py, "-c", "import torch, platform; print(torch.__version__, platform.python_version(), "
                         "torch.cuda.get_device_name() if torch.cuda.is_available() else 'no cuda')"], 60)
    if device == "cuda" and speed:
        rnd.step("gpu_speed", [py, "benchmarks/gpu_speed.py", "--json", str(out / "gpu_speed.json"),
                               "--batches", "1", "4", "16", "--seconds", "10", "--repeats", "5"], 150)
        if compile_timing:
            rnd.step("gpu_speed_compile", [py, "benchmarks/gpu_speed.py", "--json", str(out / "gpu_speed_compile.json"),
                                           "--batches", "1", "--precisions", "bf16", "--compile", "--seconds", "10",
                                           "--repeats", "5"], 150)
        rnd.step("restore", [py, "-m", "apollo.cli", "restore", "examples/example.mp3", "-o", "/tmp/gpu-round-restored",
                             "--device", "cuda", "--overwrite", "-q"], 60)
    elif speed:
        rnd.step("speed_cpu", [py, "benchmarks/gpu_speed.py", "--device", "cpu", "--config", "tiny", "--json",
                               str(out / "gpu_speed.json"), "--batches", "1", "--seconds", "1", "--repeats", "1",
                               "--precisions", "fp32"], 120)
    shutil.rmtree(cache, ignore_errors=True)
    rnd.step("prepare", [py, "-m", "apollo.cli", "data", "prepare", str(pack_dir / "music"), "--out", str(cache),
                         "--workers", str(workers), "-q"], 150)
    shutil.rmtree(run_dir, ignore_errors=True)


def _finish(rnd: Round, run_dir: Path) -> int:
    """Export, then the summary; returns 0."""
    _export(rnd, run_dir)
    rnd.summary["total_s"] = round(rnd.elapsed(), 1)
    (rnd.out / "summary.json").write_text(json.dumps(rnd.summary, indent=1))
    rnd.say("done")
    return 0


def _train(rnd: Round, py: str, config: str, run_dir: Path, sets: list[str], budget: float, margin: float,
           name: str = "train", resume: bool = False) -> bool:
    """`apollo train` of `config` with `sets`, stopped by --time-limit `budget` seconds."""
    command = [py, "-m", "apollo.cli", "train", "--config", config, "--run-dir", str(run_dir),
               "--time-limit", f"{budget:.0f}", "-q", *(["--resume"] if resume else [])]
    for item in sets:
        command += ["--set", item]
    return rnd.step(name, command, budget + 0.8 * margin)


def _out_of_memory(rnd: Round) -> bool:
    """Whether the training that just ended failed for GPU memory (PyTorch: "CUDA out of memory")."""
    failed = rnd.summary["steps"].get("train", {}).get("rc", 0) != 0
    return failed and "out of memory" in rnd.output.lower()


def _export(rnd: Round, run_dir: Path) -> None:
    """Generator parts, the discriminator, metrics and throughput into the out folder."""
    import csv

    generator = run_dir / "generator-last.safetensors"
    if not generator.exists():
        rnd.say("export: no generator was written")
        return
    rnd.summary["generator_parts"] = _shard(generator, rnd.out, "generator")
    try:
        import torch
        from safetensors.torch import save_file

        # not apollo.training.export.save_discriminator: on the GPU machine only the subprocesses
        # have the project on PYTHONPATH, this process does not
        state = torch.load(run_dir / "last.pt", map_location="cpu", weights_only=True)
        save_file({k: v.contiguous() for k, v in state["discriminator"].items()},
                  str(rnd.out / "discriminator.safetensors"))
        rnd.summary.update(step=state["step"], epoch=state["epoch"])
    except (OSError, RuntimeError, KeyError) as err:
        rnd.say(f"export: discriminator not written ({err})")
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        shutil.copyfile(metrics, rnd.out / "metrics.csv")
        rates = [float(r["steps_per_s"]) for r in csv.DictReader(open(metrics)) if r.get("steps_per_s")]
        if rates:
            import yaml

            batch = yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["batch_size"]
            rate = sorted(rates)[len(rates) // 2]
            rnd.summary.update(median_steps_per_s=round(rate, 3), batch_size=batch,
                               examples_per_s=round(rate * batch, 2))
    if (run_dir / "config.yaml").exists():
        import yaml

        rnd.summary["config"] = yaml.safe_load((run_dir / "config.yaml").read_text())
    _bundle_snapshots(rnd, run_dir)


def _bundle_snapshots(rnd: Round, run_dir: Path) -> None:
    """The kept generator-stepN files an earlier call has not returned (RETURNED in the run folder
    lists those it did), with the weight average of each step where the recipe keeps one
    (generator-ema-stepN, optim.ema_decay), as tar files of at most PART_BYTES, as many as the call's
    file limit leaves room for (the summary's other files counted); evenly thinned by step if they do not fit.
    As float16 copies where float32 would put under HALF_SNAPSHOTS_BELOW steps in a tar and float16 more."""
    import tarfile

    listed = run_dir / RETURNED
    returned = set(listed.read_text().split()) if listed.exists() else set()
    kept: dict[int, list[Path]] = {}
    for kind in KEPT_KINDS:
        for path in sorted(run_dir.glob(f"{kind}*.safetensors")):
            if path.name not in returned:
                kept.setdefault(int(path.stem.rsplit("step", 1)[1]), []).append(path)
    if not kept:
        return
    steps = sorted(kept)
    room = MAX_FILES - len(list(rnd.out.iterdir())) - 1  # summary.json comes after
    per_step = max(len(paths) for paths in kept.values())
    size = max(p.stat().st_size for paths in kept.values() for p in paths) * per_step

    def steps_per_tar(step_bytes: int) -> int:
        return (PART_BYTES - 2 ** 16) // (step_bytes + 1024 * per_step)

    per_tar = max(1, steps_per_tar(size))
    half = per_tar < HALF_SNAPSHOTS_BELOW and steps_per_tar(size // 2) > per_tar
    if half:
        size //= 2
        per_tar = steps_per_tar(size)
    capacity = max(room, 0) * per_tar
    if 0 < capacity < len(steps):  # evenly spaced, ending at the last
        steps = [steps[len(steps) - 1 - k * len(steps) // capacity] for k in reversed(range(capacity))]
    if room < 1 or size > PART_BYTES - 2 ** 16:
        rnd.say("export: no room for the kept generators")
        return
    names = []
    for i in range(0, len(steps), per_tar):
        name = f"snapshots-{i // per_tar}.tar"
        with tarfile.open(rnd.out / name, "w") as tar:
            for step in steps[i:i + per_tar]:
                for path in kept[step]:
                    tar.add(_half_copy(path) if half else path, arcname=path.name)
        names.append(name)
    sent = {p.name for step in steps for p in kept[step]}
    listed.write_text("".join(f"{n}\n" for n in sorted(returned | sent)))
    rnd.summary["snapshots"] = {"files": names, "steps": steps}
    if per_step > 1:
        rnd.summary["snapshots"]["averaged"] = True  # each step's weight average came too
    if half:
        rnd.summary["snapshots"]["float16"] = True


def _read_safetensors(path: Path) -> tuple[dict, dict[str, str]]:
    """A safetensors file's tensors, in stored order, and its metadata (the config). Not apollo.states': on
    the GPU machine this process does not have the project on its path (see _export)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata() or {}


def _float16(tensor):  # a torch.Tensor; torch is imported lazily in this script
    """A floating tensor as float16, how returned weights travel when float32 does not fit; others as they are."""
    import torch

    return tensor.to(torch.float16) if tensor.is_floating_point() else tensor


def _half_copy(path: Path) -> Path:
    """A float16 copy of a safetensors checkpoint beside it (path.half), metadata (the config) kept."""
    from safetensors.torch import save_file

    tensors, meta = _read_safetensors(path)
    copy = path.with_suffix(".half")
    save_file({k: _float16(v).contiguous() for k, v in tensors.items()}, str(copy), metadata=meta)
    return copy


# -- here: join ---------------------------------------------------------------------------------

def join(parts: list[Path], output: Path, dtype: str = "float16") -> None:
    """One checkpoint (load_model's format) from the parts of one export, checked complete."""
    import torch
    from safetensors import safe_open

    from apollo.model.config import ApolloConfig
    from apollo.states import CONFIG_KEY, save_checkpoint

    state, config, counts, seen = {}, None, set(), set()
    for path in parts:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            state.update({k: handle.get_tensor(k) for k in handle.keys()})
        index, count = meta["part"].split("/")
        seen.add(int(index))
        counts.add(int(count))
        part_config = ApolloConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        if config is not None and part_config != config:
            raise ValueError(f"{path}: another model's part")
        config = part_config
    if len(counts) != 1 or seen != set(range(counts.pop())):
        raise ValueError(f"parts {sorted(seen)} do not make one whole checkpoint")
    target = getattr(torch, dtype)
    state = {k: v.to(target) if v.is_floating_point() else v for k, v in state.items()}
    extra = {k: v for k, v in meta.items() if k in ("step", "epoch")}
    save_checkpoint(output, state, config, metadata=extra)


def candidates(returned: Path, dest: Path, sets: list[str], unknown: str | None = None) -> list[Path]:
    """Every generator a round returned (its kept steps, their weight averages and its last), each exported
    with `sets` as a checkpoint the evaluation and the probes take: dest/step000300.safetensors, ...,
    dest/ema-step000300.safetensors, ..., dest/last.safetensors. `unknown` (e.g. "default": v13's generator
    since v14) joins each to the model that restores inputs of unknown bitrate, as the default ships
    (export --unknown-from), so their untold rows are that model's."""
    import tarfile
    import tempfile

    from apollo.training import export

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as work:
        for tar in sorted(returned.glob("snapshots-*.tar")):
            with tarfile.open(tar) as handle:
                handle.extractall(work, filter="data")
        sources = [(p.stem.split("generator-")[1], p) for kind in KEPT_KINDS
                   for p in sorted(Path(work).glob(f"{kind}*.safetensors"))]
        parts = sorted(returned.glob("generator-part*.safetensors"))
        if parts:
            join(parts, Path(work) / "last.safetensors", dtype="float32")  # float16 parts widen exactly
            sources.append(("last", Path(work) / "last.safetensors"))
        if not sources:
            raise ValueError(f"{returned}: no generator parts or snapshots (is it a round's $OUT?)")
        for name, source in sources:
            target = dest / f"{name}.safetensors"
            args = ["--model", str(target), str(source)]
            for item in sets:
                args += ["--set", item]
            if unknown is not None:
                args += ["--unknown-from", unknown]
            if export.main(args) != 0:
                raise ValueError(f"{source.name}: the export failed")
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack", help="here: wheels and a share of the corpus -> .gpu/")
    p.add_argument("--corpus", type=Path, default=ROOT / "corpus" / "real")
    p.add_argument("--train-mb", type=float, default=None,
                   help="MB of training music (default: as much as fits in one call beside the working tree)")
    p.add_argument("--valid-mb", type=float, default=4.0)
    p.add_argument("--dest", type=Path, default=PACK)
    p.add_argument("--discriminator", type=Path, help="an earlier round's discriminator, carried as float16")
    p.add_argument("--generator", type=Path, help="the generator the round starts from, carried as is")
    p.add_argument("--track-seconds", type=float, default=None, metavar="SECONDS",
                   help="carry only the first SECONDS of each Ogg track (whole pages, not re-encoded), so the "
                        "same bytes hold more tracks (default: whole tracks)")
    r = sub.add_parser("run", help="there: the whole round in one call")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--deadline", type=float, default=480.0, help="seconds from start to the end of the export")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    r.add_argument("--pack", type=Path, default=PACK, help="what `pack` wrote (default: .gpu/)")
    r.add_argument("--fresh", action="store_true", help="train from scratch, not from the shipped large weights")
    r.add_argument("--export-margin", type=float, default=EXPORT_MARGIN_S,
                   help="seconds kept after training for saving and export (default: %(default)s)")
    r.add_argument("--no-speed", action="store_true", help="skip the timings (a later round of the same day)")
    r.add_argument("--more", action="store_true",
                   help="a later call on the same warm machine: go on training the earlier call's run from its "
                        "last save and return what it adds (a normal round if the machine is fresh)")
    r.add_argument("--compile-timing", action="store_true",
                   help="after the timing sweep, also time bf16 batch 1 with and without torch.compile")
    r.add_argument("--config", default="configs/apollo-large.yaml", help="the recipe (default: %(default)s)")
    r.add_argument("--keep-every", type=int, default=0, metavar="STEPS",
                   help="also return the generator of every this many steps (tar files of snapshots)")
    r.add_argument("--config-set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra --set for apollo train (tests shrink the model with these)")
    j = sub.add_parser("join", help="here: rebuild one checkpoint from the returned parts")
    j.add_argument("parts", nargs="+", type=Path)
    j.add_argument("-o", "--output", type=Path, required=True)
    j.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"])
    c = sub.add_parser("candidates", help="here: every returned generator exported as a candidate to score")
    c.add_argument("returned", type=Path, help="the round's $OUT, as fetched")
    c.add_argument("dest", type=Path)
    c.add_argument("--set", action="append", default=None, metavar="KEY=VALUE",
                   help="model config for the exports (default: normalize_peak, correction_floor_db and "
                        "dark_source_hz_told as the shipped default has them)")
    c.add_argument("--unknown-from", metavar="CHECKPOINT",
                   help="join each export to this model for inputs of unknown bitrate, as the default ships since "
                        "v14 (`default` gives the default's own: v13's generator)")
    args = parser.parse_args()
    if args.command == "pack":
        try:
            pack(args.corpus, args.train_mb, args.valid_mb, dest=args.dest, discriminator=args.discriminator,
                 generator=args.generator, track_seconds=args.track_seconds)
        except ValueError as err:
            parser.error(str(err))
    elif args.command == "run":
        sys.exit(run(args.out, args.deadline, args.device, args.config_set, speed=not args.no_speed,
                     margin=args.export_margin, pack_dir=args.pack, fresh=args.fresh,
                     compile_timing=args.compile_timing, config=args.config, keep_every=args.keep_every,
                     more=args.more))
    elif args.command == "candidates":
        try:
            for path in candidates(args.returned, args.dest, args.set or shipped_as(), args.unknown_from):
                print(path)
        except ValueError as err:
            parser.error(str(err))
    else:
        join(args.parts, args.output, args.dtype)


if __name__ == "__main__":
    main()
