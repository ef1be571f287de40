"""The paper's evaluation: degrade test excerpts at each bitrate, restore, score, tabulate, plot.

Excerpts are grouped as in Table II (vocals, single stem, multi-stem, multi-stem + vocals) when
stems are known, and every excerpt also counts in "overall". Results go to a CSV one row per
(excerpt, bitrate, system) as soon as they exist, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import csv
import functools
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import degrade, metrics
from .audio import fit_length, resample
from .diagnostics import LEVEL_BANDS, diagnose

GROUPS = ("vocals", "single_stem", "multi_stem", "multi_stem_vocals")
DIAGNOSTICS = ("lsd_below", "holes", "transient_envelope", "transient_onsets", "hop_comb",
               *(f"level_{lo / 1000:g}-{hi / 1000:g}k" for lo, hi in LEVEL_BANDS))
METRICS = ("sdr", "si_snr", "visqol", "lsd", "lsd_high", *DIAGNOSTICS)
UNTOLD = "untold"  # a variant scored like a precision: the model not told the input's bitrate
FIELDS = ("excerpt", "group", "bitrate", "system", *METRICS, "cutoff_hz", "checkpoint_sha256")


@dataclass(frozen=True)
class Excerpt:
    name: str
    group: str
    audio: np.ndarray  # (2, samples) at the evaluation rate, peak 0.9


def make_excerpts(data: str | Path, rate: int = 44100, seconds: float = 10.0, per_track: int = 1,
                  split: str = "test", match: str | Sequence[str] | None = None) -> list[Excerpt]:
    """Test excerpts from a dataset folder (any layout the readers know), silence excluded.

    match keeps only the tracks whose name contains it, or one of several (before any audio is read).
    """
    from .data.cache import load_track
    from .data.readers import read_tracks
    from .data.silence import active_windows

    # a folder whose track names all hash to train is evaluated whole; a missing valid split is not
    chosen = read_tracks(data, split=split) or (read_tracks(data) if split == "test" else [])
    names = [match] if isinstance(match, str) else match
    chosen = [t for t in chosen if names is None or any(n in t.name for n in names)]
    excerpts: list[Excerpt] = []
    for track in chosen:
        stems, mixture = load_track(track, rate)
        if mixture is None:
            continue
        stems = {c: fit_length(s, mixture.shape[1]) for c, s in stems.items()}
        candidates: list[tuple[str, np.ndarray]] = []
        vocals = [c for c in stems if "vocal" in c]
        others = [c for c in stems if c not in vocals]
        if not stems:
            candidates.append(("overall", mixture))
        if vocals:
            candidates.append(("vocals", sum(stems[c] for c in vocals)))
        if others:
            candidates.append(("single_stem", stems[others[0]]))
        if len(others) > 1:
            candidates.append(("multi_stem", sum(stems[c] for c in others)))
        if vocals and others:
            candidates.append(("multi_stem_vocals", mixture))
        n = int(seconds * rate)
        for group, audio in candidates:
            windows = active_windows(audio, rate, window=seconds, hop=seconds)
            for i, (start, _) in enumerate(windows[:per_track]):
                clip = audio[:, start:start + n]
                peak = float(np.abs(clip).max())
                if peak > 1e-4:
                    excerpts.append(Excerpt(f"{track.name}/{group}/{i}", group, (0.9 * clip / peak).astype(np.float32)))
    return excerpts


@functools.lru_cache(maxsize=1)
def _load_models(checkpoints: tuple[str, ...], precisions: tuple[str, ...]):  # noqa: ANN202
    """Restorers by system name; cached so each worker process loads the models once."""
    import torch

    from .api import Restorer

    names = system_names(list(checkpoints))
    threads = torch.get_num_threads()  # the worker's share, set by torch_threads: not to be raised
    return {_with_precision(names[c], p): Restorer(c, device="cpu", segment=0,
                                                   precision="fp32" if p == UNTOLD else p, threads=threads)
            for c in checkpoints for p in ("fp32", *precisions)}


def _job(args: tuple) -> list[dict]:
    """Scores one (excerpt, bitrate): the MP3 input and every model's restoration."""
    excerpt, bitrate, rate, checkpoints, done, with_visqol, precisions, hashes = args
    ref = excerpt.audio
    coded = degrade.mp3(ref, rate, bitrate)
    systems = {"mp3": coded}
    for name, restorer in _load_models(checkpoints, precisions).items():
        if name in done:
            continue
        told = None if name.endswith(f"-{UNTOLD}") else bitrate  # untold: as WAV/FLAC input is restored
        out, out_rate = restorer.restore(coded, rate, bitrate=told)
        systems[name] = resample(out, out_rate, rate)
    rows = []
    for system, estimate in systems.items():
        if system in done:
            continue
        row = {"excerpt": excerpt.name, "group": excerpt.group, "bitrate": bitrate, "system": system,
               "checkpoint_sha256": hashes.get(system, "")}
        row.update(score_restoration(ref, estimate, rate, coded, with_visqol=with_visqol))
        rows.append(row)
    return rows


