"""Where the full-size generator's forward time goes: PyTorch profiler table, by operator.

    python benchmarks/profile_forward.py [--precision fp32|bf16] [--seconds 1] [--rows 12]

One warm-up pass, then one profiled pass over stereo 44.1 kHz noise on 2 threads; prints the
operators with the most self CPU time. docs/performance.md quotes its shares.
"""

from __future__ import annotations

import argparse

import torch

from apollo.inference import with_precision
from apollo.model import Apollo
from apollo.model.config import ApolloConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=12)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = with_precision(Apollo(ApolloConfig()).eval(), args.precision, "cpu")
    wav = torch.randn(1, 2, int(args.seconds * 44100)) * 0.1
    with torch.inference_mode():
        model(wav)
        with torch.profiler.profile() as prof:
            model(wav)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
