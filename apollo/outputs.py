"""Where restored files go: one output per input, never two runs on one output, no stale scraps.

`plan` maps the inputs of `apollo restore` to output paths: folders mirror their tree, the same
file named twice counts once, inputs whose names would collide get distinct predictable names,
and `-o NAME.flac` with one input names the output file itself. `Claim` takes an output for one
run, atomically, so two runs into one folder share the work instead of both doing all of it; a
claim also clears the temporary files an interrupted earlier run left for that output.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .audio import AUDIO_EXTENSIONS

OUTPUT_FORMATS = ("flac", "wav")
CLAIM_SUFFIX = ".apollo-claim"


@dataclass(frozen=True)
class Job:
    """One input and its output, or why it cannot be restored."""

    src: Path
    dst: Path | None
    error: str | None = None


def output_file(inputs: list[str], output: str) -> bool:
    """True when -o names the output file itself: one input file and an audio extension."""
    return Path(output).suffix.lower() in AUDIO_EXTENSIONS and not Path(output).is_dir()


def check_output(inputs: list[str], output: str) -> str | None:
    """Why `-o output` cannot be used with these inputs, or None."""
    out = Path(output)
    if output_file(inputs, output):
        if out.suffix.lower().lstrip(".") not in OUTPUT_FORMATS:
            return f"-o {output}: apollo writes .flac or .wav files"
        if len(inputs) != 1 or Path(inputs[0]).is_dir():
            return f"-o {output} names one output file, but the input is not one file; give a folder to -o"
        return None
    if out.exists() and not out.is_dir():
        return f"-o {output} is an existing file: give a folder, or a .flac/.wav name with one input file"
    return None


def plan(inputs: list[str], output: str, fmt: str) -> list[Job]:
    """A job per distinct input file (folders searched recursively, their tree mirrored)."""
    out_dir = Path(output)
    if output_file(inputs, output):
        src = Path(inputs[0])
        if not src.exists():
            return [Job(src, None, f"{src}: no such file or folder")]
        return [Job(src, out_dir)]
    jobs: list[Job] = []
    seen: set[Path] = set()
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            # outputs written inside an input folder are not inputs of a later run
            skip = out_dir.resolve() if _inside(out_dir.resolve(), path.resolve()) else None
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                           and not p.name.startswith(".") and not (skip and _inside(p.resolve(), skip)))
            if not files:
                jobs.append(Job(path, None, f"{path}: folder holds no audio files"))
            for file in files:
                if file.resolve() not in seen:
                    seen.add(file.resolve())
                    jobs.append(Job(file, out_dir / file.relative_to(path).with_suffix(f".{fmt}")))
        elif path.exists():
            if path.resolve() not in seen:
                seen.add(path.resolve())
                jobs.append(Job(path, out_dir / f"{path.stem}.{fmt}"))
        else:
            jobs.append(Job(path, None, f"{path}: no such file or folder"))
    return _distinct(jobs, fmt)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _distinct(jobs: list[Job], fmt: str) -> list[Job]:
    """Inputs that map to one output all get `<name with extension>.<fmt>` instead, so
    song.m4a and song.opus become song.m4a.flac and song.opus.flac (whatever their order);
    no output may be an input file."""
    by_dst: dict[Path, list[int]] = defaultdict(list)
    for i, job in enumerate(jobs):
        if job.dst is not None:
            by_dst[job.dst.resolve()].append(i)
    for indices in by_dst.values():
        if len(indices) > 1:
            for i in indices:
                job = jobs[i]
                jobs[i] = Job(job.src, job.dst.with_name(f"{job.src.name}.{fmt}"))
    inputs = {job.src.resolve() for job in jobs}
    return [Job(j.src, None, f"{j.src}: output {j.dst} would replace an input file; choose another -o")
            if j.dst is not None and j.dst.resolve() in inputs else j for j in jobs]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claim:
    """An output taken by this run: `.NAME.apollo-claim` beside it, created atomically.

    `take` returns None while another live run on this machine holds the output; a claim left
    by a run that no longer exists is taken over. Holding the claim, the run removes that
    output's temporary files (`.NAME.*`, atomic_write's naming) from an interrupted run.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def take(cls, dst: Path) -> "Claim | None | str":
        """The claim, or the holder's description (a string) when another run has it."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        path = dst.parent / f".{dst.name}{CLAIM_SUFFIX}"
        me = f"{os.getpid()} {socket.gethostname()}"
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = cls._holder(path)
                if holder is not None:
                    return holder
                path.unlink(missing_ok=True)  # its run is gone: take it over
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            claim = cls(path)
            claim._clear_scraps(dst)
            return claim
        return "another apollo run"

    @staticmethod
    def _holder(path: Path) -> str | None:
        """'apollo run (pid N)' if the claim's run is alive (or on another host), else None."""
        try:
            pid, _, host = path.read_text().partition(" ")
            pid_number = int(pid)
        except (OSError, ValueError):
            return None  # unreadable or half-written: a run killed while claiming
        if host.strip() != socket.gethostname():
            return f"an apollo run on {host.strip()} (pid {pid_number})"
        return f"another apollo run (pid {pid_number})" if _alive(pid_number) else None

    def _clear_scraps(self, dst: Path) -> None:
        prefix = f".{dst.name}."
        for stale in dst.parent.iterdir():
            if stale.name.startswith(prefix) and stale != self.path and stale.is_file():
                stale.unlink(missing_ok=True)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
