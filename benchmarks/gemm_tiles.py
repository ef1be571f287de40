"""Why the generator tiles its row-wise stages and sends float32 linear layers to oneDNN.

    python benchmarks/gemm_tiles.py [--threads 2]

For each linear shape: GEMM rate through PyTorch's default path (F.linear: MKL on x86) and
through oneDNN (the op apollo.layers.linear uses), on all rows at once and in 1024-row tiles,
and each path's largest error relative to a float64 product. Then the cost of SiLU in and out
of place.

The shapes are those of one second of stereo through the full model (2 x 101 frames x 80
bands = 16160 rows; feature 256).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.nn import functional as F

ROWS = 16160


def seconds(fn, repeats: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    torch.set_num_threads(parser.parse_args().threads)
    def onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")

    for k, n in [(256, 1024), (1024, 256), (256, 2048), (256, 768)]:
        a, w, b = torch.randn(ROWS, k), torch.randn(n, k), torch.randn(n)
        flops = 2 * ROWS * k * n
        exact = F.linear(a.double(), w.double(), b.double())
        for name, fn in (("default", F.linear), ("oneDNN", onednn)):
            whole = flops / seconds(lambda: fn(a, w, b)) / 1e9
            tiled = flops / seconds(lambda: [fn(p, w, b) for p in a.split(1024)]) / 1e9
            error = ((fn(a, w, b).double() - exact).abs().max() / exact.abs().max()).item()
            print(f"linear {k:4d} -> {n:4d} {name:7s}: whole {whole:5.0f} GFLOP/s, 1024-row tiles {tiled:5.0f} "
                  f"GFLOP/s, max error {error:.1e} of the largest output", flush=True)
    x = torch.randn(ROWS, 2048)
    print(f"SiLU on {ROWS} x 2048: out of place {seconds(lambda: F.silu(x)) * 1e3:.1f} ms, "
          f"in place {seconds(lambda: F.silu(x, inplace=True)) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
