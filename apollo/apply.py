"""Chunked inference for audio of any length with flat memory and no seams.

Every kept region of `segment` samples is computed with `context` extra samples on both sides
that are thrown away, so each output sample sees the same neighbourhood as in one pass over
the whole file; neighbouring regions then overlap by `crossfade` samples and are blended
linearly. Chunk starts lie on the STFT hop grid, so chunked and one-pass outputs agree to
float rounding. The released inference script crossfades without discarding context, which
leaves audible dips at every seam.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .model.config import ApolloConfig

MIN_CONTEXT_SECONDS = 0.6


def receptive_context(config: ApolloConfig) -> int:
    """Samples of context that cover the generator's temporal receptive field (+ margin).

    Causal kernels reach twice as far into the past (and nowhere into the future): the context
    covers the longer side, so both kinds of model chunk without seams. A model with an unknown-bitrate
    generator (config.unknown) gets the context of the one that reaches further."""
    reach = config.tcn_kernel - 1 if config.causal else config.tcn_kernel // 2
    frames = config.num_blocks * config.tcn_blocks * reach
    own = (frames + 2) * config.hop + config.window
    return own if config.unknown is None else max(own, receptive_context(config.unknown))


@dataclass(frozen=True)
class ChunkPlan:
    """Chunking in samples at the model's rate; all values are multiples of the STFT hop."""

    segment: int  # kept samples per chunk; 0 = whole input in one pass
    context: int  # discarded samples computed on each side
    crossfade: int  # overlap of neighbouring kept regions

    @classmethod
    def from_seconds(cls, config: ApolloConfig, segment: float, crossfade: float = 0.05,
                     context: float | None = None) -> "ChunkPlan":
        values = (segment, crossfade) if context is None else (segment, crossfade, context)
        if not all(np.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"segment, crossfade and context must be finite and not negative, got {values}")
        hop, rate = config.hop, config.sample_rate

        def on_grid(seconds: float) -> int:
            return int(np.ceil(seconds * rate / hop)) * hop

        ctx = max(on_grid(MIN_CONTEXT_SECONDS if context is None else context), 0)
        if context is None:
            ctx = max(ctx, on_grid(receptive_context(config) / rate))
        seg = on_grid(segment) if segment > 0 else 0
        fade = min(on_grid(crossfade), seg // 2) if seg else 0
        fade -= fade % (2 * hop)  # half of it on each side of a boundary, still on the grid
        return cls(seg, ctx, fade)


class _Accumulator:
    """Overlap-add buffer that releases samples once no later chunk can touch them."""

    def __init__(self, channels: int) -> None:
        self.buf = np.zeros((channels, 0), np.float32)
        self.start = 0  # absolute position of buf[:, 0]

    def add(self, pos: int, data: np.ndarray) -> None:
        end = pos + data.shape[1] - self.start
        if end > self.buf.shape[1]:
            grow = np.zeros((self.buf.shape[0], end - self.buf.shape[1]), np.float32)
            self.buf = np.concatenate([self.buf, grow], axis=1)
        self.buf[:, pos - self.start:end] += data

    def pop(self, until: int) -> np.ndarray:
        cut = until - self.start
        out, self.buf = self.buf[:, :cut], self.buf[:, cut:].copy()
        self.start = until
        return out


@dataclass
class _Chunk:
    x: np.ndarray  # model input, starting at absolute sample `lo`
    lo: int
    keep_lo: int
    weights: np.ndarray  # crossfade weights over [keep_lo, keep_lo + len(weights))
    release: int  # output before this position is final once this chunk is added


def _weights(keep_lo: int, keep_hi: int, index: int, segment: int, half: int, last: int) -> np.ndarray:
    """Linear ramps of 2*half samples centred on chunk boundaries; neighbours sum to 1."""
    t = np.arange(keep_lo, keep_hi, dtype=np.float64) + 0.5
    w = np.ones(keep_hi - keep_lo, np.float64)
    if half:
        if index > 0:
            w = np.minimum(w, (t - (index * segment - half)) / (2 * half))
        if not last:
            w = np.minimum(w, ((index + 1) * segment + half - t) / (2 * half))
    return np.clip(w, 0.0, 1.0).astype(np.float32)


def restore_stream(
    model: Callable[..., torch.Tensor],
    blocks: Iterable[np.ndarray],
    plan: ChunkPlan,
    channels: int,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    on_progress: Callable[[int], None] | None = None,
    band_limit: torch.Tensor | None = None,
    before_forward: Callable[[], object] | None = None,
    bitrate: float | None = None,
    source_limit: torch.Tensor | None = None,
    dark_source_hz: float | None = None,
) -> Iterator[np.ndarray]:
    """Restores a stream of (channels, n) blocks at the model's rate; yields restored blocks.

    The output has exactly as many samples as the input. on_progress(n) is called with the
    number of samples whose output became final. band_limit (1,) is the whole file's input band
    limit for models that keep the input band (FileBandLevels): every chunk then uses it.
    before_forward() runs before each forward pass (threads.CpuShare.update). bitrate: the input's
    nominal MP3 bitrate in kbps, for models told it (ApolloConfig.bitrate_classes); None: unknown.
    source_limit (1,): the whole file's band limit in its loudest frames, for models whose rules read
    it (ApolloConfig.reads_source_limit); dark_source_hz: that rule's frequency for
    this file where its encoder states its own (Apollo.dark_rows; None: the model's for its bitrate).
    """
    if plan.segment == 0:
        data = np.concatenate(list(blocks), axis=1)
        if before_forward:
            before_forward()
        out = _run(model, [data], device, band_limit, bitrate, source_limit, dark_source_hz)[0]
        if on_progress:
            on_progress(data.shape[1])
        yield out
        return

    seg, ctx, half = plan.segment, plan.context, plan.crossfade // 2
    source = iter(blocks)
    buf, buf_start, exhausted = np.zeros((channels, 0), np.float32), 0, False
    acc, done, pending = _Accumulator(channels), 0, []

    def flush() -> Iterator[np.ndarray]:
        nonlocal done
        while pending:
            # one forward for the leading run of equal-length chunks (in order: the output
            # does not depend on the batch, but the accumulator needs chunks in sequence)
            size, n = pending[0].x.shape[1], 1
            while n < min(batch_size, len(pending)) and pending[n].x.shape[1] == size:
                n += 1
            group = pending[:n]
            del pending[:n]
            if before_forward:
                before_forward()
            for chunk, y in zip(group, _run(model, [c.x for c in group], device, band_limit, bitrate, source_limit,
                                            dark_source_hz)):
                start = chunk.keep_lo - chunk.lo
                acc.add(chunk.keep_lo, y[:, start:start + len(chunk.weights)] * chunk.weights)
                if chunk.release > done:
                    yield acc.pop(chunk.release)
                    if on_progress:
                        on_progress(chunk.release - done)
                    done = chunk.release

    k = 0
    while True:
        lo, hi = max(k * seg - half - ctx, 0), (k + 1) * seg + half + ctx
        # read one sample past `hi`, so that a chunk that is not last is known not to be
        while not exhausted and buf_start + buf.shape[1] <= hi:
            try:
                buf = np.concatenate([buf, np.asarray(next(source), np.float32)], axis=1)
            except StopIteration:
                exhausted = True
        length = buf_start + buf.shape[1]
        if k * seg >= length:
            break
        last = exhausted and (k + 1) * seg >= length
        keep_lo = max(k * seg - half, 0)
        keep_hi = length if last else min((k + 1) * seg + half, length)
        pending.append(_Chunk(
            x=buf[:, lo - buf_start:min(hi, length) - buf_start],
            lo=lo,
            keep_lo=keep_lo,
            weights=_weights(keep_lo, keep_hi, k, seg, half, last),
            release=length if last else (k + 1) * seg - half,
        ))
        k += 1
        if len(pending) >= batch_size or last:
            yield from flush()
        if last:
            break
        next_lo = max(k * seg - half - ctx, 0)
        if next_lo > buf_start:  # drop input no later chunk needs (pending chunks hold views)
            buf, buf_start = buf[:, next_lo - buf_start:].copy(), next_lo
    yield from flush()


_END = object()


def prefetch(items: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterates `items` in a background thread, up to `depth` ahead of the consumer.

    Decoding and resampling the next blocks then overlap with the model's forward pass (on
    a GPU, or on CPU cores the model leaves idle). Exceptions from `items` are re-raised in
    the consumer; closing the iterator early stops the thread.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, not swallowed
            put((_END, err))

    worker = threading.Thread(target=produce, name="apollo-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item, err = buffer.get()
            if err is not None:
                raise err
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


def silence_mask(x: np.ndarray, radius: int) -> np.ndarray:
    """True where a channel is exactly zero within +-radius samples (digital silence)."""
    nonzero = np.concatenate([np.zeros((x.shape[0], 1), np.int64), np.cumsum(x != 0, axis=1)], axis=1)
    idx = np.arange(x.shape[1])
    lo, hi = np.maximum(idx - radius, 0), np.minimum(idx + radius + 1, x.shape[1])
    return (nonzero[:, hi] - nonzero[:, lo]) == 0


def _run(model: Callable[..., torch.Tensor], chunks: list[np.ndarray], device: torch.device | str,
         band_limit: torch.Tensor | None = None, bitrate: float | None = None,
         source_limit: torch.Tensor | None = None, dark_source_hz: float | None = None) -> list[np.ndarray]:
    """One forward pass; digital silence in the input stays exactly silent in the output."""
    device = torch.device(device)
    with torch.inference_mode():
        x = torch.from_numpy(np.stack(chunks))
        if device.type == "cuda":  # page-locked memory: an asynchronous copy, ordered on the stream
            x = x.pin_memory().to(device, non_blocking=True)
        else:
            x = x.to(device)
        if bitrate is not None:  # only models told the bitrate take it (a plain callable may stand in)
            told = torch.full((len(chunks),), float(bitrate), device=device)
            limit = None if band_limit is None else band_limit.expand(len(chunks))
            if source_limit is None:
                y = model(x, limit, told)
            elif dark_source_hz is None:
                y = model(x, limit, told, source_limit=source_limit.expand(len(chunks)))
            else:
                y = model(x, limit, told, source_limit=source_limit.expand(len(chunks)),
                          dark_source_hz=torch.full((len(chunks),), float(dark_source_hz), device=device))
        elif band_limit is None:
            y = model(x)
        else:
            y = model(x, band_limit.expand(len(chunks)))
        y = y.float().cpu().numpy()
    radius = getattr(getattr(model, "config", None), "window", 0)
    for chunk, out in zip(chunks, y):
        out[silence_mask(chunk, radius)] = 0.0
    return list(y)
