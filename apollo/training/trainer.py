"""The GAN training loop: one code path for CPU, one GPU, and torchrun/DDP (NCCL or gloo)."""

from __future__ import annotations

import csv
import dataclasses
import math
import multiprocessing
import os
import random
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, default_collate

from ..metrics import cutoff_hz
from ..model import Apollo
from ..model.config import ApolloConfig
from ..pretrained import load_model
from ..states import atomic_write, save_checkpoint
from . import losses
from .config import TrainConfig
from .data import ResumableSampler, SyntheticExamples
from .discriminator import MultiResolutionDiscriminator

STATE = "last.pt"
BEST = "best.pt"
METRICS = ("step", "epoch", "loss_g", "loss_d", "reconstruction", "feature_matching", "adversarial",
           "lr_g", "lr_d", "steps_per_s", "valid_reconstruction")

# Data workers start from a fresh interpreter, not a fork of the trainer. A forked worker shares the
# trainer's heap copy-on-write, and the trainer reuses the activation memory it freed, so every page
# it writes after the fork is copied: a 5-block stage 1 (13.5 GB) doubled at its first epoch turn
# and was killed on a 24 GB machine (docs/default-model.md, "A grown stage 1 ...").
WORKER_START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class BandEdges(NamedTuple):
    """Each example's band edge as a fraction of Nyquist, (batch,), or None where no term needs it."""

    kept: torch.Tensor | None  # the coded input's: the band the codec kept
    reference: torch.Tensor | None  # the reference's: below the input's for music dark at the source


