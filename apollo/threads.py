"""CPU threads sized to the cores that other programs leave free, re-checked before every chunk.

Measured on 2 cores (docs/performance.md): two restores at once, each with PyTorch's default of
one thread per core, ran 7.3x slower than one alone, because every one of the model's many small
parallel regions waits at its barrier for a thread the other process holds. With one thread each
they ran no slower than one alone. So, unless the user fixes the count (`--threads`), the model
uses as many threads as cores are idle: all of them alone, fewer while something else computes,
and all again once it stops. Linux only (/proc/stat); elsewhere PyTorch's default stays.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

Sample = tuple[float, float, float]  # (all CPUs' ticks, their busy ticks, this process's ticks)
FIRST_WINDOW_S = 0.1  # the first decision samples this long
# PyTorch's own choice when this process started (one per physical core), the most ever used; read
# once because CpuShare itself lowers the live value
_STARTING_THREADS = torch.get_num_threads()
# A process forked from this one inherits its OpenMP thread pool half-alive: raising the thread count
# there can hang in the first parallel region (GNU OpenMP). CpuShare stays off in such children.
_STARTING_PID = os.getpid()


def read_sample() -> Sample:
    """Tick counters from /proc/stat (every CPU) and /proc/self/stat (this process, all threads)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    values = [float(v) for v in fields[:8]]
    idle = values[3] + values[4]  # idle + iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return sum(values), sum(values) - idle, float(own[11]) + float(own[12])  # utime + stime


def cpu_count() -> int:
    """CPUs that /proc/stat counts (the machine's)."""
    return sum(1 for line in Path("/proc/stat").read_text().splitlines() if line[:3] == "cpu" and line[3:4].isdigit())


class CpuShare:
    """Before each forward pass, `update()` sets torch's thread count to the idle cores (1 at least,
    `limit` at most), from the CPU time that other processes used since the last call."""

    def __init__(self, limit: int | None = None, read: Callable[[], Sample] | None = None,
                 cpus: int | None = None) -> None:
        forked = os.getpid() != _STARTING_PID
        self.enabled = read is not None or (Path("/proc/stat").is_file() and not forked)
        self.read = read or read_sample
        self.cpus = cpus or (cpu_count() if self.enabled else os.cpu_count() or 1)
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else self.cpus
        self.limit = max(1, min(limit or _STARTING_THREADS, usable))
        self.last: Sample | None = None
        self.threads = self.limit

    def others(self, before: Sample, after: Sample) -> float:
        """Cores that other processes kept busy between two samples."""
        total = after[0] - before[0]
        if total <= 0:
            return 0.0
        busy, own = after[1] - before[1], after[2] - before[2]
        return max(busy - own, 0.0) / total * self.cpus

    def update(self) -> int:
        """Sets and returns the thread count for the next forward pass."""
        if not self.enabled or self.limit == 1:
            return self.threads
        now = self.read()
        if self.last is None:  # nothing to compare with yet: watch the machine for a moment
            time.sleep(FIRST_WINDOW_S)
            self.last, now = now, self.read()
        free = self.cpus - self.others(self.last, now)
        self.last = now
        threads = max(1, min(self.limit, int(free + 0.5)))
        if threads != self.threads or torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
            self.threads = threads
        return threads
