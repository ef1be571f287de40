"""Shared fixtures: paths to the released reference material and small helpers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
# the released implementation's reference outputs, kept in the repo (tests/fixtures) so that
# every checkout runs the regression tests; APOLLO_SHARED may point at another copy's parent
_OTHER_COPY = os.environ.get("APOLLO_SHARED")
FIXTURES = Path(_OTHER_COPY) / "fixtures" if _OTHER_COPY else ROOT / "tests" / "fixtures"
REFERENCE = FIXTURES / "official_apollo_reference.pt"
FULL_KEYS = FIXTURES / "official_apollo_full_keys.json"


def _require(path: Path) -> None:
    """Outside CI a missing fixture skips these tests; in CI that is a failure."""
    if not path.exists():
        message = f"{path} not found (tests/fixtures is part of the repo; APOLLO_SHARED overrides it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def reference() -> dict:
    _require(REFERENCE)
    return torch.load(REFERENCE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def full_keys() -> list[tuple[str, list[int]]]:
    _require(FULL_KEYS)
    return [(name, shape) for name, shape in json.loads(FULL_KEYS.read_text())]


@pytest.fixture(scope="session")
def released_full_state(full_keys) -> dict[str, torch.Tensor]:
    """Random weights under every released name and shape of the full-size generator."""
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=gen) * 0.02 for name, shape in full_keys}
