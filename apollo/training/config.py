"""Training configuration: YAML files in configs/ map onto these dataclasses."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..data.examples import DarkSource, ExampleConfig
from ..model.config import ApolloConfig


@dataclass
class DataConfig:
    source: str = "cache"  # "cache" (apollo data prepare) or "synthetic" (generated on the fly)
    # one cache folder, or a list of them read as one pool (e.g. [cache/real, cache/synth])
    cache: str | tuple[str, ...] | None = None
    # with a list of caches, the share of examples drawn from each (e.g. [0.75, 0.25]; empty:
    # their tracks pooled, see apollo.data.examples.ExampleConfig.cache_shares)
    cache_shares: tuple[float, ...] = ()
    segment: float = 3.0
    bitrates: tuple[int, ...] = (24, 32, 48, 64, 96, 128)
    examples_per_epoch: int = 40000
    valid_examples: int = 16
    # stem sums drawn as one stem before the uniform 1..8 draw (0: as released, 1 in 8 is one stem)
    single_stem_probability: float = 0.0
    # examples lowpassed at the source, corner log-uniform in darken_hz (apollo.data.examples.darken)
    darken_probability: float = 0.0
    darken_hz: tuple[float, float] = (1000.0, 8000.0)
    darken_octaves: float = 0.0  # > 0: corners at least this many octaves under the codec's cutoff
    # further kinds of dark example, each {probability, hz, octaves} as the three keys above and
    # optionally bitrates (kbps; the source is drawn at those only),
    # e.g. [{probability: 0.3, hz: [6000, 12000], octaves: 0.5}]: high corners where the codec
    # leaves room for them (64-128 kbps) on top of low corners at every bitrate
    more_dark_sources: tuple[DarkSource, ...] = ()
    # true: coded inputs are divided by the encoder's own level change (LAME's CBR presets scale
    # by 0.95), so the model does not learn to raise every input by 5%, VBR and 320 kbps included
    # (docs/default-model.md, "The level the model gives back"; data/examples.py coded_pair)
    level_neutral: bool = False
    # the share of training examples whose bitrate a model told bitrates (model.bitrate_classes)
    # is not told, so that its "unknown" row learns to restore WAV/FLAC input and live streams
    bitrate_withheld: float = 0.2
    # false: examples darkened at the source (darken_probability, more_dark_sources) are always told
    # their bitrate, so the "unknown" row learns from undarkened music only and the restraint dark
    # sources teach stays with the told rows (the same draws withhold the same undarkened examples).
    # One source of more_dark_sources can say so alone with its own `withheld: false`
    withhold_dark_sources: bool = True
    workers: int = 2

    def examples(self) -> ExampleConfig:
        """The draws of a cache's training examples that this section asks for."""
        dark = DarkSource(self.darken_probability, tuple(self.darken_hz), self.darken_octaves)
        sources = tuple(dataclasses.replace(s, withheld=s.withheld and self.withhold_dark_sources)
                        for s in (dark, *self.more_dark_sources))
        return ExampleConfig(segment=self.segment, bitrates=tuple(self.bitrates),
                             examples_per_epoch=self.examples_per_epoch,
                             single_stem_probability=self.single_stem_probability,
                             dark_sources=sources, level_neutral=self.level_neutral,
                             cache_shares=tuple(self.cache_shares))


