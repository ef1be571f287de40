"""What the end of a file does to the generator's last samples, with and without whole-hop padding.

    python benchmarks/end_padding.py --checkpoint default --step 4 --out docs/end_padding.json

The bundled example (its MP3 bitrate told, at peak 1 as `Restorer` restores it) is cut to one
second less each offset 0..hop-1 (every `--step`-th), and restored as the generator now frames
it (apollo/model/framing.py: padded to whole hops) and as it did before 2026-12-05 (and as the
authors' release does: no padding beyond one window). For each length: the peak of the last hop
over the peak of the rest. Above 1 the file's own peak moves to its last samples; `--clip rescale`
then lowers the whole file by that ratio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from apollo import audio
from apollo.pretrained import load_model

ROOT = Path(__file__).resolve().parents[1]


def _unpadded(model: torch.nn.Module, wav: torch.Tensor, bitrate: torch.Tensor) -> torch.Tensor:
    """The generator's forward before whole-hop padding (inputs of at least one window)."""
    batch, channels, length = wav.shape
    spec = model.stft(wav.reshape(batch * channels, length))
    out, _ = model.restore_spectrum(spec, channels, bitrate=bitrate)
    return model.istft(out, length).reshape(batch, channels, length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--step", type=int, default=4, help="offsets short of a whole hop, every STEP-th")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    hop, rate = model.config.hop, model.config.sample_rate
    path = ROOT / "examples" / "example.mp3"
    wav, info = audio.read(path)
    assert info.sample_rate == rate, "the example is at the model's rate"
    kbps = audio.mp3_bitrate(info) or 0
    whole = torch.from_numpy(wav[:, : rate + hop] / np.abs(wav).max()).float()[None]
    bitrate = torch.tensor([kbps], dtype=torch.float32)
    rows = []
    with torch.inference_mode():
        for short in range(0, hop, args.step):
            x = whole[..., : rate - short]
            ratios = {}
            for name, y in (("padded", model(x, bitrate=bitrate)), ("unpadded", _unpadded(model, x, bitrate))):
                ratios[name] = float(y[..., -hop:].abs().max() / y[..., :-hop].abs().max())
            rows.append({"short_of_a_hop": short, **ratios})
    summary = {}
    for name in ("padded", "unpadded"):
        r = np.array([row[name] for row in rows])
        summary[name] = {"max_ratio": float(r.max()), "share_over_1": float((r > 1).mean()),
                         "share_over_2": float((r > 2).mean())}
    result = {"checkpoint": args.checkpoint, "example_kbps": kbps, "hop": hop, "step": args.step,
              "summary": summary, "rows": rows}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
