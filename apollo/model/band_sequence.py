"""Band-sequence modelling (paper Fig. 1c): a Roformer across bands, then a TCN across time.

Features are kept channel-last as (batch, frames, bands, channels) throughout, so every 1x1
convolution of the released model becomes one large matrix multiply and neither stage needs
to copy the tensor into another layout.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import RMSNorm, apply_rotary, linear, map_tiles, rotary_tables

TILE_ROWS = 1024  # rows (frames x bands) per tile on CPU


def tile_rows(x: torch.Tensor) -> int | None:
    return TILE_ROWS if x.device.type == "cpu" else None


def _silu(x: torch.Tensor) -> torch.Tensor:
    """SiLU, in place when no gradient is needed (avoids a large allocation)."""
    return F.silu(x, inplace=not torch.is_grad_enabled())


class BandRoformer(nn.Module):
    """Residual self-attention + gated feed-forward over the band axis (positions = band index)."""

    def __init__(self, dim: int, heads: int, rope_positions: int) -> None:
        super().__init__()
        self.heads = heads
        self.attn_norm = RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.ffn_norm = RMSNorm(dim)
        self.ffn_in = nn.Linear(dim, 8 * dim, bias=False)
        self.ffn_out = nn.Linear(4 * dim, dim, bias=False)
        cos, sin = rotary_tables(rope_positions, dim // heads)
        self.register_buffer("rope_cos", cos)
        self.register_buffer("rope_sin", sin)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, t, k, n = z.shape
        rows = tile_rows(z)
        frames = None if rows is None else max(1, rows // k)
        return map_tiles(self._frames, z.reshape(b * t, k, n), rows=frames).view(b, t, k, n)

    def _frames(self, z: torch.Tensor) -> torch.Tensor:
        """z: (frames, K, N), each frame an independent sequence of K bands."""
        f, k, n = z.shape
        d = n // self.heads
        # rows of the projection are grouped per head as [Q, K, V] (released layout)
        qkv = linear(self.qkv, self.attn_norm(z)).view(f, k, self.heads, 3, d)
        q, key, v = qkv.permute(3, 0, 2, 1, 4).unbind(0)  # each (frames, H, K, d)
        cos, sin = self.rope_cos[:k].to(q.dtype), self.rope_sin[:k].to(q.dtype)
        q, key = apply_rotary(q, cos, sin), apply_rotary(key, cos, sin)
        att = F.scaled_dot_product_attention(q, key, v)
        z = z + linear(self.attn_out, att.transpose(1, 2).reshape(f, k, n))
        hidden = _silu(linear(self.ffn_in, self.ffn_norm(z)))
        gate, value = hidden.chunk(2, dim=-1)
        return z + linear(self.ffn_out, F.silu(gate) * value)


class TCNBlock(nn.Module):
    """Residual depthwise temporal conv -> RMSNorm -> pointwise MLP (shared by all bands)."""

    def __init__(self, dim: int, kernel: int) -> None:
        super().__init__()
        self.depthwise = nn.Parameter(torch.empty(dim, kernel))
        self.depthwise_bias = nn.Parameter(torch.empty(dim))
        bound = 1.0 / kernel**0.5
        nn.init.uniform_(self.depthwise, -bound, bound)
        nn.init.uniform_(self.depthwise_bias, -bound, bound)
        self.norm = RMSNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def temporal_conv(self, z: torch.Tensor) -> torch.Tensor:
        """Depthwise conv along frames of (B, T, K, N), done as a channels-last conv2d (no copy)."""
        n, kernel = self.depthwise.shape
        x = z.permute(0, 3, 1, 2)  # (B, N, T, K) view whose memory is channels-last
        w = self.depthwise.view(n, 1, kernel, 1)
        y = F.conv2d(x, w, self.depthwise_bias, padding=(kernel // 2, 0), groups=n)
        return y.permute(0, 2, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[-1]
        y = self.temporal_conv(z).reshape(-1, n)
        return map_tiles(self._mlp, z.reshape(-1, n), y, rows=tile_rows(z)).view(z.shape)

    def _mlp(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return z + linear(self.fc2, _silu(linear(self.fc1, self.norm(y))))


class BandSequenceBlock(nn.Module):
    """One band-sequence block: BandRoformer across bands, then TCN blocks across time."""

    def __init__(self, dim: int, heads: int, tcn_blocks: int, tcn_kernel: int, rope_positions: int) -> None:
        super().__init__()
        self.band = BandRoformer(dim, heads, rope_positions)
        self.tcn = nn.Sequential(*(TCNBlock(dim, tcn_kernel) for _ in range(tcn_blocks)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tcn(self.band(z))