def score_aligned(reference: np.ndarray, estimate: np.ndarray, rate: int, degraded: np.ndarray | None,
                  with_visqol: bool = True) -> dict[str, float]:
    """Every metric and diagnostic of an `estimate` already aligned to `reference`; `degraded` gives
    the cutoff the band metrics split at. The one scoring rule of this module's rows, of
    `apollo evaluate --reference` and of the benchmarks' probes."""
    row = metrics.score(reference, estimate, rate, degraded=degraded, with_visqol=with_visqol)
    row.update(diagnose(reference, estimate, rate, row["cutoff_hz"]))
    return row


def score_restoration(reference: np.ndarray, estimate: np.ndarray, rate: int, degraded: np.ndarray,
                      with_visqol: bool = True) -> dict[str, float]:
    """score_aligned of one restoration, aligned to `reference` first (the codec's delay and the
    model's are not errors; up to 2048 samples)."""
    est, _ = metrics.align(reference, estimate, max_lag=2048)
    return score_aligned(reference, est, rate, degraded, with_visqol=with_visqol)


def evaluate_dataset(data: str | Path, checkpoints: list[str], out: str | Path,
                     bitrates: tuple[int, ...] = degrade.PAPER_BITRATES, workers: int = 2, seconds: float = 10.0,
                     per_track: int = 1, with_visqol: bool = True, progress: bool = True,
                     precisions: tuple[str, ...] = (), split: str = "test", threads: int | None = None) -> dict:
    """Runs (or resumes) the evaluation and writes results.csv, summary.json, table.md, plots.

    Each model is scored in float32 and also at each of `precisions` ("bf16", "int8"; "untold":
    float32 without being told the bitrate, as a decoded WAV is restored), under the system name
    "<model>-<precision>".
    ``split="valid"`` scores the validation tracks instead, to choose among candidates without
    looking at the test split. ``threads`` is each worker's PyTorch thread count (default: 1 per
    worker process, PyTorch's own choice with one worker), so an evaluation can share the machine
    with a training run.
    """
    from tqdm import tqdm

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "results.csv"
    names = system_names(checkpoints)
    hashes = {_with_precision(names[c], p): checkpoint_sha256(c) for c in checkpoints for p in ("fp32", *precisions)}
    done: dict[tuple[str, int], set[str]] = defaultdict(set)
    if csv_path.exists():
        with open(csv_path) as handle:
            for row in csv.DictReader(handle):
                stored = row.get("checkpoint_sha256") or ""
                if stored and row["system"] in hashes and stored != hashes[row["system"]]:
                    raise ValueError(f"{csv_path} scored another file as {row['system']!r} (SHA-256 {stored[:12]}…); "
                                     "choose a new --out")
                done[(row["excerpt"], int(row["bitrate"]))].add(row["system"])
    excerpts = make_excerpts(data, seconds=seconds, per_track=per_track, split=split)
    if not excerpts:
        raise ValueError(f"{data}: no {split} excerpts with audio")
    systems = {"mp3", *hashes}
    jobs = [(e, b, 44100, tuple(checkpoints), frozenset(done[(e.name, b)]), with_visqol, tuple(precisions), hashes)
            for e in excerpts for b in bitrates if not systems <= done[(e.name, b)]]
    new_file = not csv_path.exists()
    fields = FIELDS
    if not new_file:  # a report begun by an earlier version keeps its columns
        with open(csv_path) as handle:
            fields = tuple(next(csv.reader(handle), FIELDS))
    with open(csv_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new_file:
            writer.writeheader()
        bar = tqdm(total=len(jobs), unit="excerpt", desc="evaluate", disable=not progress)
        if workers > 1 and len(jobs) > 1:
            with ProcessPoolExecutor(workers, initializer=torch_threads, initargs=(threads or 1,)) as pool:
                for rows in pool.map(_job, jobs):
                    _write(writer, handle, rows)
                    bar.update()
        else:
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads or before)
            try:
                for job in jobs:
                    _write(writer, handle, _job(job))
                    bar.update()
            finally:
                torch.set_num_threads(before)
        bar.close()
    return write_report(csv_path, out)


