"""A straightforward per-band-loop generator in the released module structure ("v1 layout").

Not used for restoring: it is the speed baseline of `benchmarks/` and an independent check of
the batched generator. Its state-dict names are the released ones, so released checkpoints
load into it directly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from apollo.model.band_split import GAIN_EPS
from apollo.model.config import ApolloConfig, v1_layout
from apollo.model.layers import RMS_EPS, apply_rotary, rotary_tables


class ChannelRMSNorm(nn.Module):
    """RMSNorm over dim 1 of (batch, channels, length)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + RMS_EPS) * self.weight[:, None]
        return y.to(x.dtype)


class LoopRoformer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        cos, sin = rotary_tables(100, dim // heads)
        self.register_buffer("cos_freq", cos)
        self.register_buffer("sin_freq", sin)
        self.input_norm = ChannelRMSNorm(dim)
        self.weight = nn.Conv1d(dim, 3 * dim, 1, bias=False)
        self.output = nn.Conv1d(dim, dim, 1, bias=False)
        self.MLP = nn.Sequential(ChannelRMSNorm(dim), nn.Conv1d(dim, 8 * dim, 1, bias=False), nn.SiLU())
        self.MLP_output = nn.Conv1d(4 * dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, K)
        b, n, k = x.shape
        d = n // self.heads
        qkv = self.weight(self.input_norm(x)).view(b, self.heads, 3, d, k).transpose(-1, -2)
        q, key, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        cos, sin = self.cos_freq[:k], self.sin_freq[:k]
        q, key = apply_rotary(q, cos, sin), apply_rotary(key, cos, sin)
        att = torch.softmax(q @ key.transpose(-1, -2) / d**0.5, dim=-1) @ v  # (B, H, K, d)
        x = x + self.output(att.transpose(-1, -2).reshape(b, n, k))
        gate, value = self.MLP(x).chunk(2, dim=1)
        return x + self.MLP_output(F.silu(gate) * value)


class LoopTCNBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(dim, dim, 7, padding=3, groups=dim), ChannelRMSNorm(dim),
            nn.Conv1d(dim, 4 * dim, 1), nn.SiLU(), nn.Conv1d(4 * dim, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x)


class LoopSeq(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(LoopTCNBlock(dim) for _ in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class LoopLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.band_net = LoopRoformer(dim, heads)
        self.seq_net = LoopSeq(dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # (B, N, K, T)
        b, n, k, t = z.shape
        z = self.band_net(z.permute(0, 3, 1, 2).reshape(b * t, n, k)).view(b, t, n, k)
        z = self.seq_net(z.permute(0, 3, 2, 1).reshape(b * k, n, t)).view(b, k, n, t)
        return z.permute(0, 2, 1, 3).contiguous()


class LoopApollo(nn.Module):
    """Per-band modules in Python loops, 1x1 Conv1d layers, layout copies between stages."""

    def __init__(self, config: ApolloConfig) -> None:
        super().__init__()
        if config.band_layout != "v1":
            raise ValueError("the loop reference implements the v1 layout only")
        self.config = config
        self.widths = [w for n, w in v1_layout(config.window) for _ in range(n)]
        dim = config.feature_dim
        self.BN = nn.ModuleList(
            nn.Sequential(ChannelRMSNorm(2 * w + 1), nn.Conv1d(2 * w + 1, dim, 1)) for w in self.widths)
        self.net = nn.ModuleList(LoopLayer(dim, config.num_heads) for _ in range(config.num_blocks))
        self.output = nn.ModuleList(
            nn.Sequential(ChannelRMSNorm(dim), nn.Conv1d(dim, 4 * w, 1)) for w in self.widths)
        self.register_buffer("window", torch.hann_window(config.window), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        b, c, length = wav.shape
        cfg = self.config
        x = wav.reshape(b * c, length)
        spec = torch.stft(x, cfg.window, cfg.hop, window=self.window, center=True, return_complex=True)
        subbands, start = [], 0
        for width, bn in zip(self.widths, self.BN):
            band = spec[:, start:start + width]
            start += width
            gain = (band.real.pow(2) + band.imag.pow(2)).sum(1, keepdim=True).add(GAIN_EPS).sqrt()
            feats = torch.cat([band.real / gain, band.imag / gain, gain.log()], dim=1)
            subbands.append(bn(feats))
        z = torch.stack(subbands, dim=2)  # (B, N, K, T)
        for layer in self.net:
            z = layer(z)
        outs = []
        for k, (width, head) in enumerate(zip(self.widths, self.output)):
            y = F.glu(head(z[:, :, k]), dim=1)
            outs.append(torch.complex(y[:, :width], y[:, width:]))
        est = torch.cat(outs, dim=1)
        out = torch.istft(est, cfg.window, cfg.hop, window=self.window, center=True, length=length)
        return out.view(b, c, length)
