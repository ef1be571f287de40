"""Whether a joined checkpoint (model.unknown) restores as its two parts do, to the bit.

The bundled example is coded at each bitrate and restored chunked (4-s segments) by the joined file
told that bitrate and untold; the told output must equal the told part's and the untold output the
unknown part's (docs/default-model.md, "v13's weights for inputs of unknown bitrate", step 0):

    python benchmarks/joined_identity.py JOINED TOLD UNKNOWN [--bitrates 24,32,128] [--out F.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from dark_identity import example_music

from apollo import Restorer
from apollo.degrade import mp3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("joined")
    parser.add_argument("told", help="the checkpoint the joined file's told output must equal")
    parser.add_argument("unknown", help="the checkpoint (or built-in name) its untold output must equal")
    parser.add_argument("--bitrates", default="24,32,128")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    wav = example_music()
    models = {key: Restorer(getattr(args, key), segment=4.0, device="cpu") for key in ("joined", "told", "unknown")}
    rows = []
    for kbps in (int(k) for k in args.bitrates.split(",")):
        coded = mp3(wav, 44100, kbps)
        for bitrate, part in ((kbps, "told"), (None, "unknown")):
            joined, _ = models["joined"].restore(coded, 44100, bitrate=bitrate)
            own, _ = models[part].restore(coded, 44100, bitrate=bitrate)
            same = bool(np.array_equal(joined, own))
            rows.append({"kbps": kbps, "told": bitrate is not None, "equals": part, "identical": same,
                         "max_abs_diff": float(np.abs(joined - own).max())})
            print(f"{kbps} kbps {'told' if bitrate else 'untold'}: identical to the {part} part: {same}")
    holds = all(row["identical"] for row in rows)
    print("holds" if holds else "FAILS")
    if args.out:
        args.out.write_text(json.dumps({"joined": args.joined, "told": args.told, "unknown": args.unknown,
                                        "rows": rows, "holds": holds}, indent=1) + "\n")
    return 0 if holds else 1


if __name__ == "__main__":
    raise SystemExit(main())
