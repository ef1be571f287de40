"""How far each band-sequence block has left the identity it would start as when grown.

    python benchmarks/block_norms.py default runs/ema-blocks/generator-ema-step000300.safetensors \
        --out docs/evaluations/block-norms-s62.json

Apollo.grown appends blocks whose residual branches end in zeroed output projections
(BandSequenceBlock.make_identity), so a block's contribution grows with the norms of those
projections: the band Roformer's attention and feed-forward outputs and each TCN block's second
layer. This prints them per block for each checkpoint (the told generator of a joined file), so
a run that grew its model shows whether the new blocks trained (docs/default-model.md, "v15
without its two grown blocks").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from apollo import load_model
from apollo.model import Apollo

BRANCHES = ("attention", "feed-forward", "tcn")


@torch.no_grad()
def branch_norms(model: Apollo) -> list[dict[str, float]]:
    """Per block: the Frobenius norm of each residual branch's output projection (the TCN
    blocks' as their root sum of squares), rounded to 3 places."""
    rows = []
    for block in model.blocks:
        tcn = sum(float(t.fc2.weight.norm()) ** 2 for t in block.tcn) ** 0.5
        norms = (float(block.band.attn_out.weight.norm()), float(block.band.ffn_out.weight.norm()), tcn)
        rows.append({name: round(value, 3) for name, value in zip(BRANCHES, norms)})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+", help="model files or built-in names")
    parser.add_argument("--out", help="JSON to write")
    args = parser.parse_args(argv)
    report = {}
    for checkpoint in args.checkpoints:
        report[checkpoint] = branch_norms(load_model(checkpoint))
        for i, row in enumerate(report[checkpoint]):
            print(f"{Path(checkpoint).name} block {i}: {row}")
    if args.out:
        command = "python benchmarks/block_norms.py " + " ".join(args.checkpoints) + f" --out {args.out}"
        Path(args.out).write_text(json.dumps({"command": command, "checkpoints": report}, indent=1) + "\n")


if __name__ == "__main__":
    main()
