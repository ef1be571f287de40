"""Can the multi-resolution discriminator tell the reference from its MP3? D-only training.

    python benchmarks/discriminator_probe.py --cache cache/real --input-scale energy \
        --json docs/discriminator_probe_energy.json
    python benchmarks/discriminator_probe.py --cache cache/real --input-scale rms \
        --json docs/discriminator_probe_rms.json

The generator is left out (the "fake" is the MP3 input itself, i.e. an identity generator), so the
only question is whether the discriminator's scores separate the two. A blind discriminator sits
at the LSGAN optimum for a constant score, 0.5 per discriminator (3.5 for all 7), with a
real-minus-fake score gap of zero; that is where every GPU round's discriminator sat (docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from apollo.data.examples import ExampleConfig, TrainingExamples
from apollo.pretrained import load_model
from apollo.training import losses
from apollo.training.discriminator import INPUT_SCALES, MultiResolutionDiscriminator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", required=True, help="a training cache (apollo data prepare)")
    parser.add_argument("--input-scale", choices=INPUT_SCALES, default="rms")
    parser.add_argument("--exponent", type=float, default=1.0,
                        help="each STFT bin's magnitude to this power (1: as released; loss.discriminator_exponent)")
    parser.add_argument("--generator", help="score this generator's restoration of the MP3 as the fake "
                        "(default: the MP3 itself)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-4, help="the recipe's discriminator rate")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--segment", type=float, default=1.0)
    parser.add_argument("--bitrates", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    examples = TrainingExamples(args.cache, ExampleConfig(segment=args.segment, bitrates=tuple(args.bitrates),
                                                          examples_per_epoch=args.steps * args.batch),
                                split="train", seed=0)
    disc = MultiResolutionDiscriminator(input_scale=args.input_scale, exponent=args.exponent)
    generator = load_model(args.generator).eval() if args.generator else None
    opt = torch.optim.AdamW(disc.parameters(), args.lr, betas=(0.5, 0.99), weight_decay=0.01)
    rows, began = [], time.monotonic()
    for step in range(args.steps):
        items = [examples[step * args.batch + i] for i in range(args.batch)]
        mp3 = torch.stack([item[0] for item in items])
        if generator is not None:
            with torch.no_grad():
                mp3 = generator(mp3)
        reference = torch.stack([item[1] for item in items])
        real, _ = disc(reference)
        fake, _ = disc(mp3)
        loss = losses.discriminator_loss(real, fake)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), 5.0)
        opt.step()
        if step % 10 == 0 or step == args.steps - 1:
            gap = [round((r.mean() - f.mean()).item(), 4) for r, f in zip(real, fake)]
            rows.append({"step": step, "loss_d": round(loss.item(), 4), "gap": gap})
            print(f"step {step:4d}  loss_d {loss.item():.3f}  real-fake gap per window "
                  + " ".join(f"{g:+.3f}" for g in gap) + f"  ({time.monotonic() - began:.0f} s)", flush=True)
    if args.json:
        summary = {"command": "python benchmarks/discriminator_probe.py " + " ".join(
                       f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                       for k, v in vars(args).items() if k != "json" and v is not None),
                   "input_scale": args.input_scale, "exponent": args.exponent, "generator": args.generator,
                   "rows": rows,
                   "final_mean_gap": round(sum(rows[-1]["gap"]) / len(rows[-1]["gap"]), 4)}
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=1)


if __name__ == "__main__":
    main()
