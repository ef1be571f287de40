"""What torch.compile of the band-sequence blocks costs and saves on the CPU.

    python benchmarks/compile_cpu.py [--config apollo-v1] [--seconds 1] [--precision fp32 bf16]

For each precision: the time to compile (first forward pass), the largest difference from
eager, and the eager and compiled RTF (stereo), timed in turns. docs/performance.md records
the outcome on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from forward_speed import time_interleaved  # benchmarks/ is on the path when run as a script

from apollo.inference import compile_blocks, with_precision
from apollo.model import Apollo
from apollo.model.config import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="apollo-v1", choices=sorted(PRESETS))
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = Apollo(PRESETS[args.config]).eval()
    wav = torch.randn(1, 2, int(args.seconds * model.config.sample_rate)) * 0.1
    for precision in args.precision:
        eager = with_precision(model, precision, "cpu")
        compiled = with_precision(compile_blocks(copy.deepcopy(model)), precision, "cpu")
        with torch.inference_mode():
            expected = eager(wav)
            start = time.perf_counter()
            diff = (compiled(wav) - expected).abs().max().item()
            took = time.perf_counter() - start
        median = time_interleaved({"eager": eager, "compiled": compiled}, wav,
                                  {"eager": args.repeats, "compiled": args.repeats})
        rtf = {name: seconds / args.seconds for name, seconds in median.items()}
        print(f"{precision}: compile + first run {took:.1f} s; max |compiled - eager| {diff:.2e}; "
              f"RTF eager {rtf['eager']:.3f}, compiled {rtf['compiled']:.3f} "
              f"({rtf['eager'] / rtf['compiled']:.2f}x)", flush=True)


if __name__ == "__main__":
    main()
