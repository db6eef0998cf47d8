"""Shared fixtures: synthetic multi-view data and the location of the real datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MMFUSE_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The real datasets (../shared/data in this workplace); tests needing them skip without."""
    if not (DATA / "fsdd").is_dir():
        pytest.skip(f"real datasets not found at {DATA} (set MMFUSE_DATA)")
    return DATA


def make_views(n: int = 400, n_classes: int = 4, seed: int = 0, noise_view: bool = False):
    """Two informative views that see different aspects of the label (so fusion helps)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    a = rng.normal(size=(n, 12)).astype(np.float32)
    a[:, 0] += 2.5 * (y % 2)          # view a knows the parity
    b = rng.normal(size=(n, 8)).astype(np.float32)
    b[:, 0] += 2.5 * (y // 2)         # view b knows the half
    views = {"a": a, "b": b}
    if noise_view:
        views["noise"] = rng.normal(size=(n, 5)).astype(np.float32)
    return views, y


@pytest.fixture
def two_views():
    return make_views()
