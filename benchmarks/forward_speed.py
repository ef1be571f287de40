"""Times the full-size generator against the per-band-loop reference in the same run.

    python benchmarks/forward_speed.py [--seconds 1 10] [--repeats 5] [--threads 2] [--json OUT]

RTF = seconds of compute per second of stereo 44.1 kHz audio (lower is better).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from loop_apollo import LoopApollo  # benchmarks/loop_apollo.py, beside this script

from apollo import convert
from apollo.inference import Autocast, quantize_int8
from apollo.model import Apollo
from apollo.model.config import ApolloConfig


def time_interleaved(models: dict[str, torch.nn.Module], wav: torch.Tensor,
                     repeats: dict[str, int]) -> dict[str, float]:
    """Median seconds per forward of each model, taking turns each round.

    The speed of this shared machine drifts by 10-30% over minutes; timing the models in turn
    makes every model see the same drift, so their ratio is fair.
    """
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(wav)  # warm-up
        for round_ in range(max(repeats.values())):
            for name, model in models.items():
                if round_ < repeats[name]:
                    start = time.perf_counter()
                    model(wav)
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = ApolloConfig()
    torch.manual_seed(0)
    model = Apollo(config).eval()
    loop = LoopApollo(config).eval()
    loop.load_state_dict(convert.to_released(model.state_dict(), config))
    int8 = quantize_int8(model)
    bf16 = Autocast(model)
    results = {"torch": torch.__version__, "threads": args.threads, "cpu": platform.processor() or platform.machine(),
               "runs": []}
    for seconds in args.seconds:
        wav = torch.randn(1, 2, int(seconds * config.sample_rate)) * 0.1
        with torch.inference_mode():
            exact = model(wav)
            err = (exact - loop(wav)).abs().max().item()
            snr = {name: 10 * torch.log10(exact.pow(2).sum() / (fast(wav) - exact).pow(2).sum()).item()
                   for name, fast in (("int8", int8), ("bf16", bf16))}
        median = time_interleaved({"apollo": model, "bf16": bf16, "int8": int8, "loop": loop}, wav,
                                  {"apollo": args.repeats, "bf16": args.repeats, "int8": args.repeats,
                                   "loop": max(1, args.repeats // 2)})
        ours, half, quant, ref = (median[k] / seconds for k in ("apollo", "bf16", "int8", "loop"))
        row = {"seconds": seconds, "rtf_apollo": round(ours, 3), "rtf_apollo_bf16": round(half, 3),
               "rtf_apollo_int8": round(quant, 3), "rtf_loop_reference": round(ref, 3), "speedup": round(ref / ours, 2),
               "speedup_bf16": round(ref / half, 2), "speedup_int8": round(ref / quant, 2), "max_abs_diff": err,
               "bf16_snr_db_vs_float": round(snr["bf16"], 1), "int8_snr_db_vs_float": round(snr["int8"], 1)}
        results["runs"].append(row)
        print(f"{seconds:5.1f} s stereo: apollo RTF {ours:.3f} (bf16 {half:.3f}, int8 {quant:.3f}) | loop reference "
              f"RTF {ref:.3f} | {ref / ours:.2f}x faster (bf16 {ref / half:.2f}x, int8 {ref / quant:.2f}x) | "
              f"max |diff| {err:.2e} | SNR vs float: bf16 {snr['bf16']:.1f} dB, int8 {snr['int8']:.1f} dB", flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
