"""MP3s made by the LAME command line: what reading its tag's lowpass changes in `apollo restore`.

    python benchmarks/lame_tag.py --data corpus/real --split valid --out reports/lame-tag-real-valid.json

Needs the `lame` program (Debian package `lame`, listed in .ci/apt-packages.txt). LAME writes a tag
in an MP3's first frame that states, among other things, whether it coded CBR, ABR or VBR and the
lowpass it applied (audio.mp3_lame_tag). The default's dark-source rule (`model.dark_source_hz_told`)
takes a told file for dark when its loudest frames end under DARK_EDGE_SHARE of the encoder's edge,
and knows only a CBR encoder's edge per bitrate class: before the tag was read, a VBR or ABR file was
never taken for dark, and a CBR file above 128 kbps was read against 128's edge. Restorer.file_bitrate
now uses the tag's lowpass where it states one.

Each excerpt of a split is written as 16-bit WAV, coded by `lame` with each of --settings, and read
back as `apollo restore` reads the file (audio.read, resampled to the model's rate). Per (excerpt,
setting) the row has the tag's method and lowpass, the mean bitrate, the class it is told, the
loudest frames' limit and the verdicts "before" (tag unread) and "now"; where they differ, both
restorations are scored (ViSQOL against the reference, and the MP3's), elsewhere the two are the same
and nothing is restored (with --score-all, "now" and the MP3 are scored there too: how the default does
on files as the LAME program codes them, at the rates it picks). The decoded file is aligned to the
reference by cross-correlation (LAME's resampling and padding). The summary, per setting and over all:
the share of files whose verdict changed and the mean ViSQOL change over every file (0 where the
verdict stayed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from probe_report import rounded, summarise, write_report

from apollo import Restorer, audio, metrics
from apollo.evaluate import make_excerpts
from apollo.model.band_limit import never_dark

RATE = 44100
SETTINGS = ("-V 0", "-V 2", "-V 4", "-V 6", "--abr 56", "--abr 96", "--abr 128", "-b 64", "-b 96", "-b 128",
            "-b 160", "-b 192", "-b 256", "-b 320")
MAX_LAG = 4096  # samples: LAME's delay and padding, resampled


def lag(ref: np.ndarray, coded: np.ndarray) -> int:
    """How many samples `coded` runs behind `ref` (mono mixes, cross-correlated within MAX_LAG)."""
    a, b = ref.mean(0), coded.mean(0)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n)), n)
    shifts = np.r_[np.arange(0, MAX_LAG + 1), np.arange(-MAX_LAG, 0)]
    return int(shifts[np.argmax(corr[shifts])])


def aligned(y: np.ndarray, shift: int, length: int) -> np.ndarray:
    """y moved `shift` samples earlier (later where negative), cut or padded to `length`."""
    y = y[:, shift:] if shift >= 0 else np.pad(y, ((0, 0), (-shift, 0)))
    return audio.fit_length(y, length)


def restore(restorer: Restorer, wav: np.ndarray, whole: tuple, told: float, source: torch.Tensor,
            dark_source_hz: float | None) -> np.ndarray:
    """wav (at the model's rate) restored as restore_file restores it, with the given reading; whole:
    its (gain, band limit, ...) from Restorer.whole_input."""
    gain, limit = whole[:2]
    blocks = restorer.restore_blocks(iter([wav]), wav.shape[0], band_limit=limit, gain=gain, bitrate=told,
                                     source_limit=source, dark_source_hz=dark_source_hz)
    return np.concatenate(list(blocks), axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--split", default="valid", choices=("train", "valid", "test"))
    parser.add_argument("--checkpoint", default="default")
    parser.add_argument("--settings", default=";".join(SETTINGS), help="lame options per file, ';'-separated")
    parser.add_argument("--score-all", action="store_true", help="score the MP3 and 'now' on every file")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True, help="JSON to write")
    args = parser.parse_args()
    if shutil.which("lame") is None:
        parser.error("needs the lame program (Debian: apt install lame)")
    torch.set_num_threads(args.threads)
    restorer = Restorer(args.checkpoint, device="cpu", threads=args.threads)
    model = restorer.model
    classes, hz = model.config.bitrate_classes, RATE / model.config.window
    if not model.config.dark_source_hz_told:
        parser.error(f"{args.checkpoint} has no dark-source rule: nothing to compare")
    settings = [s.strip() for s in args.settings.split(";") if s.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        wav_path, mp3_path = Path(folder) / "ref.wav", Path(folder) / "coded.mp3"
        for excerpt in make_excerpts(args.data, RATE, split=args.split):
            ref = excerpt.audio
            sf.write(wav_path, ref.T, RATE, subtype="PCM_16")
            for setting in settings:
                subprocess.run(["lame", "--quiet", *setting.split(), str(wav_path), str(mp3_path)], check=True)
                info = audio.probe(mp3_path)
                decoded, _ = audio.read(mp3_path)
                coded = audio.resample(decoded, info.sample_rate, RATE)
                shift = lag(ref, coded)
                whole = restorer.whole_input(lambda c=coded: [c], coded.shape[0], info.sample_rate)
                loudest = whole[2]
                now = restorer.file_bitrate(info, loudest)
                frames = audio.mp3_frame_bitrates(info)
                before = loudest if len(set(frames)) == 1 else never_dark(loudest, model.config.window)
                tag = audio.mp3_lame_tag(mp3_path)
                row_index = model.bitrate_index(torch.tensor([now.bitrate]), 1)
                own = None if now.dark_source_hz is None else torch.tensor([now.dark_source_hz])
                row = {"excerpt": excerpt.name, "setting": setting, "rate": info.sample_rate,
                       "method": tag.method if tag else None, "lowpass_hz": tag.lowpass_hz if tag else None,
                       "kbps": now.bitrate, "told": classes[int(row_index[0]) - 1],
                       "loudest_limit_hz": float(loudest[0]) * hz,
                       "dark_before": bool(model.dark_rows(row_index, before)[0]),
                       "dark_now": bool(model.dark_rows(row_index, now.source_limit, own)[0])}
                row["changed"] = row["dark_before"] != row["dark_now"]
                if row["changed"]:
                    systems = {"mp3": coded,
                               "before": restore(restorer, coded, whole, now.bitrate, before, None),
                               "now": restore(restorer, coded, whole, now.bitrate, now.source_limit,
                                              now.dark_source_hz)}
                    for name, y in systems.items():
                        row[f"visqol_{name}"] = metrics.visqol(ref, aligned(y, shift, ref.shape[1]), RATE)
                    row["visqol_change"] = row["visqol_now"] - row["visqol_before"]
                else:
                    row["visqol_change"] = 0.0
                    if args.score_all:
                        now_wav = restore(restorer, coded, whole, now.bitrate, now.source_limit,
                                          now.dark_source_hz)
                        for name, y in (("mp3", coded), ("now", now_wav)):
                            row[f"visqol_{name}"] = metrics.visqol(ref, aligned(y, shift, ref.shape[1]), RATE)
                rows.append(row)
                print(rounded(row), flush=True)
    keys = ["kbps", "told", "loudest_limit_hz", "dark_before", "dark_now", "changed", "visqol_mp3",
            "visqol_before", "visqol_now", "visqol_change"]
    summary = summarise(rows, lambda r: r["setting"], keys) | summarise(rows, lambda r: "all", keys)
    command = (f"python benchmarks/lame_tag.py --data {args.data} --split {args.split} --checkpoint "
               f"{args.checkpoint} --settings '{args.settings}'{' --score-all' if args.score_all else ''} "
               f"--threads {args.threads} --out {args.out}")
    write_report(args.out, command, [rounded(r) for r in rows], summary)


if __name__ == "__main__":
    main()
