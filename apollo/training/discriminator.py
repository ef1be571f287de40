"""Multi-resolution STFT discriminator (paper Table I, as released)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.parametrizations import spectral_norm

from .losses import WINDOWS  # the paper's STFT windows, shared by the loss and the discriminators

CHANNELS = (8, 16, 32, 64, 128, 256)


class STFTDiscriminator(nn.Module):
    """Scores one STFT resolution; input channels are [Re, Im] of every audio channel."""

    def __init__(self, window: int, audio_channels: int = 2, channels: tuple[int, ...] = CHANNELS) -> None:
        super().__init__()
        self.window = window
        self.register_buffer("hann", torch.hann_window(window), persistent=False)
        layers, c_in = [], 2 * audio_channels
        for i, c_out in enumerate(channels):
            stride = 2 if i % 2 == 1 else 1  # stride 2 at layers 2, 4, 6
            layers.append(spectral_norm(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)))
            c_in = c_out
        self.layers = nn.ModuleList(layers)
        self.output = nn.Conv2d(c_in, 1, 3, padding=1)

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, C, L), unit energy -> score map (B, 1, T', F') and the 6 hidden maps."""
        b, c, length = wav.shape
        spec = torch.stft(wav.reshape(b * c, length).float(), self.window, self.window // 2,
                          window=self.hann, return_complex=True)
        x = torch.view_as_real(spec).reshape(b, c, spec.shape[-2], spec.shape[-1], 2)
        x = x.permute(0, 1, 4, 3, 2).reshape(b, 2 * c, spec.shape[-1], spec.shape[-2])  # (B, 2C, T, F)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.output(x), features


class MultiResolutionDiscriminator(nn.Module):
    """One STFTDiscriminator per window size; the waveform is scaled to unit energy first."""

    def __init__(self, audio_channels: int = 2, windows: tuple[int, ...] = WINDOWS) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(STFTDiscriminator(w, audio_channels) for w in windows)

    def forward(self, wav: torch.Tensor) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        energy = wav.float().pow(2).sum(dim=(1, 2), keepdim=True).clamp_min(1e-12).sqrt()
        wav = wav / energy
        scores, features = [], []
        for disc in self.discriminators:
            s, f = disc(wav)
            scores.append(s)
            features.append(f)
        return scores, features
