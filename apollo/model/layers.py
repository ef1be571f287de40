"""Small building blocks shared by the generator's stages."""

from __future__ import annotations

import math

import torch
from torch import nn

RMS_EPS = 1e-5

# oneDNN's float32 matmul uses AVX-512 where the default BLAS (MKL) runs at half its rate on
# some CPUs (2x here, docs/performance.md); same float32 arithmetic, only the summation order
# differs. Its op has no autograd formula, so it serves inference only.
ONEDNN_LINEAR = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """RMSNorm over the last dimension, in float32 whatever the input dtype (as released)."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return y.to(x.dtype)


class RMSNorm(nn.Module):
    """RMSNorm over the channel (last) dimension with a learned gain and no bias."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight)


def linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """layer(x); float32 CPU inference through an nn.Linear goes to oneDNN where that is faster."""
    if (
        ONEDNN_LINEAR
        and type(layer) is nn.Linear  # not the int8 path's quantised layers
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and layer.weight.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and not torch.compiler.is_compiling()  # inductor makes its own choice (inference.py)
    ):
        return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, "none", [], "")
    return layer(x)


def rotary_tables(positions: int, dim: int, theta: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables (positions, dim) for interleaved rotary embeddings."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    angles = torch.arange(positions, dtype=torch.float32)[:, None] * freqs[None, :]
    angles = angles.repeat_interleave(2, dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs: (x0 cos - x1 sin, x1 cos + x0 sin); x is (..., seq, dim)."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return x * cos + rotated * sin


def map_tiles(fn, *xs: torch.Tensor, rows: int | None) -> torch.Tensor:
    """Applies a row-wise fn to tensors xs in tiles of `rows` along dim 0 and concatenates.

    On CPU, tiles keep every intermediate (4x and 8x wide hidden layers) in cache and reuse
    the allocator's memory instead of faulting in fresh pages: about 1.5x faster than one
    huge batch, with identical numbers. rows=None processes x in one piece (GPU).
    """
    if rows is None or xs[0].shape[0] <= rows:
        return fn(*xs)
    return torch.cat([fn(*parts) for parts in zip(*(x.split(rows) for x in xs))])


class BandLinear(nn.Module):
    """K independent linear layers (one per band) applied as a single batched matmul.

    Input (..., K, in_dim) -> output (..., K, out_dim). Replaces K separate 1x1 convolutions.
    """

    def __init__(self, bands: int, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(bands, out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(bands, out_dim))
        bound = 1.0 / math.sqrt(in_dim)  # PyTorch's default for a Conv1d of that fan-in
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-2]
        bands, in_dim = x.shape[-2:]
        flat = x.reshape(-1, bands, in_dim).transpose(0, 1)  # (K, rows, in)
        out = torch.baddbmm(self.bias[:, None, :], flat, self.weight.transpose(1, 2))
        return out.transpose(0, 1).reshape(*lead, bands, -1)