def band_edges(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Each example's band edge (metrics.cutoff_hz, the one cutoff rule) as a fraction of Nyquist: (batch,)."""
    return torch.tensor([cutoff_hz(x, sample_rate) / (sample_rate / 2) for x in audio.detach().float().cpu().numpy()])


def find_edges(degraded: torch.Tensor, target: torch.Tensor, sample_rate: int, kept: bool,
               reference: bool) -> BandEdges:
    """The band edges of the inputs (`kept`) and of the references (`reference`) where asked for."""
    return BandEdges(band_edges(degraded, sample_rate) if kept else None,
                     band_edges(target, sample_rate) if reference else None)


@dataclasses.dataclass(frozen=True)
class CollateWithEdges:
    """Collates a batch and adds the band edges the losses need (BandEdges), so that the data workers
    run the cutoff search in parallel, not the training step: for a batch of 32 (inputs and
    references) 0.38 s on one core, 40-60% of a GPU step of the next round's recipe (docs/gpu.md)."""

    sample_rate: int
    kept: bool
    reference: bool

    def __call__(self, items: list) -> tuple:
        degraded, target, bitrate, always_told = default_collate(items)
        return degraded, target, bitrate, always_told, find_edges(degraded, target, self.sample_rate, self.kept,
                                                               self.reference)


def _numpy_state() -> dict[str, Any]:
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {"key": [int(k) for k in key], "pos": int(pos), "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached)}


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def _with_overrides(generator: Apollo, config: TrainConfig) -> Apollo:
    """The checkpoint's generator, rebuilt with the recipe's model keys if they change its config.

    A larger num_blocks grows it (Apollo.grown: the new blocks start as identities); bitrate_classes
    on a model without them adds the embedding at zero. A checkpoint with an unknown-bitrate generator
    (model.unknown, inference only) starts training from its told generator alone."""
    generator = generator.without_unknown()
    changed = {k: getattr(config.model, k) for k in config.model_overrides}
    if changed.get("num_blocks", generator.config.num_blocks) > generator.config.num_blocks:
        generator = generator.grown(changed["num_blocks"])
    model_config = dataclasses.replace(generator.config, **changed)
    if model_config == generator.config:
        return generator
    rebuilt = Apollo(model_config)
    # a bitrate embedding the checkpoint lacks starts at zero: the model computes what it did
    added = {"bitrate_embedding"} if model_config.bitrate_classes and not generator.config.bitrate_classes else set()
    try:
        missing, unexpected = rebuilt.load_state_dict(generator.state_dict(), strict=False)
        if set(missing) - added or unexpected:
            raise RuntimeError(f"missing {missing}, unexpected {unexpected}")
    except RuntimeError as error:
        raise ValueError(f"init_from: the recipe's model keys {sorted(changed)} change the weights' "
                         f"shapes; only keys that add no weights or a bitrate embedding, or a larger num_blocks, "
                         "can be changed when fine-tuning") from error
    if model_config.causal and not generator.config.causal:
        rebuilt.drop_future_taps()  # the nearest causal model: the same taps on the same past frames
    return rebuilt


def _scaled_block_parameters(generator: Apollo, first: int | None, scale: float) -> list[torch.nn.Parameter]:
    """The parameters of the band-sequence blocks from `first` on (optim.lr_blocks_from), whose
    steps are scaled by `scale`; none where `first` is None or the scale is 1."""
    if first is None:
        return []
    if not 0 <= first < generator.config.num_blocks:
        raise ValueError(f"optim.lr_blocks_from: expected a block index under {generator.config.num_blocks}, "
                         f"got {first}")
    if not scale > 0:
        raise ValueError(f"optim.lr_blocks_scale: expected a positive number, got {scale}")
    if scale == 1.0:
        return []
    return [p for block in generator.blocks[first:] for p in block.parameters()]


class Trainer:
    """Trains an Apollo generator against the multi-resolution STFT discriminator.

    Everything a run needs to continue exactly is in run_dir/last.pt: weights, optimizers,
    schedulers, RNG states, the position in the epoch's example order and early-stop state.
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> None:
        self.cfg = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            self.device = torch.device("cuda", local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        use_bf16 = config.precision == "bf16" or (config.precision == "auto" and self.device.type == "cuda")
        self.autocast = (lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

        torch.manual_seed(config.seed)
        lr_scale = 1.0
        if config.init_from:
            generator = _with_overrides(load_model(config.init_from), config).train()
            self.model_config = generator.config
            lr_scale = config.optim.finetune_lr_scale
        else:
            if config.model.unknown is not None:
                raise ValueError("model.unknown joins a second generator at export for inference; a recipe trains one "
                                 "(python -m apollo.training.export --unknown-from joins them)")
            self.model_config = config.model
            generator = Apollo(config.model)
        generator.activation_checkpointing = config.activation_checkpointing
        discriminator = MultiResolutionDiscriminator(audio_channels=2, input_scale=config.loss.discriminator_input,
                                                     exponent=config.loss.discriminator_exponent)
        if config.init_discriminator_from:
            from safetensors.torch import load_file

            discriminator.load_state_dict(load_file(config.init_discriminator_from))
        generator, discriminator = generator.to(self.device), discriminator.to(self.device)
        opt = config.optim
        if opt.ema_decay is not None and not 0.0 < opt.ema_decay < 1.0:
            raise ValueError(f"optim.ema_decay: expected a number between 0 and 1, got {opt.ema_decay}")
        # the average starts at the starting weights: a fine-tune's average leans on where it began
        self.ema = None if opt.ema_decay is None else {
            k: v.detach().clone() for k, v in generator.state_dict().items()}
        embedding = [p for n, p in generator.named_parameters() if n == "bitrate_embedding"]
        groups = [{"params": [p for n, p in generator.named_parameters() if n != "bitrate_embedding"]}]
        if embedding:  # no weight decay: it would pull the bitrates' rows towards "no bitrate"
            groups.append({"params": embedding, "weight_decay": 0.0,
                           "lr": opt.lr_g * lr_scale if opt.lr_bitrate is None else opt.lr_bitrate})
        self.scaled_blocks = _scaled_block_parameters(generator, opt.lr_blocks_from, opt.lr_blocks_scale)
        self.opt_g = torch.optim.AdamW(groups, lr=opt.lr_g * lr_scale, betas=opt.betas_g,
                                       weight_decay=opt.weight_decay)
        self.opt_d = torch.optim.AdamW(discriminator.parameters(), lr=opt.lr_d * lr_scale, betas=opt.betas_d,
                                       weight_decay=opt.weight_decay)
        self.sched_g = torch.optim.lr_scheduler.StepLR(self.opt_g, opt.lr_step_epochs, opt.lr_gamma)
        self.sched_d = torch.optim.lr_scheduler.StepLR(self.opt_d, opt.lr_step_epochs, opt.lr_gamma)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            generator = DistributedDataParallel(generator, device_ids=ids)
            discriminator = DistributedDataParallel(discriminator, device_ids=ids)
        self.generator, self.discriminator = generator, discriminator
        self.anchor_model = None
        if config.loss.anchor:
            self.anchor_model = load_model(config.loss.anchor_model, self.device).requires_grad_(False)
            if self.anchor_model.config.sample_rate != self.model_config.sample_rate:
                raise ValueError(f"loss.anchor_model {config.loss.anchor_model} is at "
                                 f"{self.anchor_model.config.sample_rate} Hz, the model at "
                                 f"{self.model_config.sample_rate} Hz")
        if config.loss.band_envelope_untold_only and not self.model_config.bitrate_classes:
            raise ValueError("loss.band_envelope_untold_only needs a model told bitrates (model.bitrate_classes)")

        self.train_set, self.valid_set = self._datasets()
        self.sampler = ResumableSampler(len(self.train_set), config.seed, self.rank, self.world)
        self.steps_per_epoch = len(self.sampler) // opt.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError("fewer examples per epoch than processes x batch size")
        self.epoch, self.step_in_epoch, self.step = 0, 0, 0
        self.best, self.bad_epochs, self.stopped = math.inf, 0, False
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume:
            self._load(self.run_dir / STATE)

    # -- data ---------------------------------------------------------------------------------

    def _datasets(self) -> tuple[Dataset, Dataset]:
        data, rate = self.cfg.data, self.model_config.sample_rate
        if data.source == "synthetic":
            train = SyntheticExamples(data.examples_per_epoch, data.segment, rate, data.bitrates, self.cfg.seed,
                                      data.level_neutral)
            valid = SyntheticExamples(data.valid_examples, data.segment, rate, data.bitrates, self.cfg.seed + 10_000,
                                      data.level_neutral)
            return train, valid
        if data.source != "cache" or not data.cache:
            raise ValueError("data.source must be 'synthetic', or 'cache' with data.cache set")
        from ..data.examples import TrainingExamples

        examples = data.examples()
        train = TrainingExamples(data.cache, examples, split="train", seed=self.cfg.seed)
        valid = TrainingExamples(data.cache, examples, split="valid", seed=self.cfg.seed + 10_000,
                                 length=data.valid_examples)
        if train.cache.sample_rate != rate:
            raise ValueError(f"cache is at {train.cache.sample_rate} Hz but the model at {rate} Hz")
        return train, valid

    def _loader(self) -> DataLoader:
        self.sampler.set_epoch(self.epoch, self.step_in_epoch * self.cfg.optim.batch_size)
        self.train_set.set_epoch(self.epoch)
        workers = self.cfg.data.workers
        kept, reference = self.edges_needed()
        collate = CollateWithEdges(self.model_config.sample_rate, kept, reference) if kept or reference else None
        return DataLoader(self.train_set, batch_size=self.cfg.optim.batch_size, sampler=self.sampler,
                          num_workers=workers, pin_memory=self.device.type == "cuda", drop_last=True,
                          persistent_workers=False, prefetch_factor=2 if workers else None,
                          multiprocessing_context=WORKER_START if workers else None, collate_fn=collate)

    # -- one step -----------------------------------------------------------------------------

    def uses_gan(self) -> bool:
        """Whether this step trains against the discriminator (after the warm-up, if any)."""
        loss = self.cfg.loss
        return (loss.adversarial > 0 or loss.feature_matching > 0) and self.step >= loss.gan_from_step

    def discriminator_only(self) -> bool:
        """Whether this step trains the discriminator alone (loss.discriminator_only_steps)."""
        loss = self.cfg.loss
        return self.uses_gan() and self.step < loss.gan_from_step + loss.discriminator_only_steps

    def reconstruction(self, estimate: torch.Tensor, target: torch.Tensor, degraded: torch.Tensor,
                       told: torch.Tensor | None = None, edges: BandEdges | None = None) -> torch.Tensor:
        """Eq. 4, plus the log-magnitude, band-envelope, NSIM and shortfall terms where the recipe weighs
        them (each window's spectra computed once for all of them); `degraded` is the model's input,
        whose band edge can bound the shortfall term (shortfall_edges) and the anchor term. `edges`
        are those of `degraded` and `target` where the data workers found them (else found here).
        `told` is what the generator was told of each bitrate: an anchor told bitrates is told the
        same (one that is not ignores it), so it is held to the row the generator restores with."""
        loss = self.cfg.loss
        estimate, target = losses.Magnitudes(estimate), losses.Magnitudes(target)
        rec = losses.reconstruction_loss(estimate, target)
        if loss.log_magnitude:
            rec = rec + loss.log_magnitude * losses.log_magnitude_loss(estimate, target)
        if loss.band_envelope:
            rec = rec + loss.band_envelope * losses.band_envelope_loss(estimate, target,
                                                                       weight=self.envelope_weight(told))
        if loss.nsim:
            rec = rec + loss.nsim * losses.nsim_loss(estimate.wav, target.wav, self.model_config.sample_rate)
        kept, reference = edges if edges is not None else self.find_edges(degraded, target.wav)
        if loss.shortfall:
            edge = self.shortfall_edges(kept, reference)
            rec = rec + loss.shortfall * losses.shortfall_loss(estimate, target, active_db=loss.shortfall_active_db,
                                                               edge=edge)
        if loss.anchor:
            with torch.no_grad(), self.autocast():
                held = self.anchor_model(degraded.to(self.device), None, told).float()
            rec = rec + loss.anchor * losses.anchor_loss(estimate, held, self.anchor_edges(kept, reference))
        return rec

    def envelope_weight(self, told: torch.Tensor | None) -> torch.Tensor | None:
        """Each example's share of the band-envelope term: with loss.band_envelope_untold_only, 1 where
        the generator was not told the bitrate (`told` 0) and 0 where it was; else None (all alike)."""
        if not self.cfg.loss.band_envelope_untold_only or told is None:
            return None
        return (told == 0).float()

    def edges_needed(self) -> tuple[bool, bool]:
        """Whether the weighed terms look at the inputs' band edges, and at the references'."""
        loss = self.cfg.loss
        bounded = loss.shortfall and (loss.shortfall_kept_band or loss.shortfall_cut_only)
        cut_only = (loss.shortfall and loss.shortfall_cut_only) or (loss.anchor and loss.anchor_uncut_only)
        return bool(loss.anchor or bounded), bool(cut_only)

    def find_edges(self, degraded: torch.Tensor, target: torch.Tensor) -> BandEdges:
        """The band edges of inputs and references that the weighed terms need (edges_needed)."""
        return find_edges(degraded, target, self.model_config.sample_rate, *self.edges_needed())

    @staticmethod
    def uncut(kept: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """Per example, True where the codec cut nothing: the reference's band edge is not a quarter
        octave above the input's band edge `kept` (music dark or dull at the source)."""
        return reference < kept * 2**0.25

    def anchor_edges(self, kept: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """Where the anchor term looks, per example (losses.anchor_loss's `edge`): above the input's band
        edge `kept`; with loss.anchor_uncut_only, nowhere (an edge above Nyquist) in an example the codec cut
        (`reference`: the references' band edges)."""
        if not self.cfg.loss.anchor_uncut_only:
            return kept
        return torch.where(self.uncut(kept, reference), kept, torch.full_like(kept, 2.0))

    def shortfall_edges(self, kept: torch.Tensor | None, reference: torch.Tensor | None) -> torch.Tensor | None:
        """Where the shortfall term looks, per example (losses.shortfall_loss's `edge`), from the inputs'
        band edges `kept`: under them with loss.shortfall_kept_band (else the whole band); with
        loss.shortfall_cut_only, nowhere in an example whose reference ends within a quarter octave of its
        input's edge."""
        loss = self.cfg.loss
        if not (loss.shortfall_kept_band or loss.shortfall_cut_only):
            return None
        edges = kept if loss.shortfall_kept_band else torch.ones_like(kept)
        if loss.shortfall_cut_only:
            edges = torch.where(self.uncut(kept, reference), torch.full_like(edges, -1.0), edges)
        return edges

    def band_edges(self, audio: torch.Tensor) -> torch.Tensor:
        """Each example's band edge at the model's rate (band_edges)."""
        return band_edges(audio, self.model_config.sample_rate)

    def told_bitrates(self, bitrate: torch.Tensor, always_told: torch.Tensor | None = None) -> torch.Tensor | None:
        """What the generator is told of each example's bitrate (kbps): None for a model not told
        bitrates; else the bitrates with data.bitrate_withheld of them 0 (unknown), drawn from
        (seed, step) so that a resumed run withholds the same. The examples flagged `always_told`
        (dark sources that are not withheld: DarkSource.withheld, data.withhold_dark_sources) are
        told theirs whatever the draw."""
        if not self.model_config.bitrate_classes:
            return None
        draw = torch.rand(len(bitrate), generator=torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + self.step))
        withheld = draw < self.cfg.data.bitrate_withheld
        if always_told is not None:
            withheld &= ~torch.as_tensor(always_told, dtype=torch.bool).cpu()
        return torch.where(withheld, 0, bitrate.long().cpu()).to(self.device)

    def train_step(self, degraded: torch.Tensor, target: torch.Tensor, bitrate: torch.Tensor | None = None,
                   always_told: torch.Tensor | None = None, edges: BandEdges | None = None) -> dict[str, float]:
        """One step of both players; `edges` are the batch's band edges where the loader found them."""
        cfg = self.cfg
        degraded = degraded.to(self.device, non_blocking=True)
        target = target.to(self.device, non_blocking=True)
        told = None if bitrate is None else self.told_bitrates(torch.as_tensor(bitrate), always_told)
        still = self.discriminator_only()
        with torch.set_grad_enabled(not still):
            with self.autocast():
                estimate = self.generator(degraded, None, told).float()
            # the losses in float32, as validate() has them: in bf16, NSIM's variances of dB levels
            # (E[x^2] - E[x]^2, x up to ~100) kept no digit (0.11 came out 1.59)
            rec = self.reconstruction(estimate, target, degraded, told, edges)
        zero = torch.zeros((), device=self.device)
        loss_d, fm, adv = zero, zero, zero
        if self.uses_gan():
            with self.autocast():
                real_scores, _ = self.discriminator(target)
                fake_scores, _ = self.discriminator(estimate.detach())
            loss_d = losses.discriminator_loss([s.float() for s in real_scores], [s.float() for s in fake_scores])
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), cfg.optim.grad_clip)
            self.opt_d.step()
            if still:  # the generator stands still: nothing more to compute
                return {"loss_g": (cfg.loss.reconstruction * rec).item(), "loss_d": loss_d.item(),
                        "reconstruction": rec.item(), "feature_matching": 0.0, "adversarial": 0.0}
            with self.autocast():
                fake_scores, fake_feats = self.discriminator(estimate)
                with torch.no_grad():
                    _, real_feats = self.discriminator(target)
            fm = losses.feature_matching_loss([[f.float() for f in fs] for fs in real_feats],
                                              [[f.float() for f in fs] for fs in fake_feats])
            adv = losses.generator_adversarial_loss([s.float() for s in fake_scores])
        loss_g = cfg.loss.reconstruction * rec + cfg.loss.feature_matching * fm + cfg.loss.adversarial * adv
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        torch.nn.utils.clip_grad_norm_(self.generator.parameters(), cfg.optim.grad_clip)
        before = [p.detach().clone() for p in self.scaled_blocks]
        self.opt_g.step()
        with torch.no_grad():  # their step times lr_blocks_scale: AdamW's step at that multiple of the rate
            for weight, old in zip(self.scaled_blocks, before):
                weight.add_(weight - old, alpha=self.cfg.optim.lr_blocks_scale - 1.0)
        self._update_ema()
        return {"loss_g": loss_g.item(), "loss_d": loss_d.item(), "reconstruction": rec.item(),
                "feature_matching": fm.item(), "adversarial": adv.item()}

    @torch.no_grad()
    def _update_ema(self) -> None:
        """Moves the generator's weight average (optim.ema_decay) one step towards the weights."""
        if self.ema is None:
            return
        for key, value in _unwrap(self.generator).state_dict().items():
            if value.is_floating_point():
                self.ema[key].lerp_(value, 1.0 - self.cfg.optim.ema_decay)
            else:
                self.ema[key].copy_(value)

    @torch.no_grad()
    def validate(self) -> float:
        """Mean reconstruction loss on the fixed validation examples (rank 0's view)."""
        generator = _unwrap(self.generator)
        generator.eval()
        total = []
        for i in range(len(self.valid_set)):
            degraded, target, bitrate, _ = self.valid_set[i]
            told = torch.tensor([bitrate])
            with self.autocast():
                est = generator(degraded[None].to(self.device), None, told).float()
            total.append(self.reconstruction(est, target[None].to(self.device), degraded[None], told).item())
            if i < self.cfg.schedule.samples and self.rank == 0:
                self._write_sample(i, degraded, target, est[0].cpu())
        generator.train()
        return float(np.mean(total))

    def _write_sample(self, index: int, degraded: torch.Tensor, target: torch.Tensor, estimate: torch.Tensor) -> None:
        import soundfile as sf

        folder = self.run_dir / "samples"
        folder.mkdir(exist_ok=True)
        rate = self.model_config.sample_rate
        for name, audio in (("degraded", degraded), ("target", target)):
            path = folder / f"valid{index}-{name}.flac"
            if not path.exists():
                sf.write(str(path), audio.numpy().T.clip(-1, 1), rate, subtype="PCM_24")
        sf.write(str(folder / f"valid{index}-epoch{self.epoch:04d}.flac"), estimate.numpy().T.clip(-1, 1), rate,
                 subtype="PCM_24")

    # -- the loop -----------------------------------------------------------------------------

    def fit(self, time_limit: float | None = None) -> dict[str, Any]:
        """Trains until max_steps, the epoch count, early stopping or `time_limit` seconds of this
        call (checked after every step: the run then saves and returns, resumable as always)."""
        from tqdm import tqdm

        sched = self.cfg.schedule
        writer = self._tensorboard()
        log = self.run_dir / "metrics.csv"
        if self.rank == 0 and not log.exists():
            with open(log, "w", newline="") as handle:
                csv.writer(handle).writerow(METRICS)
        total_steps = sched.max_steps or sched.epochs * self.steps_per_epoch
        bar = tqdm(total=total_steps, initial=self.step, unit="step", desc="train",
                   disable=not self.progress or self.rank != 0, dynamic_ncols=True)
        last_time, last_step = time.perf_counter(), self.step
        deadline = None if time_limit is None else time.monotonic() + time_limit
        out_of_time = False
        while self.epoch < sched.epochs and not self.stopped and not self._done() and not out_of_time:
            for degraded, target, bitrate, always_told, *edges in self._loader():
                stats = self.train_step(degraded, target, bitrate, always_told, *edges)
                self.step += 1
                self.step_in_epoch += 1
                bar.update()
                bar.set_postfix(g=f"{stats['loss_g']:.3f}", d=f"{stats['loss_d']:.3f}",
                                rec=f"{stats['reconstruction']:.3f}")
                if self.step % sched.log_every == 0 and self.rank == 0:
                    now = time.perf_counter()
                    rate = (self.step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, self.step
                    self._log(log, writer, {**stats, "steps_per_s": rate})
                if self.step % sched.checkpoint_every == 0:
                    self._save(self.run_dir / STATE)
                if sched.keep_every and self.step % sched.keep_every == 0:
                    self._export_generator(f"step{self.step:06d}")
                    self._export_generator(f"ema-step{self.step:06d}", ema=True)
                out_of_time = deadline is not None and time.monotonic() >= deadline
                if self._done() or out_of_time:
                    break
            else:
                self._end_epoch(log, writer)
        self._save(self.run_dir / STATE)
        bar.close()
        if writer is not None:
            writer.close()
        return {"step": self.step, "epoch": self.epoch, "best_valid": self.best, "stopped_early": self.stopped,
                "out_of_time": out_of_time}

    def _done(self) -> bool:
        return self.cfg.schedule.max_steps is not None and self.step >= self.cfg.schedule.max_steps

    def _end_epoch(self, log: Path, writer: Any) -> None:
        valid = self.validate()
        with warnings.catch_warnings():  # during a warm-up one of the optimisers has not stepped yet
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            self.sched_g.step()
            self.sched_d.step()
        self.epoch += 1
        self.step_in_epoch = 0
        if valid < self.best:
            self.best, self.bad_epochs = valid, 0
            self._save(self.run_dir / BEST, best=True)
        else:
            self.bad_epochs += 1
            self.stopped = self.bad_epochs >= self.cfg.schedule.patience
        if self.rank == 0:
            self._log(log, writer, {"valid_reconstruction": valid})
        self._save(self.run_dir / STATE)

    def _log(self, path: Path, writer: Any, values: dict[str, float]) -> None:
        row = {"step": self.step, "epoch": self.epoch, "lr_g": self.opt_g.param_groups[0]["lr"],
               "lr_d": self.opt_d.param_groups[0]["lr"], **values}
        with open(path, "a", newline="") as handle:
            csv.writer(handle).writerow([row.get(k, "") for k in METRICS])
        if writer is not None:
            for key, value in values.items():
                writer.add_scalar(key, value, self.step)

    def _tensorboard(self) -> Any:
        if self.rank != 0:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            return None  # optional: pip install "apollo-restore[train]"
        return SummaryWriter(str(self.run_dir / "tensorboard"))

    # -- checkpoints --------------------------------------------------------------------------

    def _save(self, path: Path, best: bool = False) -> None:
        if self.rank != 0:
            return
        generator = _unwrap(self.generator)
        state = {
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "step": self.step,
            "best": self.best, "bad_epochs": self.bad_epochs, "stopped": self.stopped,
            "model_config": self.model_config.to_dict(),
            "generator": generator.state_dict(), "discriminator": _unwrap(self.discriminator).state_dict(),
            "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
            "rng_torch": torch.get_rng_state(), "rng_python": list(random.getstate()[1]),
            "rng_numpy": _numpy_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }
        if self.ema is not None:
            state["ema"] = self.ema
        atomic_write(path, lambda tmp: torch.save(state, tmp))
        self._export_generator("best" if best else "last")
        if not best:
            self._export_generator("ema-last", ema=True)

    def _export_generator(self, name: str, ema: bool = False) -> None:
        """The generator as a checkpoint load_model reads: run_dir/generator-{name}.safetensors; with
        `ema`, its weight average (nothing when the run keeps none)."""
        if self.rank != 0 or (ema and self.ema is None):
            return
        weights = self.ema if ema else _unwrap(self.generator).state_dict()
        save_checkpoint(self.run_dir / f"generator-{name}.safetensors", weights, self.model_config,
                        metadata={"step": str(self.step), "epoch": str(self.epoch),
                                  **({"ema_decay": str(self.cfg.optim.ema_decay)} if ema else {})})

    def _load(self, path: Path) -> None:
        if not path.exists():
            raise FileNotFoundError(f"{path}: nothing to resume (no checkpoint in the run folder)")
        state = torch.load(path, map_location=self.device, weights_only=True)
        if ApolloConfig.from_dict(state["model_config"]) != self.model_config:
            raise ValueError(f"{path} was trained with another model config")
        _unwrap(self.generator).load_state_dict(state["generator"])
        _unwrap(self.discriminator).load_state_dict(state["discriminator"])
        if self.ema is not None:  # a run that kept no average starts one at the weights it resumes
            source = state.get("ema", state["generator"])
            self.ema = {k: v.detach().clone().to(self.device) for k, v in source.items()}
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        torch.set_rng_state(state["rng_torch"].cpu())
        if "rng_python" in state:  # the Mersenne Twister's 624 words and position
            random.setstate((3, tuple(int(v) for v in state["rng_python"]), None))
        if "rng_numpy" in state:
            n = state["rng_numpy"]
            np.random.set_state(("MT19937", np.array(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"],
                                 n["cached_gaussian"]))
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])
        self.epoch, self.step_in_epoch, self.step = state["epoch"], state["step_in_epoch"], state["step"]
        self.best, self.bad_epochs, self.stopped = state["best"], state["bad_epochs"], state["stopped"]
        if self.rank == 0 and self.progress:
            print(f"resumed from {path} at step {self.step} (epoch {self.epoch}, batch {self.step_in_epoch})")
