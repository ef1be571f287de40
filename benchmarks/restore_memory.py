"""Peak memory of `apollo restore` against file length (it must not grow with length).

    python benchmarks/restore_memory.py [--minutes 1 10] [--checkpoint tiny-test] [--json OUT]

Each run is a fresh child process; its peak RSS comes from wait4's rusage.
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

RATE = 44100


def make_file(path: Path, minutes: float) -> None:
    """Stereo 44.1 kHz FLAC of tones and noise, written in blocks (the parent stays small)."""
    rng = np.random.default_rng(0)
    total, block = int(minutes * 60 * RATE), 10 * RATE
    with sf.SoundFile(str(path), "w", RATE, 2, "PCM_16", format="FLAC") as out:
        for start in range(0, total, block):
            t = (np.arange(start, min(start + block, total)) / RATE)[:, None]
            data = (0.2 * np.sin(2 * np.pi * np.array([[220.0, 330.0]]) * t)
                    + 0.02 * rng.standard_normal((t.shape[0], 2)))
            out.write(data.astype(np.float32))


def peak_rss_mb(cmd: list[str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss / 1024, time.perf_counter() - start, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--checkpoint", default="tiny-test")
    parser.add_argument("--segment", default="10")
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in args.minutes:
            src = Path(tmp) / f"input-{minutes:g}min.flac"
            make_file(src, minutes)
            cmd = [sys.executable, "-m", "apollo.cli", "restore", str(src), "-o", str(Path(tmp) / "out"),
                   "--checkpoint", args.checkpoint, "--segment", args.segment, "--quiet", "--overwrite"]
            rss, wall, code = peak_rss_mb(cmd)
            if code:
                raise SystemExit(f"restore failed with exit code {code}")
            rows.append({"minutes": minutes, "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 1)})
            print(f"{minutes:5.1f} min stereo: peak RSS {rss:7.1f} MB, {wall:6.1f} s", flush=True)
    if len(rows) > 1:
        ratio = rows[0]["peak_rss_mb"] / rows[-1]["peak_rss_mb"]
        print(f"peak ratio first/last: {ratio:.3f}")
    if args.json:
        result = {"checkpoint": args.checkpoint, "segment": args.segment, "runs": rows}
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
