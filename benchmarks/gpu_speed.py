"""Milliseconds per stereo second of the full-size generator on a GPU, over precisions and batches.

    python benchmarks/gpu_speed.py [--batches 1 4 16] [--precisions fp32 bf16] [--compile]
                                   [--seconds 10] [--json OUT]

Each point is `apollo benchmark` (apollo.benchmark.benchmark): a batch of `--seconds` stereo
clips per forward pass, median of `--repeats` after an untimed warm-up run (which is where
--compile compiles). The issue's goal is <= 5 ms per stereo second; the paper reports 53 ms.
`--device cpu --config tiny` runs the same sweep on a CPU, to try the script without a GPU.
"""

from __future__ import annotations

import argparse
import json

import torch

from apollo.benchmark import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="apollo-v1")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--compile", action="store_true", help="also time each point with compiled blocks")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            parser.error("no CUDA GPU visible; pass --device cpu to try the script on a CPU")
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32: no silent TF32
        torch.backends.cudnn.allow_tf32 = False
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    runs = []
    for precision in args.precisions:
        for compiled in ([False, True] if args.compile else [False]):
            for batch in args.batches:
                if compiled:
                    torch._dynamo.reset()  # each point compiles afresh, within the recompile limit
                try:
                    result = benchmark(config=args.config, seconds=args.seconds, device=args.device,
                                       repeats=args.repeats, precision=precision, batch=batch, compile=compiled)
                except torch.OutOfMemoryError:
                    print(f"{precision:4s} compile={compiled!s:5s} batch {batch:3d}: out of memory", flush=True)
                    torch.cuda.empty_cache()
                    continue
                row = {k: result[k] for k in ("precision", "compiled", "batch", "seconds", "ms_per_second", "rtf",
                                              "peak_memory_mb")}
                runs.append(row)
                print(f"{precision:4s} compile={compiled!s:5s} batch {batch:3d} x {args.seconds:g} s stereo: "
                      f"{row['ms_per_second']:8.3f} ms per stereo second (peak {row['peak_memory_mb']:.0f} MB)",
                      flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"device": device_name, "torch": torch.__version__, "config": args.config, "runs": runs},
                      handle, indent=2)


if __name__ == "__main__":
    main()
