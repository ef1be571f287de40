"""`apollo demo`: a static page like the paper's project page, built from a dataset's excerpts.

For each chosen excerpt and bitrate: players for the reference, the MP3 (real LAME damage, as
`apollo evaluate` makes it) and every model's restoration, each with its spectrogram on one
colour scale and its scores (ViSQOL, SI-SNR, LSD against the reference). The folder is
self-contained (no scripts, fonts or files from elsewhere): open index.html or serve it. Audio
is Ogg Vorbis, so a page of a few excerpts stays a few MB.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import degrade, metrics
from .audio import resample
from .evaluate import checkpoint_sha256, make_excerpts, system_names
from .spectrogram import DB_RANGE, spectrogram_png

RATE = 44100


def write_demo(data: str | Path, checkpoints: list[str], out: str | Path, bitrates: tuple[int, ...] = (24, 48, 128),
               excerpts: int = 2, seconds: float = 5.0, split: str = "test", with_visqol: bool = True,
               command: str = "", on_step: Callable[[str], None] | None = None) -> dict:
    """Writes out/index.html, out/demo.json and the audio and pictures; returns demo.json's data."""
    import soundfile as sf

    from .api import Restorer

    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty: choose a new folder for the demo")
    pool = make_excerpts(data, seconds=seconds, per_track=1, split=split)
    if not pool:
        raise ValueError(f"{data}: no {split} excerpts with audio")
    picked = [pool[i] for i in np.linspace(0, len(pool) - 1, min(excerpts, len(pool))).round().astype(int)]
    names = system_names(checkpoints)
    restorers = {names[c]: Restorer(c, device="cpu", segment=0) for c in checkpoints}
    (out / "media").mkdir(parents=True)

    def save(wav: np.ndarray, stem: str) -> dict[str, str]:
        sf.write(str(out / "media" / f"{stem}.ogg"), np.clip(wav, -1, 1).T, RATE, format="OGG", subtype="VORBIS")
        spectrogram_png(wav, out / "media" / f"{stem}.png")
        return {"audio": f"media/{stem}.ogg", "picture": f"media/{stem}.png"}

    result = {"command": command, "split": split, "seconds": seconds, "bitrates": list(bitrates),
              "systems": {name: {"checkpoint": c, "sha256": checkpoint_sha256(c)} for c, name in names.items()},
              "excerpts": []}
    for index, excerpt in enumerate(picked):
        entry = {"name": excerpt.name, "reference": save(excerpt.audio, f"e{index}-reference"), "bitrates": {}}
        for bitrate in bitrates:
            if on_step:
                on_step(f"{excerpt.name} at {bitrate} kbps")
            coded = degrade.mp3(excerpt.audio, RATE, bitrate)
            systems = {"mp3": coded}
            for name, restorer in restorers.items():
                restored, rate = restorer.restore(coded, RATE, bitrate=bitrate)
                systems[name] = resample(restored, rate, RATE)
            cells = {}
            for position, (name, wav) in enumerate(systems.items()):
                aligned, _ = metrics.align(excerpt.audio, wav, max_lag=2048)
                scores = metrics.score(excerpt.audio, aligned, RATE, degraded=coded, with_visqol=with_visqol)
                cells[name] = {**save(wav, f"e{index}-{bitrate}k-{position}"),
                               **{k: round(float(scores[k]), 3) for k in ("visqol", "si_snr", "lsd") if k in scores}}
            entry["bitrates"][str(bitrate)] = cells
        result["excerpts"].append(entry)
    (out / "demo.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "index.html").write_text(_page(result))
    return result


def _page(result: dict) -> str:
    systems = ["mp3", *result["systems"]]
    label = {"mp3": "MP3 input", **{s: f"restored: {s}" for s in result["systems"]}}

    def media(cell: dict, caption: str) -> str:
        scores = " · ".join(f"{name} {cell[key]:.2f}{unit}" for key, name, unit in
                            (("visqol", "ViSQOL", ""), ("si_snr", "SI-SNR", " dB"), ("lsd", "LSD", " dB"))
                            if key in cell)
        return (f'<figure><img src="{cell["picture"]}" alt="spectrogram: {html.escape(caption)}" loading="lazy">'
                f'<audio controls preload="none" src="{cell["audio"]}"></audio>'
                f"<figcaption>{html.escape(caption)}<br>{scores}</figcaption></figure>")

    parts = []
    for entry in result["excerpts"]:
        rows = "".join(f"<tr><th>{b} kbps</th>" + "".join(f"<td>{media(cells[s], label[s])}</td>" for s in systems)
                       + "</tr>" for b, cells in entry["bitrates"].items())
        parts.append(f"<section><h2>{html.escape(entry['name'])}</h2>"
                     f"<div class=ref>{media(entry['reference'], 'reference (before MP3)')}</div>"
                     f"<table><tr><th></th>{''.join(f'<th>{label[s]}</th>' for s in systems)}</tr>{rows}</table>"
                     "</section>")
    command = f"<p>Built with <code>{html.escape(result['command'])}</code>.</p>" if result["command"] else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>apollo: restoration examples</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ margin: 0 auto; max-width: 1200px; padding: 20px; background: #111418; color: #e6e9ee;
       font: 14px/1.45 system-ui, sans-serif; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; margin-top: 28px; word-break: break-all; }}
table {{ border-collapse: collapse; width: 100%; }} th {{ color: #9aa4b2; font-weight: normal; text-align: left; }}
td, th {{ padding: 6px; vertical-align: top; }} figure {{ margin: 0; }}
img {{ width: 100%; height: 140px; image-rendering: pixelated; border-radius: 4px; display: block; }}
audio {{ width: 100%; height: 32px; }} figcaption {{ color: #9aa4b2; font-size: 12px; }}
.ref {{ max-width: 380px; }} code {{ color: #f5a623; }}
</style></head><body>
<h1>apollo: restoration examples</h1>
<p>{len(result['excerpts'])} excerpts of {result['seconds']:g} s from the {html.escape(result['split'])} split,
each made into an MP3 at {', '.join(map(str, result['bitrates']))} kbps and restored. Spectrograms: 0-22 kHz,
{DB_RANGE[0]:g} to {DB_RANGE[1]:g} dB, one colour scale. Scores against the reference: ViSQOL (higher is better),
SI-SNR (higher is better), LSD (lower is better). Audio is Ogg Vorbis.</p>
{command}
{''.join(parts)}
</body></html>
"""
