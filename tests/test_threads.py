"""The model's CPU threads follow the cores other programs leave idle (apollo.threads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from apollo.threads import CpuShare, read_sample


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _share(samples, cpus=4, limit=4):
    feed = iter(samples)
    share = CpuShare(limit=limit, read=lambda: next(feed), cpus=cpus)
    share.limit = limit  # as on a machine with `cpus` usable cores, whatever this one has
    return share


def test_threads_follow_the_idle_cores():
    # samples: (all CPUs' ticks, busy ticks, this process's ticks); 4 CPUs, 100 ticks a window each
    samples = [(0, 0, 0), (400, 0, 0),          # first window: idle machine -> 4 threads
               (800, 350, 150),                # others kept 2 cores busy -> 2 threads
               (1200, 750, 250),               # others 3 cores -> 1 thread
               (1600, 800, 300),               # others gone -> 4 again
               (2000, 1150, 400)]              # others 2.5 cores -> free 1.5 rounds to 2
    share = _share(samples)
    assert [share.update() for _ in range(5)] == [4, 2, 1, 4, 2]
    assert torch.get_num_threads() == 2


def test_a_fixed_thread_count_is_left_alone():
    share = _share([(0, 0, 0)], limit=1)
    assert share.update() == 1 and share.update() == 1  # one allowed: nothing is sampled or changed


def test_read_sample_counts_this_process():
    before = read_sample()
    x = np.random.default_rng(0).standard_normal(3_000_000)
    for _ in range(4):
        x = np.sort(x)[::-1].copy()  # ~1 s of this process's CPU time: many 10-ms ticks
    after = read_sample()
    assert after[0] > before[0] and after[1] >= before[1] and after[2] > before[2]


def test_off_in_a_forked_child():
    # a forked child inherits a half-alive OpenMP pool: raising its thread count can hang
    import os

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports whether CpuShare would act
        os.write(write, b"1" if CpuShare().enabled else b"0")
        os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"0"
    assert CpuShare().enabled == Path("/proc/stat").is_file()  # the parent itself keeps it (on Linux)
