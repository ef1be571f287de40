"""Restoring a live stream with a causal model: blocks in, the same blocks out, a fixed delay.

A causal generator (ApolloConfig.causal) looks at no frame after the current one, so a stream
can be restored frame by frame as its samples arrive. The restorer keeps what the next frames
need and nothing else: the input not yet framed, the overlap-add tail of the inverse STFT and,
per temporal convolution, its last kernel - 1 input frames. Every hop of input is transformed,
restored and overlap-added once; the past is never recomputed.

Output is the offline restore (Apollo.forward on the whole signal) delayed by exactly `latency`
= window - 1 samples, the look-ahead of the STFT: a sample is final once the last window that
overlaps it has arrived. The first `latency` output samples are silence; flush() returns the
last `latency` samples at the end of the stream.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .model import Apollo
from .pretrained import load_model

ENVELOPE_EPS = 1e-11  # torch.istft's bound for a window envelope that is zero


class StreamingRestorer:
    """Restores blocks of a live stream, any size from one sample up, with a fixed delay.

    checkpoint: a causal model (a built-in name such as "stream", a file, or an Apollo module).
    channels: channels of the stream; blocks are (channels, samples) arrays or tensors, at the
    model's sample_rate. process() returns as many samples as it is given (the output delayed by
    `latency` samples); flush() ends the stream, returns the delayed tail and resets the
    restorer for the next stream. compile: torch.compile the per-frame step (one frame per call,
    so it compiles once, ~30 s on a 2-core CPU, and then runs ~1.5x faster, docs/streaming.md).
    A live stream's peak is not known ahead, so a model's normalize_peak is not applied here:
    the stream is restored at the level it comes in (the built-in stream model has it off).
    bitrate: the MP3 bitrate (kbps) the stream was decoded from, told to models trained with
    bitrate_classes (the built-in stream model is not: it ignores it); None: unknown, as WAV/FLAC input.
    """

    def __init__(self, checkpoint: str | os.PathLike[str] | Apollo = "stream", device: str | torch.device = "cpu",
                 channels: int = 2, compile: bool = False, bitrate: float | None = None) -> None:
        model = checkpoint if isinstance(checkpoint, Apollo) else load_model(checkpoint, device)
        if not model.config.causal:
            name = "the model" if isinstance(checkpoint, Apollo) else repr(str(checkpoint))
            raise ValueError(f"{name} is not causal and cannot stream: use a causal model, e.g. the built-in 'stream'")
        if channels < 1:
            raise ValueError(f"channels must be at least 1, got {channels}")
        if bitrate is not None and not bitrate > 0:
            raise ValueError(f"bitrate must be positive kbps, got {bitrate}")
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.channels = channels
        config = model.config
        self.sample_rate: int = config.sample_rate
        self.latency: int = config.latency  # samples
        self._window_size, self._hop, self._pad = config.window, config.hop, config.window // 2
        self._window = torch.hann_window(config.window, device=self.device)
        self._step = torch.compile(model.restore_spectrum, dynamic=False) if compile else model.restore_spectrum
        self._bitrate = None if bitrate is None else torch.tensor([float(bitrate)], device=self.device)
        self._frames_per_step = 1 if compile else None  # a compiled step sees one input shape
        self.reset()

    @property
    def latency_ms(self) -> float:
        return 1000.0 * self.latency / self.sample_rate

    def reset(self) -> None:
        """Forgets the stream so far: the next block starts a new one."""
        c, w = self.channels, self._window_size
        self._input = torch.zeros(c, self._pad, device=self.device)  # centre padding, then samples
        self._ola = torch.zeros(c, w, device=self.device)  # overlap-add tail, from the next frame on
        self._envelope = torch.zeros(w, device=self.device)
        # per block, per TCN block: its last kernel - 1 input frames
        self._history = self.model.initial_history(c)
        self._trim = self._pad  # restored samples still to drop (the centre padding)
        self._queue = [np.zeros((c, self.latency), np.float32)]
        self._queued = self.latency
        self._received = 0  # input samples so far
        self._restored = 0  # restored samples queued so far
        self._frames = 0  # STFT frames restored so far
        self._tensors = False  # blocks come as torch tensors (else numpy arrays)

    def process(self, block: Any) -> Any:
        """Restores `block` (channels, n) and returns the next n output samples, same type."""
        samples = self._check(block)
        self._received += samples.shape[1]
        self._input = torch.cat([self._input, samples], dim=1)
        self._run(self._ready_frames())
        self._tensors = isinstance(block, torch.Tensor)
        out = self._pop(samples.shape[1])
        return torch.from_numpy(out) if self._tensors else out

    def flush(self) -> Any:
        """Ends the stream: returns the last `latency` output samples (the type of the blocks
        given), then reset()s."""
        received = self._received
        padded = self.model.padded_length(received)  # as Apollo.forward pads the input's end
        total = 1 + (padded + 2 * self._pad - self._window_size) // self._hop  # frames of the offline STFT
        zeros = torch.zeros(self.channels, padded - received + self._pad, device=self.device)
        self._input = torch.cat([self._input, zeros], dim=1)
        self._run(total - self._frames)
        extra = self._restored - received  # the last frames' samples past the end: dropped
        while extra > 0:
            last = self._queue[-1]
            cut = min(extra, last.shape[1])
            self._queue[-1] = last[:, :last.shape[1] - cut]
            self._queued, self._restored, extra = self._queued - cut, self._restored - cut, extra - cut
            if not self._queue[-1].shape[1]:
                self._queue.pop()
        if extra < 0:  # samples after the last frame's start, which no later frame reaches
            self._emit(self._ola[:, :self._trim - extra], self._envelope[:self._trim - extra])
        tail = self._pop(self._queued)
        tensors = self._tensors
        self.reset()
        return torch.from_numpy(tail) if tensors else tail

    # -- internals ------------------------------------------------------------------------------

    def _check(self, block: Any) -> torch.Tensor:
        x = block if isinstance(block, torch.Tensor) else torch.tensor(np.asarray(block, np.float32))
        if x.dim() != 2 or x.shape[0] != self.channels:
            raise ValueError(f"expected a ({self.channels}, samples) block, got shape {tuple(x.shape)}")
        return x.to(self.device, torch.float32)

    def _ready_frames(self) -> int:
        available = self._input.shape[1]
        return 0 if available < self._window_size else (available - self._window_size) // self._hop + 1

    @torch.inference_mode()
    def _run(self, count: int) -> None:
        """Transforms, restores and overlap-adds the next `count` frames of the input."""
        if count <= 0:
            return
        hop, size = self._hop, self._window_size
        frames = self._input[:, :(count - 1) * hop + size].unfold(1, size, hop)  # (C, count, W)
        spec = torch.view_as_real(torch.fft.rfft(frames * self._window, dim=-1))  # (C, count, F, 2)
        parts = []
        for piece in spec.split(self._frames_per_step or count, dim=1):
            out, self._history = self._step(piece, self.channels, history=self._history, bitrate=self._bitrate)
            parts.append(out)
        out = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        restored = torch.fft.irfft(torch.view_as_complex(out.float().contiguous()), n=size, dim=-1) * self._window
        span = (count - 1) * hop + size
        grow = span - self._ola.shape[1]
        ola = torch.cat([self._ola, self._ola.new_zeros(self.channels, grow)], dim=1)
        envelope = torch.cat([self._envelope, self._envelope.new_zeros(grow)])
        square = self._window.square()
        for index in range(count):
            ola[:, index * hop:index * hop + size] += restored[:, index]
            envelope[index * hop:index * hop + size] += square
        final = count * hop  # no later frame reaches back before this position
        self._emit(ola[:, :final], envelope[:final])
        self._ola, self._envelope = ola[:, final:], envelope[final:]
        self._input = self._input[:, final:]
        self._frames += count

    def _emit(self, ola: torch.Tensor, envelope: torch.Tensor) -> None:
        """Queues final overlap-added samples, normalised by the window envelope as torch.istft does."""
        y = ola / torch.where(envelope > ENVELOPE_EPS, envelope, torch.ones_like(envelope))
        y = y[:, self._trim:]
        self._trim = max(0, self._trim - ola.shape[1])
        if y.shape[1]:
            self._queue.append(y.cpu().numpy())
            self._queued += y.shape[1]
            self._restored += y.shape[1]

    def _pop(self, n: int) -> np.ndarray:
        parts, need = [], n
        while need > 0:
            head = self._queue[0]
            take = min(need, head.shape[1])
            parts.append(head[:, :take])
            if take == head.shape[1]:
                self._queue.pop(0)
            else:
                self._queue[0] = head[:, take:]
            need -= take
        self._queued -= n
        return np.concatenate(parts, axis=1) if parts else np.zeros((self.channels, 0), np.float32)
