"""`apollo benchmark`: parameters, MACs per second of audio, RTF and peak memory of a model."""

from __future__ import annotations

import resource
import statistics
import time
from typing import Any

import torch

from .api import resolve_device
from .inference import check_compile, check_precision, compile_blocks, with_precision
from .model import Apollo, layers
from .model.config import PRESETS
from .pretrained import count_parameters, load_model


def _linear_flops(input_shape, weight_shape, *args, **kwargs) -> int:  # noqa: ANN001, ANN002, ANN003
    """FLOPs of oneDNN's linear op (apollo.layers.linear), which PyTorch's counter does not know."""
    rows = 1
    for size in input_shape[:-1]:
        rows *= size
    return 2 * rows * weight_shape[0] * weight_shape[1]


def macs_per_second(model: Apollo, channels: int = 1) -> float:
    """Multiply-accumulates for one second of audio (FLOPs / 2, counted by PyTorch)."""
    from torch.utils.flop_counter import FlopCounterMode

    wav = torch.zeros(1, channels, model.config.sample_rate)
    onednn = {torch.ops.mkldnn._linear_pointwise: _linear_flops} if layers.ONEDNN_LINEAR else {}
    counter = FlopCounterMode(display=False, custom_mapping=onednn)
    with torch.inference_mode(), counter:
        model(wav)
    return counter.get_total_flops() / 2


def benchmark(checkpoint: str | None = None, config: str | None = None, seconds: float = 10.0,
              device: str = "cpu", channels: int = 2, repeats: int = 5, threads: int | None = None,
              precision: str = "fp32", batch: int = 1, compile: bool = False,
              bitrate: float | None = None) -> dict[str, Any]:
    """RTF = median seconds of compute per second of audio, after one warm-up run.

    batch > 1 times that many clips of `seconds` in one forward pass (GPU throughput); the RTF
    is still per second of audio, so it is the time per batch over batch x seconds. bitrate
    tells a model told bitrates (config.bitrate_classes) the clips' MP3 kbps, as `apollo restore`
    tells it an MP3's: the path an MP3 input takes (with the default's dark-source rule, the
    limit of the loudest frames is found too); others ignore it.
    """
    if threads:
        torch.set_num_threads(threads)
    if (checkpoint is None) == (config is None):
        raise ValueError("give exactly one of checkpoint or config")
    if batch < 1 or seconds <= 0 or channels < 1 or repeats < 1:
        raise ValueError("batch, seconds, channels and repeats must be positive")
    dev = resolve_device(device)
    check_precision(precision, dev)
    if compile:
        check_compile(precision, dev)
    if config is not None:
        if config not in PRESETS:
            raise ValueError(f"unknown config {config!r}; choose from {', '.join(PRESETS)}")
        torch.manual_seed(0)
        model = Apollo(PRESETS[config]).eval()
    else:
        model = load_model(checkpoint)
    macs = macs_per_second(model, channels=1)
    params = count_parameters(model)
    model = model.to(dev)
    if compile:
        model = compile_blocks(model)  # compiled during the warm-up run, which is not timed
    model = with_precision(model, precision, dev)
    wav = torch.randn(batch, channels, int(seconds * model.config.sample_rate), device=dev) * 0.1
    told = bitrate is not None and bool(model.config.bitrate_classes)
    kbps = torch.full((batch,), float(bitrate), device=dev) if told else None
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            model(wav, bitrate=kbps)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:
                times.append(time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "model": checkpoint or config,
        "config": model.config.to_dict(),
        "parameters": params,
        "precision": precision,
        "batch": batch,
        "compiled": compile,
        "bitrate": bitrate if told else None,
        "macs_per_second_mono": macs,
        "gmacs_per_second_stereo": round(2 * macs / 1e9, 2),
        "seconds": seconds,
        "channels": channels,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "rtf": statistics.median(times) / (batch * seconds),
        "ms_per_second": round(1000 * statistics.median(times) / (batch * seconds), 3),
        "rtf_runs": [t / (batch * seconds) for t in times],
        "peak_memory_mb": round(peak / 2**20, 1),
        "peak_memory_kind": "cuda max allocated" if dev.type == "cuda" else "process peak RSS",
        "torch": torch.__version__,
    }
