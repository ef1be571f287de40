"""scripts/cache_subset.py: a cache of some packages' tracks, read beside the rest at its own share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from repo_scripts import load_script

from apollo.data.cache import Cache, prepare
from apollo.data.examples import ExampleConfig, TrainingExamples

cache_subset = load_script("scripts/cache_subset.py")


def _cache(root: Path) -> Path:
    """A prepared cache of four one-file 'packages' of noise, each track named <package>/x.flac."""
    import soundfile as sf

    source = root / "music"
    for number, package in enumerate(("orchestra", "rock", "chip", "jazz")):
        folder = source / package
        folder.mkdir(parents=True)
        noise = np.random.default_rng(number).standard_normal((3 * 44100, 2)) * 0.1 * (number + 1)
        sf.write(folder / "x.flac", noise.astype(np.float32), 44100)
    prepare(source, root / "cache", layout="folder", window=1.0, hop=0.5, progress=False)
    return root / "cache"


def test_a_subset_keeps_or_leaves_out_packages_and_reads_the_same_audio(tmp_path):
    cache = _cache(tmp_path)
    names = sorted(t["name"] for t in json.loads((cache / "index.json").read_text())["tracks"])
    packages = [n.split("/", 1)[0] for n in names]
    assert len(packages) == 4
    kept = cache_subset.subset(cache, tmp_path / "kept", [packages[0]])
    rest = cache_subset.subset(cache, tmp_path / "rest", [packages[0]], exclude=True)
    assert sum(kept.values()) == 1 and sum(rest.values()) == 3
    whole, part = Cache(cache), Cache(tmp_path / "kept")
    track = part.tracks[0]
    original = next(t for t in whole.tracks if t["name"] == track["name"])
    np.testing.assert_array_equal(part.read(track["mixture"], track["mixture_scale"], 0, 4410),
                                  whole.read(original["mixture"], original["mixture_scale"], 0, 4410))
    # read as two caches at shares: the kept package's share of the draws follows the share asked
    config = ExampleConfig(cache_shares=(0.8, 0.2), segment=0.5, bitrates=(128,))
    examples = TrainingExamples([tmp_path / "kept", tmp_path / "rest"], config, split=None)
    drawn = [examples.draw(i)["parts"][0][1]["name"] for i in range(200)]
    assert 0.7 < sum(name == track["name"] for name in drawn) / 200 < 0.9
    with pytest.raises(ValueError, match="no tracks of nothing-such"):
        cache_subset.subset(cache, tmp_path / "x", ["nothing-such"])
    with pytest.raises(ValueError, match="another folder"):
        cache_subset.subset(cache, cache, [packages[0]])