@dataclass
class OptimConfig:
    batch_size: int = 1  # per process
    lr_g: float = 1e-3
    lr_d: float = 1e-4
    betas_g: tuple[float, float] = (0.9, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.99)
    weight_decay: float = 0.01
    lr_step_epochs: int = 2
    lr_gamma: float = 0.98
    grad_clip: float = 5.0
    finetune_lr_scale: float = 0.1  # applied to both learning rates when init_from is set
    # the bitrate embedding's learning rate (model.bitrate_classes), not scaled by finetune_lr_scale;
    # None: the generator's. A fine-tune that adds the embedding at zero needs it larger than
    # 1e-4, at which Adam moves a weight at most 0.005 in 50 steps
    lr_bitrate: float | None = None
    # an exponential moving average of the generator's weights, updated after each generator step
    # with this decay (0.98: the last ~50 steps), kept beside the raw weights and exported at every
    # keep_every as generator-ema-stepN. None: none kept. At batch 4 on a CPU the fill's level moves
    # 1-2 dB between kept steps of one run (docs/default-model.md), more than the bars leave
    ema_decay: float | None = None
    # the band-sequence blocks from this index on (None: none) train at lr_blocks_scale times the
    # generator's rate: each of their AdamW steps is scaled, so the optimizer's state and groups are
    # those of a run without it and a run resumes with or without it. For the blocks a run grew
    # (Apollo.grown): they start as identities, and at a fine-tune rate of 1e-4 their output
    # projections reached norms of 0.1-0.25 in 250 steps against 5-8.5 in the trained blocks
    # (docs/default-model.md, "v15 without its two grown blocks")
    lr_blocks_from: int | None = None
    lr_blocks_scale: float = 1.0


@dataclass
class LossConfig:
    reconstruction: float = 1.0
    feature_matching: float = 1.0
    adversarial: float = 1.0
    log_magnitude: float = 0.0  # not in the paper: losses.log_magnitude_loss, added to Eq. 4
    band_envelope: float = 0.0  # not in the paper: losses.band_envelope_loss, added to Eq. 4
    # the band-envelope term only on examples the generator is not told the bitrate of (the
    # "unknown" row), to hold that row's fill level without charging the told rows (docs/default-model.md,
    # "The band-envelope term on the "unknown" row only")
    band_envelope_untold_only: bool = False
    shortfall: float = 0.0  # not in the paper: losses.shortfall_loss, added to Eq. 4
    nsim: float = 0.0  # not in the paper: losses.nsim_loss (ViSQOL's similarity, as a loss), added to Eq. 4
    # the shortfall term only under the input's band edge (metrics.cutoff_hz of the degraded
    # example): the codec's holes in the band it kept, not the band it cut
    shortfall_kept_band: bool = False
    # the reference cells the shortfall term looks at: within this many dB of the example's loudest
    shortfall_active_db: float = 60.0
    # the shortfall term leaves out examples the codec cut nothing from: the reference's band edge
    # not a quarter octave above the input's (music dark at the source, which teaches restraint)
    shortfall_cut_only: bool = False
    # not in the paper: losses.anchor_loss, added to Eq. 4. Above each input's band edge, the fill
    # is held to what `anchor_model` (a checkpoint or built-in name) writes there
    anchor: float = 0.0
    anchor_model: str = "default"
    # the anchor term only on examples the codec cut nothing from (the reference's band edge not a
    # quarter octave above the input's: music dark or dull at the source), so it holds the fill
    # above the edge where the music has none and leaves bright music's band free
    anchor_uncut_only: bool = False
    # generator-only warm-up: the discriminator joins at this step (0: from the start). With
    # both GAN weights at 0 it never runs, and a step costs the generator's work alone.
    gan_from_step: int = 0
    # then the discriminator trains alone for this many steps while the generator stands still, so
    # a fresh discriminator can learn to see before its scores steer the generator (0: no such phase)
    discriminator_only_steps: int = 0
    # how the discriminator scales each example: "rms" (unit RMS per sample) or "energy" (unit l2
    # norm, as released; blind on 3-s clips, see training/discriminator.py)
    discriminator_input: str = "rms"
    # the discriminator sees each STFT bin at |X|^exponent with its phase (1: as released; 0.3
    # lifts the quiet high band towards the bass, see training/discriminator.py compress)
    discriminator_exponent: float = 1.0


@dataclass
class ScheduleConfig:
    epochs: int = 1000
    max_steps: int | None = None
    patience: int = 20  # epochs without validation improvement before stopping
    checkpoint_every: int = 500  # steps
    # also keep the generator of every this many steps as generator-stepNNNNNN.safetensors (0: none),
    # so a run's checkpoints can be compared on a validation split after it ends
    keep_every: int = 0
    log_every: int = 10
    samples: int = 2  # validation examples written as audio each epoch


