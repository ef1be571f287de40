"""Band split (paper Fig. 1b): sub-band gain-shape features -> per-band bottleneck embeddings."""

from __future__ import annotations

import torch
from torch import nn

from .layers import BandLinear, rms_norm

GAIN_EPS = torch.finfo(torch.float32).eps


def gain_shape(bands: torch.Tensor) -> torch.Tensor:
    """Gain-shape features of complex sub-bands.

    bands: (..., K, 2, width) real/imag parts -> (..., K, 2*width + 1) =
    [Re/g, Im/g, log g] with g = sqrt(sum |X|^2 + eps) over the band's bins (Eq. 1-2).
    """
    gain = (bands.pow(2).sum(dim=(-2, -1)) + GAIN_EPS).sqrt()
    shape = bands / gain[..., None, None]
    return torch.cat([shape.flatten(-2), gain.log()[..., None]], dim=-1)


class BandSplitGroup(nn.Module):
    """Bottleneck (RMSNorm + linear) for a run of bands that share one width."""

    def __init__(self, bands: int, width: int, feature_dim: int) -> None:
        super().__init__()
        self.width = width
        self.norm = nn.Parameter(torch.ones(bands, 2 * width + 1))
        self.proj = BandLinear(bands, 2 * width + 1, feature_dim)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec: (B, T, bins, 2) for this group's bins -> (B, T, bands, feature_dim)."""
        b, t = spec.shape[:2]
        bands = spec.reshape(b, t, -1, self.width, 2).transpose(-1, -2)  # (B, T, K, 2, w)
        return self.proj(rms_norm(gain_shape(bands), self.norm))


class BandSplit(nn.Module):
    """Splits a spectrogram into the configured bands and embeds each one."""

    def __init__(self, layout: list[tuple[int, int]], feature_dim: int) -> None:
        super().__init__()
        self.layout = list(layout)
        self.groups = nn.ModuleList(BandSplitGroup(n, w, feature_dim) for n, w in layout)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        """spec: (B, T, F, 2) -> embeddings Z: (B, T, K, feature_dim)."""
        sizes = [n * w for n, w in self.layout]
        parts = torch.split(spec, sizes, dim=2)
        return torch.cat([g(p) for g, p in zip(self.groups, parts)], dim=2)
