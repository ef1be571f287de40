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

TILE_ELEMENTS = 1024 * 256  # values per tile on CPU: 1024 rows of the full-size model's 256 features


def tile_rows(x: torch.Tensor) -> int | None:
    """Rows (frames x bands) per CPU tile of x (..., features), None (one piece) elsewhere. A tile holds
    a fixed number of values, not rows, so a narrow model's tiles are as large in memory as the
    full-size model's and its matmuls are not too small to run well (docs/performance.md)."""
    return max(1, TILE_ELEMENTS // x.shape[-1]) if x.device.type == "cpu" else None


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
    """Residual depthwise temporal conv -> RMSNorm -> pointwise MLP (shared by all bands).

    Causal blocks convolve the current frame with the kernel - 1 frames before it (zeros before
    the first frame); the others with kernel // 2 frames on each side, as released.
    """

    def __init__(self, dim: int, kernel: int, causal: bool = False) -> None:
        super().__init__()
        self.causal = causal
        self.depthwise = nn.Parameter(torch.empty(dim, kernel))
        self.depthwise_bias = nn.Parameter(torch.empty(dim))
        bound = 1.0 / kernel**0.5
        nn.init.uniform_(self.depthwise, -bound, bound)
        nn.init.uniform_(self.depthwise_bias, -bound, bound)
        self.norm = RMSNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def temporal_conv(self, z: torch.Tensor) -> torch.Tensor:
        """Depthwise conv along frames of (B, T, K, N), done as a channels-last conv2d (no copy).

        For causal blocks z starts with the kernel - 1 frames of history and the output is
        that many frames shorter.
        """
        n, kernel = self.depthwise.shape
        if self.causal and z.shape[1] == kernel:  # one new frame (streaming): a weighted sum, 2x faster than conv2d
            return (z * self.depthwise.t()[:, None, :]).sum(1, keepdim=True) + self.depthwise_bias
        x = z.permute(0, 3, 1, 2)  # (B, N, T, K) view whose memory is channels-last
        w = self.depthwise.view(n, 1, kernel, 1)
        padding = (0, 0) if self.causal else (kernel // 2, 0)
        y = F.conv2d(x, w, self.depthwise_bias, padding=padding, groups=n)
        return y.permute(0, 2, 3, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.step(z, None)[0]

    def step(self, z: torch.Tensor, history: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output, history for the next call): causal blocks continue from `history`, the
        kernel - 1 input frames before z (None: zeros, the start of a signal)."""
        n = z.shape[-1]
        if self.causal:
            b, _, k, _ = z.shape
            if history is None:
                history = z.new_zeros(b, self.depthwise.shape[1] - 1, k, n)
            x = torch.cat([history, z], dim=1)
            y, history = self.temporal_conv(x), x[:, x.shape[1] - history.shape[1]:]
        else:
            y = self.temporal_conv(z)
        y = y.reshape(-1, n)
        out = map_tiles(self._mlp, z.reshape(-1, n), y, rows=tile_rows(z)).view(z.shape)
        return out, history

    def _mlp(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return z + linear(self.fc2, _silu(linear(self.fc1, self.norm(y))))

    @torch.no_grad()
    def drop_future_taps(self) -> None:
        """Turns a centred kernel into its causal part: the taps on the current and earlier
        frames keep their frames, the taps on later frames are dropped (fine-tuning a
        non-causal model into a causal one starts from here)."""
        kernel = self.depthwise.shape[1]
        centre = kernel // 2
        causal = torch.zeros_like(self.depthwise)
        causal[:, kernel - 1 - centre:] = self.depthwise[:, :centre + 1]
        self.depthwise.copy_(causal)


class BandSequenceBlock(nn.Module):
    """One band-sequence block: BandRoformer across bands, then TCN blocks across time."""

    def __init__(self, dim: int, heads: int, tcn_blocks: int, tcn_kernel: int, rope_positions: int,
                 causal: bool = False) -> None:
        super().__init__()
        self.band = BandRoformer(dim, heads, rope_positions)
        self.tcn = nn.Sequential(*(TCNBlock(dim, tcn_kernel, causal) for _ in range(tcn_blocks)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.tcn(self.band(z))

    @torch.no_grad()
    def make_identity(self) -> None:
        """Zeros the output projection of every residual branch, so the block returns its input
        exactly while each branch still gets gradients: a model grown by such blocks computes
        what it did before growing (Apollo.grown)."""
        for layer in (self.band.attn_out, self.band.ffn_out, *(tcn.fc2 for tcn in self.tcn)):
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()

    def step(self, z: torch.Tensor, history: list[torch.Tensor | None] | None
             ) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """forward() that continues each TCN block from `history` (None: the start of a signal)."""
        z = self.band(z)
        history = history or [None] * len(self.tcn)
        after = []
        for block, past in zip(self.tcn, history):
            z, past = block.step(z, past)
            after.append(past)
        return z, after
