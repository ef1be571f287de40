"""Latency and per-block compute time of `apollo stream` (StreamingRestorer) on this CPU.

For a causal model: its algorithmic latency, and the wall time of each process() call when a
stereo 44.1 kHz stream arrives in blocks of 10 ms and 20 ms, with 1 and 2 threads (median,
99th percentile, worst; the first 50 blocks are warm-up). A block is real time when its p99 is
under its own duration. --sweep times random causal models of growing size on one thread, to
find the largest that stays real time.

  python benchmarks/streaming_latency.py --checkpoint stream --sweep --out docs/streaming_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

from apollo import Apollo, ApolloConfig, StreamingRestorer, load_model
from apollo.pretrained import count_parameters

WARMUP_BLOCKS = 50


def time_blocks(model: Apollo, block_ms: float, threads: int, seconds: float, compile: bool = False) -> dict:
    """Streams `seconds` of stereo noise through model in blocks of block_ms; times each block."""
    torch.set_num_threads(threads)
    restorer = StreamingRestorer(model, channels=2, compile=compile)
    rate = restorer.sample_rate
    block = round(block_ms * rate / 1000)
    count = WARMUP_BLOCKS + int(seconds * rate / block)
    audio = (0.1 * np.random.default_rng(0).standard_normal((2, count * block))).astype(np.float32)
    times = []
    for index in range(count):
        piece = audio[:, index * block:(index + 1) * block]
        start = time.perf_counter()
        restorer.process(piece)
        times.append(time.perf_counter() - start)
    ms = 1000 * np.array(times[WARMUP_BLOCKS:])
    p99 = float(np.percentile(ms, 99))
    return {"block_ms": block_ms, "threads": threads, "compile": compile, "blocks": len(ms),
            "median_ms": round(float(np.median(ms)), 3), "p99_ms": round(p99, 3), "max_ms": round(float(ms.max()), 3),
            "rtf_median": round(float(np.median(ms)) / block_ms, 3), "real_time": p99 < block_ms}


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def causal_model(feature_dim: int, num_blocks: int) -> Apollo:
    config = ApolloConfig(feature_dim=feature_dim, num_blocks=num_blocks, num_heads=4, residual=True, causal=True)
    torch.manual_seed(0)
    return Apollo(config).eval()


def markdown(result: dict) -> str:
    """docs/streaming.md's tables from a result of this script."""
    lines = [f"Algorithmic latency: {result['latency_samples']} samples = {result['latency_ms']} ms at "
             f"{result['sample_rate']} Hz. Model `{result['model']}` ({result['parameters']:,} parameters), "
             f"stereo, {result['cpu']}, torch {result['torch']}.", "",
             "| block | threads | step | median ms | p99 ms | worst ms | median / block | real time (p99 < block) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in result["blocks"]:
        lines.append(f"| {row['block_ms']:g} ms | {row['threads']} | {'compiled' if row['compile'] else 'eager'} | "
                     f"{row['median_ms']:.2f} | {row['p99_ms']:.2f} | {row['max_ms']:.2f} | {row['rtf_median']:.2f} | "
                     f"{'yes' if row['real_time'] else 'no'} |")
    if result["sweep"]:
        lines += ["", "Random causal models of growing size, 10-ms blocks, one thread, eager:", "",
                  "| feature dim | blocks | parameters | median ms | p99 ms | real time |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for row in result["sweep"]:
            lines.append(f"| {row['feature_dim']} | {row['num_blocks']} | {row['parameters']:,} | "
                         f"{row['median_ms']:.2f} | {row['p99_ms']:.2f} | {'yes' if row['real_time'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default="stream", help="a causal model (default: the built-in stream)")
    parser.add_argument("--seconds", type=float, default=6.0, help="audio streamed per measurement")
    parser.add_argument("--sweep", action="store_true", help="also time random causal models of growing size")
    parser.add_argument("--compile", action="store_true", help="also time the compiled step (~30 s per model)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--table", metavar="JSON", help="only print the Markdown tables of an earlier result")
    args = parser.parse_args()
    if args.table:
        with open(args.table) as handle:
            print(markdown(json.load(handle)), end="")
        return

    model = load_model(args.checkpoint)
    config = model.config
    result = {
        "command": "python benchmarks/streaming_latency.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" if not isinstance(v, bool) else f"--{k}" for k, v in vars(args).items()
            if v not in (None, False)),
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores", "torch": torch.__version__,
        "model": args.checkpoint, "parameters": count_parameters(model),
        "latency_samples": config.latency, "latency_ms": round(1000 * config.latency / config.sample_rate, 2),
        "sample_rate": config.sample_rate, "blocks": [], "sweep": [],
    }
    for threads in (1, 2):
        for block_ms in (10.0, 20.0):
            result["blocks"].append(time_blocks(model, block_ms, threads, args.seconds))
            print(json.dumps(result["blocks"][-1]))
    if args.compile:
        for block_ms in (10.0, 20.0):
            result["blocks"].append(time_blocks(model, block_ms, 1, args.seconds, compile=True))
            print(json.dumps(result["blocks"][-1]))
    if args.sweep:
        for feature_dim, num_blocks in ((32, 3), (48, 3), (64, 3), (80, 3), (96, 3), (64, 2), (64, 4), (64, 6)):
            candidate = causal_model(feature_dim, num_blocks)
            row = {"feature_dim": feature_dim, "num_blocks": num_blocks, "parameters": count_parameters(candidate),
                   **time_blocks(candidate, 10.0, 1, args.seconds)}
            result["sweep"].append(row)
            print(json.dumps(row))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=1)
            handle.write("\n")
    print(markdown(result), end="")


if __name__ == "__main__":
    main()
