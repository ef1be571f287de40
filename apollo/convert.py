"""The one place that knows the released checkpoints' names ("v1 layout") and maps them to ours.

Released names (per band, per layer, 1x1 convolutions with a trailing kernel dim of 1):
BN.{k}.0 / BN.{k}.1 -> band_split; net.{i}.band_net / net.{i}.seq_net -> blocks.{i};
output.{k}.0 / output.{k}.1 -> band_reconstruction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .model.config import ApolloConfig, v1_layout

Tensor = torch.Tensor

_BAND_NET = {  # released name under net.{i}.band_net -> ours under blocks.{i}.band
    "cos_freq": "rope_cos",
    "sin_freq": "rope_sin",
    "input_norm.weight": "attn_norm.weight",
    "weight.weight": "qkv.weight",
    "output.weight": "attn_out.weight",
    "MLP.0.weight": "ffn_norm.weight",
    "MLP.1.weight": "ffn_in.weight",
    "MLP_output.weight": "ffn_out.weight",
}
_SEQ_NET = {  # released name under net.{i}.seq_net.blocks.{j}.conv -> ours under blocks.{i}.tcn.{j}
    "0.weight": "depthwise",
    "0.bias": "depthwise_bias",
    "1.weight": "norm.weight",
    "2.weight": "fc1.weight",
    "2.bias": "fc1.bias",
    "4.weight": "fc2.weight",
    "4.bias": "fc2.bias",
}
STANDARD_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000)


def is_released(state: Mapping[str, Tensor]) -> bool:
    return "BN.0.0.weight" in state and "output.0.1.weight" in state


def _band_index(layout: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Global band k -> (group, index within group)."""
    return [(g, i) for g, (count, _) in enumerate(layout) for i in range(count)]


def infer_config(state: Mapping[str, Tensor], win_ms: int = 20) -> ApolloConfig:
    """Reads the generator's size and sample rate off a released state dict's shapes."""
    if not is_released(state):
        raise ValueError("not a released Apollo state dict (no BN.0.0.weight / output.0.1.weight)")
    bands = len({k.split(".")[1] for k in state if k.startswith("BN.")})
    if bands != 80:
        raise ValueError(f"released checkpoints have 80 bands, this one has {bands}")
    width = (state["BN.0.0.weight"].shape[0] - 1) // 2
    last = (state["BN.79.0.weight"].shape[0] - 1) // 2
    bins = 79 * width + last
    candidates = [2 * (bins - 1), 2 * (bins - 1) + 1]
    rates = []
    for window in candidates:
        if int(window / 160) != width:
            continue
        rate = window * 1000 // win_ms
        if int(rate * win_ms // 1000) == window:
            rates.append(rate)
    if not rates:
        raise ValueError(f"no sample rate fits bands of {width} bins with a last band of {last}")
    sample_rate = next((r for r in rates if r in STANDARD_RATES), rates[0])
    feature_dim = state["BN.0.1.weight"].shape[0]
    blocks = len({k.split(".")[1] for k in state if k.startswith("net.")})
    head_dim = state["net.0.band_net.cos_freq"].shape[1]
    tcn_blocks = len({k.split(".")[4] for k in state if k.startswith("net.0.seq_net.blocks.")})
    return ApolloConfig(
        sample_rate=sample_rate,
        win_ms=win_ms,
        feature_dim=feature_dim,
        num_blocks=blocks,
        num_heads=feature_dim // head_dim,
        band_layout="v1",
        tcn_blocks=tcn_blocks,
        tcn_kernel=state["net.0.seq_net.blocks.0.conv.0.weight"].shape[-1],
        rope_positions=state["net.0.band_net.cos_freq"].shape[0],
    )


def from_released(state: Mapping[str, Tensor], config: ApolloConfig) -> dict[str, Tensor]:
    """Released state dict -> this package's state dict (per-band weights stacked per group)."""
    layout = v1_layout(config.window)
    where = _band_index(layout)
    out: dict[str, Tensor] = {}
    stacks: dict[str, list[Tensor | None]] = {}

    def put(name: str, index: int, count: int, value: Tensor) -> None:
        stacks.setdefault(name, [None] * count)[index] = value

    unknown = []
    for name, value in state.items():
        parts = name.split(".")
        if parts[0] in ("BN", "output") and len(parts) == 4:
            g, i = where[int(parts[1])]
            stage = "band_split" if parts[0] == "BN" else "band_reconstruction"
            count = layout[g][0]
            if parts[2] == "0":
                put(f"{stage}.groups.{g}.norm", i, count, value)
            else:
                weight = value.squeeze(-1) if parts[3] == "weight" else value
                put(f"{stage}.groups.{g}.proj.{parts[3]}", i, count, weight)
            continue
        m = re.fullmatch(r"net\.(\d+)\.band_net\.(.+)", name)
        if m and m.group(2) in _BAND_NET:
            ours = _BAND_NET[m.group(2)]
            out[f"blocks.{m.group(1)}.band.{ours}"] = value.squeeze(-1) if value.dim() == 3 else value
            continue
        m = re.fullmatch(r"net\.(\d+)\.seq_net\.blocks\.(\d+)\.conv\.(.+)", name)
        if m and m.group(3) in _SEQ_NET:
            ours = _SEQ_NET[m.group(3)]
            if ours == "depthwise":
                value = value.squeeze(1)  # (N, 1, k) -> (N, k)
            elif value.dim() == 3:
                value = value.squeeze(-1)
            out[f"blocks.{m.group(1)}.tcn.{m.group(2)}.{ours}"] = value
            continue
        unknown.append(name)
    if unknown:
        raise ValueError(f"unexpected entries in released state dict: {unknown[:5]}")
    for name, items in stacks.items():
        if any(v is None for v in items):
            raise ValueError(f"released state dict is missing bands for {name}")
        out[name] = torch.stack(items)  # type: ignore[arg-type]
    return out


def to_released(state: Mapping[str, Tensor], config: ApolloConfig) -> dict[str, Tensor]:
    """This package's state dict (v1 layout) -> released names, e.g. for the authors' tools."""
    if config.band_layout != "v1":
        raise ValueError("only v1-layout models can be written with the released names")
    if config.bitrate_classes:
        raise ValueError("a model told bitrates has no released form (the released model has no bitrate embedding)")
    layout = v1_layout(config.window)
    out: dict[str, Tensor] = {}
    band = 0
    for g, (count, _) in enumerate(layout):
        for i in range(count):
            for stage, prefix in (("band_split", "BN"), ("band_reconstruction", "output")):
                base = f"{stage}.groups.{g}"
                out[f"{prefix}.{band}.0.weight"] = state[f"{base}.norm"][i].clone()
                out[f"{prefix}.{band}.1.weight"] = state[f"{base}.proj.weight"][i].unsqueeze(-1).clone()
                out[f"{prefix}.{band}.1.bias"] = state[f"{base}.proj.bias"][i].clone()
            band += 1
    for layer in range(config.num_blocks):
        for released, ours in _BAND_NET.items():
            value = state[f"blocks.{layer}.band.{ours}"]
            conv = value.dim() == 2 and "freq" not in released
            out[f"net.{layer}.band_net.{released}"] = value.unsqueeze(-1) if conv else value
        for j in range(config.tcn_blocks):
            for released, ours in _SEQ_NET.items():
                value = state[f"blocks.{layer}.tcn.{j}.{ours}"]
                if ours == "depthwise":
                    value = value.unsqueeze(1)
                elif value.dim() == 2:
                    value = value.unsqueeze(-1)
                out[f"net.{layer}.seq_net.blocks.{j}.conv.{released}"] = value
    return out