@dataclass
class TrainConfig:
    model: ApolloConfig = field(default_factory=ApolloConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    init_from: str | None = None  # fine-tune from any checkpoint load_model accepts
    # a discriminator state dict (safetensors) from an earlier run: a later round continues the
    # adversarial game instead of restarting it against a trained generator
    init_discriminator_from: str | None = None
    # with init_from: the model keys the recipe sets, applied over the checkpoint's config
    # (only keys that add no weights, e.g. keep_input_band, or a larger num_blocks: Apollo.grown)
    model_overrides: tuple[str, ...] = ()
    seed: int = 0
    precision: str = "auto"  # "auto": bf16 autocast on CUDA, float32 on CPU; "fp32"; "bf16"
    activation_checkpointing: bool = False  # recompute block activations in backward (less memory)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls: type, data: dict[str, Any] | None, where: str) -> Any:
    """The dataclass from a YAML mapping, every value checked against its field's type."""
    data = dict(data or {})
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown keys in {where}: {sorted(unknown)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: typed(value, hints[key], f"{where}.{key}") for key, value in data.items()})


def typed(value: Any, kind: Any, where: str) -> Any:
    """`value` as type `kind` (int for float, list for tuple), or ValueError naming `where`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return typed(value, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: expected {_describe(kind)}, got {value!r}")
    if kind is type(None):
        if value is None:
            return None
    elif origin is tuple:
        if isinstance(value, (list, tuple)):
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(typed(v, args[0], where) for v in value)
            if len(args) == len(value):
                return tuple(typed(v, a, where) for v, a in zip(value, args))
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    elif dataclasses.is_dataclass(kind):
        if isinstance(value, kind):
            return value
        if isinstance(value, dict):
            return _build(kind, value, where)
    else:
        return value
    raise ValueError(f"{where}: expected {_describe(kind)}, got {value!r}")


def _describe(kind: Any) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "text", type(None): "null"}
    if kind in names:
        return names[kind]
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return " or ".join(_describe(k) for k in typing.get_args(kind))
    if typing.get_origin(kind) is tuple:
        return "a list"
    if dataclasses.is_dataclass(kind):
        return "a mapping of " + ", ".join(f.name for f in dataclasses.fields(kind))
    return str(kind)


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    raw = dict(raw or {})
    sections = {"model": ApolloConfig, "data": DataConfig, "optim": OptimConfig, "loss": LossConfig,
                "schedule": ScheduleConfig}
    unknown = set(raw) - set(sections) - {"init_from", "init_discriminator_from", "seed", "precision",
                                          "activation_checkpointing", "model_overrides"}
    if unknown:
        raise ValueError(f"unknown top-level keys: {sorted(unknown)}")
    built = {name: _build(cls, raw.get(name), name) for name, cls in sections.items()}
    top = {key: typed(raw[key], typing.get_type_hints(TrainConfig)[key], key)
           for key in ("init_from", "init_discriminator_from", "seed", "precision", "activation_checkpointing")
           if key in raw}
    if top.get("precision", "auto") not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision: expected auto, fp32 or bf16, got {top['precision']!r}")
    # a run's config.yaml states the recipe's model keys itself (its model section is complete), so
    # `--config RUN/config.yaml` rebuilds the same run; a recipe's are the keys its model section names
    named = raw.get("model_overrides", sorted(raw.get("model") or {}))
    fields = {f.name for f in dataclasses.fields(ApolloConfig)}
    if not isinstance(named, (list, tuple)) or not set(named) <= fields:
        raise ValueError(f"model_overrides: expected a list of model keys, got {named!r}")
    return TrainConfig(**built, **top, model_overrides=tuple(sorted(named)))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings (`--set`) as load_config's overrides, each value read as YAML
    (`32` an int, `null` None); ValueError naming the first item without a key and an `=`."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def dump_config(config: TrainConfig) -> str:
    """The YAML a run keeps as config.yaml: load_config reads it back to the same recipe."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Reads a YAML recipe, or a run's config.yaml; overrides are dotted keys, e.g. {"schedule.max_steps": 20}."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
        if parents == ["model"] and "model_overrides" in raw and leaf not in raw["model_overrides"]:
            raw["model_overrides"] = [*raw["model_overrides"], leaf]  # a key set now is the recipe's too
    return config_from_dict(raw)
