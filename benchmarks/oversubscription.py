"""Wall time of `apollo restore` alone and with a second restore running at once, per thread setting.

    python benchmarks/oversubscription.py [--seconds 60] [--json docs/oversubscription.json]

Each case runs fresh `apollo restore` processes (the shipped model, a generated stereo file)
and reports each process's wall time: alone, two at once, and one beside a PyTorch program that
keeps every core busy (as a test suite does). The settings compared:

- `spin`: OpenMP threads busy-wait at barriers (OMP_WAIT_POLICY=ACTIVE);
- `passive`: OpenMP threads sleep at once at barriers (OMP_WAIT_POLICY=PASSIVE);
- `default`: what `apollo` does with no option;
- `threads1`: `--threads 1`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SETTINGS = {
    "spin": ({"OMP_WAIT_POLICY": "ACTIVE"}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "default": ({}, []),
    "threads1": ({}, ["--threads", "1"]),
}


def _run(src: Path, out: Path, env: dict[str, str], extra: list[str], copies: int) -> list[float]:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    procs, starts = [], []
    for i in range(copies):
        command = [sys.executable, "-m", "apollo.cli", "restore", str(src), "-o", str(out / f"{i}"), "-q",
                   "--overwrite", *extra]
        starts.append(time.perf_counter())
        procs.append(subprocess.Popen(command, env={**base, **env}))
    walls = []
    for proc, start in zip(procs, starts):
        if proc.wait() != 0:
            raise RuntimeError(f"restore failed with {proc.returncode}")
        walls.append(round(time.perf_counter() - start, 2))
    return walls


BUSY = ("import torch, time\n"  # a stand-in for a test suite: PyTorch work on every core, for `seconds`
        "a = torch.randn(512, 512)\n"
        "end = time.time() + {seconds}\n"
        "while time.time() < end:\n"
        "    for _ in range(8):\n"
        "        a = torch.tanh(a @ a)\n")


def _under_load(src: Path, out: Path, env: dict[str, str], extra: list[str], seconds: float) -> float:
    busy = subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=seconds)])
    try:
        time.sleep(1.0)  # the load is running before the restore starts
        return _run(src, out, env, extra, 1)[0]
    finally:
        busy.kill()
        busy.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the restored file")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "music.flac"
        t = np.arange(int(args.seconds * 44100)) / 44100
        tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))
        sf.write(src, np.stack([tone, tone], 1) + 0.01 * rng.standard_normal((t.size, 2)), 44100, subtype="PCM_16")
        rows = []
        for name, (env, extra) in SETTINGS.items():
            alone = _run(src, Path(tmp), env, extra, 1)
            together = _run(src, Path(tmp), env, extra, 2)
            loaded = _under_load(src, Path(tmp), env, extra, seconds=20 * alone[0])
            rows.append({"setting": name, "alone_s": alone[0], "two_at_once_s": together,
                         "slowdown": round(max(together) / alone[0], 2), "under_load_s": loaded,
                         "slowdown_under_load": round(loaded / alone[0], 2)})
            print(f"{name:9s} alone {alone[0]:6.2f} s   two at once {together[0]:6.2f} / {together[1]:6.2f} s   "
                  f"({rows[-1]['slowdown']}x)   beside a PyTorch job {loaded:6.2f} s "
                  f"({rows[-1]['slowdown_under_load']}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"cpus": os.cpu_count(), "seconds_of_audio": args.seconds,
                                               "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
