"""A training cache of some packages' tracks only, read from an existing one without copying audio.

Training draws pick tracks uniformly (apollo.data.examples), so the only way to give a kind of music
another share of the draws is a cache of its own, read beside the rest with `data.cache_shares`. The
subset's index lists the chosen tracks; each track's folder is a symbolic link into the source cache.

    python scripts/cache_subset.py cache/real2 cache/real2-over --packages wesnoth-1.16-music hedgewars-data
    python scripts/cache_subset.py cache/real2 cache/real2-rest --packages wesnoth-1.16-music hedgewars-data \\
        --exclude
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

INDEX = "index.json"


def subset(source: Path, dest: Path, packages: list[str], exclude: bool = False) -> dict:
    """Writes dest/index.json with the tracks of `packages` (the first part of a track's name), or of
    every other package with `exclude`, and links their folders; returns the tracks per split."""
    index = json.loads((source / INDEX).read_text())
    if dest.resolve() == source.resolve():
        raise ValueError("the subset must go to another folder than its source")
    known = {t["name"].split("/", 1)[0] for t in index["tracks"]}
    unknown = sorted(set(packages) - known)
    if unknown:
        raise ValueError(f"no tracks of {', '.join(unknown)} in {source}")
    tracks = [t for t in index["tracks"] if (t["name"].split("/", 1)[0] in packages) != exclude]
    dest.mkdir(parents=True, exist_ok=True)
    for track in tracks:
        folder = track["mixture"].split("/", 1)[0]
        if not (dest / folder).exists():
            os.symlink((source / folder).resolve(), dest / folder)
    (dest / INDEX).write_text(json.dumps({**index, "tracks": tracks}, indent=1))
    return {split: sum(t["split"] == split for t in tracks) for split in ("train", "valid", "test")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a cache `apollo data prepare` wrote")
    parser.add_argument("dest", type=Path, help="the subset's folder")
    parser.add_argument("--packages", nargs="+", required=True, help="packages whose tracks it keeps")
    parser.add_argument("--exclude", action="store_true", help="keep every other package's tracks instead")
    args = parser.parse_args(argv)
    try:
        counts = subset(args.source, args.dest, args.packages, args.exclude)
    except ValueError as err:
        parser.error(str(err))
    print(f"{args.dest}: {sum(counts.values())} tracks ({', '.join(f'{k} {v}' for k, v in counts.items())})")


if __name__ == "__main__":
    main()
