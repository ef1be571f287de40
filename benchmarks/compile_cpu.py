"""How long torch.compile (inductor) takes on the CPU, and whether it changes the numbers.

    timeout 600 python benchmarks/compile_cpu.py [--checkpoint tiny-test] [--seconds 1]

docs/performance.md records the outcome on the project's 2-core machine: with the tiny test
model, compiling had not finished after 10 minutes (run under `timeout 600`).
"""

from __future__ import annotations

import argparse
import time

import torch

from apollo import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="tiny-test")
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    model = load_model(args.checkpoint).eval()
    wav = torch.randn(1, 2, int(args.seconds * model.config.sample_rate))
    with torch.inference_mode():
        eager = model(wav)
        start = time.perf_counter()
        compiled = torch.compile(model)
        out = compiled(wav)
        print(f"compile + first run: {time.perf_counter() - start:.1f} s; "
              f"max |compiled - eager| {(out - eager).abs().max().item():.2e}", flush=True)
        start = time.perf_counter()
        compiled(wav)
        print(f"second run: {time.perf_counter() - start:.3f} s", flush=True)


if __name__ == "__main__":
    main()