def torch_threads(count: int) -> None:
    """Worker start-up: one thread each, so parallel workers do not fight over the cores."""
    import torch

    torch.set_num_threads(count)


def system_names(checkpoints: list[str]) -> dict[str, str]:
    """A distinct name per checkpoint: the file's stem, with its folders where stems repeat
    (runs/a/generator-last and runs/b/generator-last), a built-in model's own name."""
    def name(checkpoint: str, parts: int) -> str:
        path = Path(checkpoint)
        if not path.exists():
            return checkpoint
        return "/".join([*path.resolve().parent.parts[-(parts - 1):], path.stem] if parts > 1 else [path.stem])

    names: dict[str, str] = {}
    for checkpoint in dict.fromkeys(checkpoints):
        parts = 1
        while parts < 8 and [name(c, parts) for c in checkpoints].count(name(checkpoint, parts)) > 1:
            parts += 1
        names[checkpoint] = name(checkpoint, parts)
    return names


def checkpoint_sha256(checkpoint: str) -> str:
    """The SHA-256 of a checkpoint's file (a built-in model's file), or its name for tiny-test."""
    import hashlib

    from .pretrained import checkpoint_file

    path = Path(checkpoint_file(checkpoint))
    if not path.exists():
        return checkpoint
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _with_precision(name: str, precision: str = "fp32") -> str:
    return name if precision == "fp32" else f"{name}-{precision}"


def _write(writer: csv.DictWriter, handle, rows: list[dict]) -> None:  # noqa: ANN001
    for row in rows:
        writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()})
    handle.flush()
    os.fsync(handle.fileno())


