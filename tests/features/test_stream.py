"""Streaming a store shard by shard (features/stream.py)."""

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.features import load
from mmfuse.features.stream import StoreStream, fold_scalers


def test_shards_together_are_the_loaded_store(small_store):
    stream = StoreStream(small_store)
    whole = load(small_store)
    parts = list(stream.shards())
    assert [p.index for p in parts] == list(range(5))
    rows = np.concatenate([p.rows for p in parts])
    assert np.array_equal(rows, np.arange(1200))
    for m in ("image", "text"):
        got = np.vstack([p.views[m] for p in parts])
        assert np.array_equal(np.isnan(got), np.isnan(whole.views[m]))
        assert np.allclose(np.nan_to_num(got), np.nan_to_num(whole.views[m]))
        assert np.array_equal(np.concatenate([p.present[m] for p in parts]), whole.present[m])
    assert np.array_equal(stream.column("label"), whole.column("label"))
    assert stream.nbytes == 1200 * 32 * 4
    assert [p.index for p in stream.shards([3, 1])] == [3, 1]


def test_fold_scalers_use_training_rows_only(small_store):
    whole = load(small_store)
    fold = np.random.default_rng(0).integers(-1, 3, 1200).astype(np.int16)
    scalers = fold_scalers(StoreStream(small_store), fold, 3)
    for f in range(3):
        for m in ("image", "text"):
            train = (fold != f) & whole.present[m]
            x = whole.views[m][train].astype(np.float64)
            assert np.allclose(scalers.mean[m][f], x.mean(axis=0), atol=1e-5)
            assert np.allclose(scalers.scale[m][f], x.std(axis=0), rtol=1e-4)
    z = scalers.transform("text", 0, whole.views["text"][:50])  # absent rows: 0, the mean
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert (z[~whole.present["text"][:50]] == 0).all()



def test_inner_fold_scalers_use_inner_training_rows_only(small_store, monkeypatch):
    """Inner fold (f, j)'s statistics: f's training rows less those j holds out; and
    to_inner turns rows standardised by f into rows standardised by (f, j)."""
    from mmfuse.features import stream as stream_module

    monkeypatch.setattr(stream_module, "CHUNK_ROWS", 7)  # sums over several blocks
    whole = load(small_store)
    rng = np.random.default_rng(1)
    fold = rng.integers(-1, 3, 1200).astype(np.int16)
    inner = {}
    for f in (0, 2):
        of_row = np.where(fold != f, rng.integers(0, 2, 1200), -1).astype(np.int8)
        inner[f] = (of_row, 2)
    scalers = fold_scalers(StoreStream(small_store), fold, 3, inner=inner)
    for f in range(3):  # the outer statistics are unchanged by the inner ones
        x = whole.views["image"][(fold != f) & whole.present["image"]].astype(np.float64)
        assert np.allclose(scalers.mean["image"][f], x.mean(axis=0), atol=1e-5)
    assert sorted(scalers.inner_mean["text"]) == [(0, 0), (0, 1), (2, 0), (2, 1)]
    for (f, j) in scalers.inner_mean["text"]:
        for m in ("image", "text"):
            train = (fold != f) & (inner[f][0] != j) & whole.present[m]
            x = whole.views[m][train].astype(np.float64)
            mu, sd = scalers.inner_scaler(m, f, j)
            assert np.allclose(mu, x.mean(axis=0), atol=1e-5)
            assert np.allclose(sd, x.std(axis=0), rtol=1e-4)
            rows = whole.views[m][:60]
            has = whole.present[m][:60]
            z = scalers.to_inner(m, f, j, scalers.transform(m, f, rows), has)
            want = np.nan_to_num((rows - mu) / sd, nan=0.0)
            assert np.allclose(z, want, atol=1e-4) and (z[~has] == 0).all()


def test_stream_errors_name_the_store(small_store, tmp_path):
    with pytest.raises(InputError, match=r"has no features for \['audio'\]"):
        StoreStream(small_store, ["audio"])
    with pytest.raises(InputError, match="has no column 'speaker'"):
        StoreStream(small_store).column("speaker")
    with pytest.raises(InputError, match="is not a feature store"):
        StoreStream(tmp_path)
