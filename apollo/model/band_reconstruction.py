"""Band reconstruction (paper Fig. 1d): per-band RMSNorm + FC + GLU -> complex sub-band spectra."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .layers import BandLinear, rms_norm


def drop_small_corrections(correction: torch.Tensor, spec: torch.Tensor, floor_db: float) -> torch.Tensor:
    """Fades the corrections (B, T, F, 2) that are far under the input cell `spec` they are added to.

    The part of a correction in phase with its cell changes only the cell's level (an encoder's
    input scale, LAME's 0.95, is undone this way) and always stays. The rest q is scaled by
    |q|^2 / (|q|^2 + t^2 |x|^2), t = 10^(floor_db/20): under a cell the codec kept it fades out, in
    a hole or the emptied band (|x| near 0) it stays whole. ApolloConfig.correction_floor_db says why.
    """
    d, x = correction.float(), spec.float()
    x2 = x.square().sum(-1, keepdim=True)
    level = (d * x).sum(-1, keepdim=True) / x2.clamp_min(1e-20) * x  # Re(d x*) / |x|^2 x
    rest = d - level
    r2 = rest.square().sum(-1, keepdim=True)
    gain = r2 / (r2 + x2 * 10 ** (floor_db / 10)).clamp_min(1e-20)
    return (level + gain * rest).to(correction.dtype)


class BandReconstructionGroup(nn.Module):
    """Reconstruction layers for a run of bands that share one width."""

    def __init__(self, bands: int, width: int, feature_dim: int) -> None:
        super().__init__()
        self.width = width
        self.norm = nn.Parameter(torch.ones(bands, feature_dim))
        self.proj = BandLinear(bands, feature_dim, 4 * width)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, T, K, N) -> spectrum (B, T, K*width, 2)."""
        out = F.glu(self.proj(rms_norm(z, self.norm)), dim=-1)  # (B, T, K, 2w): [Re..., Im...]
        b, t, k = out.shape[:3]
        return out.reshape(b, t, k, 2, self.width).transpose(-1, -2).reshape(b, t, k * self.width, 2)


class BandReconstruction(nn.Module):
    """Maps band-sequence features back to the full complex spectrogram (no mask)."""

    def __init__(self, layout: list[tuple[int, int]], feature_dim: int) -> None:
        super().__init__()
        self.layout = list(layout)
        self.groups = nn.ModuleList(BandReconstructionGroup(n, w, feature_dim) for n, w in layout)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, T, K, N) -> spectrum (B, T, F, 2)."""
        parts = torch.split(z, [n for n, _ in self.layout], dim=2)
        return torch.cat([g(p) for g, p in zip(self.groups, parts)], dim=2)

    @torch.no_grad()
    def zero_output(self) -> None:
        """Makes the output exactly zero (the GLU's value half) while gradients still flow."""
        for group in self.groups:
            half = 2 * group.width
            group.proj.weight[:, :half].zero_()
            group.proj.bias[:, :half].zero_()