def write_report(csv_path: Path, out: Path) -> dict:
    """summary.json, table.md (Table II shape) and one PNG per metric against bitrate (Fig. 2)."""
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    values: dict[tuple[str, str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        for group in {row["group"], "overall"}:
            for m in METRICS:
                if row.get(m) not in (None, ""):
                    values[(row["system"], group, int(row["bitrate"]))][m].append(float(row[m]))
    systems = sorted({r["system"] for r in rows}, key=lambda s: (s != "mp3", s))
    bitrates = sorted({int(r["bitrate"]) for r in rows})
    groups = [g for g in (*GROUPS, "overall") if any(k[1] == g for k in values)]
    summary: dict = {"systems": systems, "bitrates": bitrates, "groups": groups, "by_bitrate": {}, "by_group": {}}
    for system in systems:
        for group in groups:
            pooled: dict[str, list[float]] = defaultdict(list)
            for b in bitrates:
                cell = values.get((system, group, b), {})
                for m, v in cell.items():
                    pooled[m] += v
                if group == "overall":
                    means = {m: float(np.mean(v)) for m, v in cell.items()}
                    summary["by_bitrate"].setdefault(system, {})[str(b)] = means
            summary["by_group"].setdefault(system, {})[group] = {m: float(np.mean(v)) for m, v in pooled.items()}
    summary["count"] = len(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(_table(summary))
    _plots(summary, out)
    return summary


def _table(summary: dict) -> str:
    groups = summary["groups"]
    names = {"vocals": "Vocal", "single_stem": "Single Stem", "multi_stem": "Multi-Stems",
             "multi_stem_vocals": "Multi-Stems+Vocal", "overall": "Overall"}
    lines = ["SDR / SI-SNR / ViSQOL (dB, dB, MOS) by music type, averaged over bitrates "
             f"{', '.join(map(str, summary['bitrates']))} kbps. LSD (dB, lower is better) in the last column.", "",
             "| Model | " + " | ".join(names[g] for g in groups) + " | LSD / LSD above cutoff |",
             "|" + "---|" * (len(groups) + 2)]
    for system in summary["systems"]:
        cells = []
        for g in groups:
            v = summary["by_group"][system].get(g, {})
            cells.append("/".join(f"{v[m]:.2f}" if m in v else "-" for m in ("sdr", "si_snr", "visqol")))
        o = summary["by_group"][system].get("overall", {})
        lsd_cell = f"{o.get('lsd', float('nan')):.2f} / {o.get('lsd_high', float('nan')):.2f}"
        label = "MP3 input" if system == "mp3" else system
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {lsd_cell} |")
    lines += ["", "By bitrate (overall): SDR / SI-SNR / ViSQOL / LSD", "",
              "| Model | " + " | ".join(f"{b} kbps" for b in summary["bitrates"]) + " |",
              "|" + "---|" * (len(summary["bitrates"]) + 1)]
    for system in summary["systems"]:
        cells = []
        for b in summary["bitrates"]:
            v = summary["by_bitrate"].get(system, {}).get(str(b), {})
            cells.append("/".join(f"{v[m]:.2f}" if m in v else "-" for m in ("sdr", "si_snr", "visqol", "lsd")))
        lines.append(f"| {'MP3 input' if system == 'mp3' else system} | " + " | ".join(cells) + " |")
    if any("holes" in v for by_b in summary["by_bitrate"].values() for v in by_b.values()):
        lines += _diagnostics_table(summary)
    return "\n".join(lines) + "\n"


def _diagnostics_table(summary: dict) -> list[str]:
    """Per system and bitrate: the failure modes of apollo.diagnostics (definitions there)."""
    columns = [("lsd_below", "LSD below cutoff"), ("lsd_high", "LSD above"), ("holes", "holes"),
               ("transient_envelope", "8-16k envelope r"), ("transient_onsets", "onsets r"), ("hop_comb", "hop comb"),
               *((f"level_{lo / 1000:g}-{hi / 1000:g}k", f"{lo / 1000:g}-{hi / 1000:g} kHz dB")
                 for lo, hi in LEVEL_BANDS)]
    lines = ["", "Diagnostics (overall, apollo/diagnostics.py): LSD below / above the input's cutoff (dB); share "
                 "of active cells in the 2 kHz under the cutoff left > 20 dB under the reference; correlation of the "
                 "8-16 kHz frame energy and of its onsets with the reference's; share of the high band's energy on "
                 "the 100 Hz hop comb (noise: ~0.2); level of each band against the reference (dB, 0 is right).", "",
             "| Model | kbps | " + " | ".join(name for _, name in columns) + " |",
             "|" + "---|" * (len(columns) + 2)]
    for system in summary["systems"]:
        for b in summary["bitrates"]:
            v = summary["by_bitrate"].get(system, {}).get(str(b), {})
            cells = [f"{v[key]:.2f}" if key in v else "-" for key, _ in columns]
            lines.append(f"| {'MP3 input' if system == 'mp3' else system} | {b} | " + " | ".join(cells) + " |")
    return lines


def _plots(summary: dict, out: Path) -> None:
    from .optional import require

    require("matplotlib", "eval", "the evaluation's plots").use("Agg")
    import matplotlib.pyplot as plt

    labels = {"sdr": "SDR (dB)", "si_snr": "SI-SNR (dB)", "visqol": "ViSQOL (MOS-LQO)", "lsd": "LSD (dB)",
              "lsd_high": "LSD above cutoff (dB)"}
    for metric, label in labels.items():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        drawn = False
        for system in summary["systems"]:
            by_bitrate = summary["by_bitrate"].get(system, {})
            points = [(b, by_bitrate.get(str(b), {}).get(metric)) for b in summary["bitrates"]]
            points = [(b, v) for b, v in points if v is not None]
            if points:
                ax.plot(*zip(*points), marker="o", label="MP3 input" if system == "mp3" else system)
                drawn = True
        ax.set_xlabel("bitrate (kbps)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"{metric}_vs_bitrate.png", dpi=120)
        plt.close(fig)
