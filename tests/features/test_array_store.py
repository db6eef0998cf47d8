"""A store written from arrays (features/arrays.py) is an ordinary store."""

import numpy as np
import pandas as pd
import pytest

from mmfuse import InputError
from mmfuse.features import load, read_header
from mmfuse.features.arrays import write_array_store


def test_array_store_reads_back_with_load(small_store):
    store = load(small_store)
    header = read_header(small_store)
    assert header["complete"] and header["n_shards"] == 5 and store.n_rows == 1200
    assert store.views["image"].shape == (1200, 24) and store.views["text"].shape == (1200, 8)
    assert store.encoders == {"image": "test-image", "text": "test-text"}
    absent = ~store.present["text"]
    assert 0 < absent.sum() < 200 and np.isnan(store.views["text"][absent]).all()
    assert set(store.column("label")) == {"c0", "c1", "c2", "c3"}


def _one(n, width=3):
    return pd.DataFrame({"label": ["a"] * n}), {"x": np.zeros((n, width), np.float32)}


def test_array_store_checks_its_input(tmp_path):
    with pytest.raises(InputError, match=r"shard 0, modality 'x': shape \(4, 3\); expected \(4, 2\)"):
        write_array_store(tmp_path / "a", [_one(4)], encoders={"x": "e"}, dims={"x": 2},
                          n_rows=4, rows_per_shard=4)
    with pytest.raises(InputError, match="held 4 rows in 1 shards; expected 8 in 2"):
        write_array_store(tmp_path / "b", [_one(4)], encoders={"x": "e"}, dims={"x": 3},
                          n_rows=8, rows_per_shard=4)
    assert not read_header(tmp_path / "b")["complete"]  # an interrupted store stays incomplete
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "mine.txt").write_text("x")
    with pytest.raises(InputError, match="must be a new or empty folder"):
        write_array_store(tmp_path / "c", [_one(4)], encoders={"x": "e"}, dims={"x": 3},
                          n_rows=4, rows_per_shard=4)
