"""Shared fixtures: paths to the released reference material and small helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = SHARED / "fixtures"
REFERENCE = FIXTURES / "official_apollo_reference.pt"
FULL_KEYS = FIXTURES / "official_apollo_full_keys.json"


@pytest.fixture(scope="session")
def reference() -> dict:
    if not REFERENCE.exists():
        pytest.skip("shared/fixtures not present beside the checkout")
    return torch.load(REFERENCE, map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def full_keys() -> list[tuple[str, list[int]]]:
    if not FULL_KEYS.exists():
        pytest.skip("shared/fixtures not present beside the checkout")
    return [(name, shape) for name, shape in json.loads(FULL_KEYS.read_text())]


@pytest.fixture(scope="session")
def released_full_state(full_keys) -> dict[str, torch.Tensor]:
    """Random weights under every released name and shape of the full-size generator."""
    gen = torch.Generator().manual_seed(0)
    return {name: torch.randn(shape, generator=gen) * 0.02 for name, shape in full_keys}
