"""Classical encoders: registry entries, dims, fingerprints, missing rows, errors, real data."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmfuse import InputError
from mmfuse.encoders import create_encoder, list_encoders
from mmfuse.encoders.base import ItemError
from mmfuse.encoders.classical import hog_batch
from mmfuse.preprocess.dsp import mel_filterbank

EXPECTED = {
    "pixels": ("image", 1024),
    "hog": ("image", 1764),
    "color-hist": ("image", 128),
    "tfidf": ("text", None),
    "mfcc": ("audio", 104),
    "logmel": ("audio", 128),
}
TEXTS = ["A red apple.", "A green apple on a table.", "A fast red car.", "An old blue car.",
         "A small dog.", "A big dog barking."]


def _digit_like(seed: int) -> np.ndarray:
    """A 28x28 uint8 array like an MNIST digit: a bright stroke on black."""
    img = np.zeros((28, 28), np.uint8)
    rng = np.random.default_rng(seed)
    row = rng.integers(4, 20)
    img[row:row + 6, 6:22] = 255
    return img


def _clip(freq: float, seconds: float = 0.6, rate: int = 8000) -> tuple[np.ndarray, int]:
    t = np.arange(round(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate


# -- registry, dims, fingerprints ------------------------------------------------------------


def test_registered_with_modality_and_default_dim():
    rows = {row["name"]: row for row in list_encoders()}
    for name, (modality, dim) in EXPECTED.items():
        assert (rows[name]["modality"], rows[name]["dim"]) == (modality, dim), name
        assert rows[name]["description"]
        encoder = create_encoder(name)
        assert (encoder.name, encoder.modality) == (name, modality)
        if dim is not None:
            assert encoder.dim == dim


@pytest.mark.parametrize("name, params, dim", [
    ("pixels", {"size": 16}, 256),
    ("pixels", {"size": 8, "grayscale": False}, 192),
    ("hog", {"size": 32, "pixels_per_cell": 8, "cells_per_block": 2}, 3 * 3 * 4 * 9),
    ("hog", {"size": 28, "pixels_per_cell": 7, "orientations": 6}, 3 * 3 * 4 * 6),
    ("color-hist", {"bins": (4, 2, 2)}, 16),
    ("mfcc", {"n_mfcc": 20, "segments": 0}, 80),
    ("mfcc", {"deltas": False, "segments": 3}, 13 * 5),
    ("logmel", {"n_mels": 32, "segments": 0}, 64),
])
def test_dim_follows_parameters_and_output_matches(name, params, dim):
    encoder = create_encoder(name, **params)
    assert encoder.dim == dim
    item = _clip(300) if encoder.modality == "audio" else _digit_like(0)
    out = encoder.transform([item])
    assert out.shape == (1, dim) and out.dtype == np.float32 and np.isfinite(out).all()


def test_config_holds_the_init_parameters_and_drives_the_fingerprint():
    hog = create_encoder("hog")
    assert hog.config() == {"size": 64, "orientations": 9, "pixels_per_cell": 8,
                            "cells_per_block": 2, "resize": "pad", "max_pixels": 50_000_000}
    assert create_encoder("hog").fingerprint == hog.fingerprint
    assert create_encoder("hog", orientations=12).fingerprint != hog.fingerprint
    assert create_encoder("mfcc", segments=2).fingerprint != create_encoder("mfcc").fingerprint
    tfidf = create_encoder("tfidf")
    before = tfidf.fingerprint
    tfidf.fit(TEXTS)  # fitted state (ending in "_") is not configuration
    assert tfidf.fingerprint == before
    assert create_encoder("tfidf", svd=10).fingerprint != before


@pytest.mark.parametrize("name, params, message", [
    ("hog", {"size": 8, "pixels_per_cell": 8}, "fewer than cells_per_block=2"),
    ("hog", {"orientations": 0}, "orientations must be a positive int"),
    ("pixels", {"size": "32"}, "size must be a positive int"),
    ("color-hist", {"bins": (8, 4)}, "bins must be three positive ints"),
    ("mfcc", {"n_mfcc": 40}, "needs more than n_mels=40 bands"),
    ("logmel", {"segments": -1}, "segments must be an int >= 0"),
])
def test_bad_parameters_raise_value_error_not_input_error(name, params, message):
    encoder = create_encoder(name, **params)
    with pytest.raises(ValueError, match=message) as caught:
        encoder.transform([None])
    assert not isinstance(caught.value, InputError)  # on_error="skip" must not hide it


# -- missing rows and unreadable items -------------------------------------------------------


@pytest.mark.parametrize("name, good", [
    ("pixels", _digit_like(1)),
    ("color-hist", np.full((10, 10, 3), 0.5)),
    ("mfcc", _clip(440)),
    ("logmel", _clip(440)),
])
def test_missing_items_give_nan_rows(name, good):
    encoder = create_encoder(name)
    out = encoder.transform([good, None, float("nan"), "", good])
    assert out.shape == (5, encoder.dim)
    assert np.isnan(out[1:4]).all() and np.isfinite(out[[0, 4]]).all()
    np.testing.assert_array_equal(out[0], out[4])


def test_on_error_skip_reports_each_bad_item(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    encoder = create_encoder("hog")
    out = encoder.transform([_digit_like(2), str(broken), None, np.zeros((3, 3, 2))],
                            on_error="skip")
    assert np.isfinite(out[0]).all() and np.isnan(out[1:]).all()
    assert [e.row for e in encoder.errors_] == [1, 3]
    assert isinstance(encoder.errors_[0], ItemError)
    assert "broken.png" in encoder.errors_[0].message
    assert "row 1" in str(encoder.errors_[0])
    with pytest.raises(InputError, match=r"row 1: cannot decode image '.*broken\.png'"):
        encoder.transform([_digit_like(2), str(broken)])


def test_unreadable_audio_is_reported(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF....WAVEjunk")
    encoder = create_encoder("mfcc")
    out = encoder.transform([_clip(300), str(junk)], on_error="skip")
    assert np.isnan(out[1]).all() and "junk.wav" in encoder.errors_[0].message


# -- image encoders --------------------------------------------------------------------------


def test_hog_matches_skimage():
    skimage_feature = pytest.importorskip("skimage.feature")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 40, 36)).astype(np.uint8)
    images[:3] = (images[:3] > 128) * 255  # hard edges: angles right on bin boundaries
    images[3] = 0
    for orientations, cell, block in [(9, 8, 2), (8, 6, 3), (12, 4, 1)]:
        expected = np.stack([
            skimage_feature.hog(image, orientations=orientations, pixels_per_cell=(cell, cell),
                                cells_per_block=(block, block), block_norm="L2-Hys")
            for image in images])
        np.testing.assert_allclose(hog_batch(images, orientations, cell, block), expected,
                                   atol=1e-6)


def test_image_encoders_accept_paths_pil_images_and_arrays(tmp_path):
    img = Image.fromarray(_digit_like(3))
    path = tmp_path / "digit.png"
    img.save(path)
    for name in ("pixels", "hog", "color-hist"):
        out = create_encoder(name).transform([str(path), img, _digit_like(3)])
        np.testing.assert_allclose(out[0], out[1], atol=1e-6)
        np.testing.assert_allclose(out[0], out[2], atol=1e-6)


def test_pixels_are_scaled_and_hist_sums_to_one():
    pixels = create_encoder("pixels", size=28).transform([_digit_like(4)])[0]
    assert pixels.min() == 0 and pixels.max() == 1
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    hist = create_encoder("color-hist").transform([red])[0]
    assert hist.sum() == pytest.approx(1) and hist.max() == pytest.approx(1)


# -- text ------------------------------------------------------------------------------------


def test_tfidf_dim_before_fit_is_a_clear_error():
    from sklearn.exceptions import NotFittedError

    encoder = create_encoder("tfidf")
    assert encoder.stateless is False
    with pytest.raises(NotFittedError, match="not fitted yet.*call fit"):
        _ = encoder.dim
    with pytest.raises(NotFittedError, match="not fitted yet"):
        encoder.transform(TEXTS)


def test_tfidf_fit_transform_sparse_unit_rows_and_missing_texts():
    from scipy import sparse

    encoder = create_encoder("tfidf")
    items = TEXTS + [None, "  \t\x00 "]
    out = encoder.fit_transform(items)
    assert sparse.issparse(out)  # TF-IDF stays sparse (see mmfuse.views)
    assert out.dtype == np.float32 and out.shape == (8, encoder.dim) and encoder.dim > 50
    dense = out.toarray()
    np.testing.assert_allclose(np.linalg.norm(dense[:6], axis=1), 1, atol=1e-5)
    assert (dense[6:] == 0).all()  # missing rows are all-zero in a sparse view...
    _, present, _ = encoder.prepare_all(items, "raise")
    assert present.tolist() == [True] * 6 + [False] * 2  # ...and marked in present
    similar = encoder.transform(["a red apple", "a RED car", "zzz qqq"]).toarray()
    assert similar[0] @ dense[0] > similar[0] @ dense[3]
    assert np.isfinite(similar).all()


def test_tfidf_svd_and_its_limits():
    encoder = create_encoder("tfidf", svd=3)
    assert encoder.fit_transform(TEXTS).shape == (6, 3) and encoder.dim == 3
    many = create_encoder("tfidf", svd=500).fit(TEXTS)
    assert many.dim <= len(TEXTS)  # clipped to what six texts support


def test_tfidf_errors():
    with pytest.raises(InputError, match="at least one non-empty text"):
        create_encoder("tfidf").fit([None, ""])
    with pytest.raises(ValueError, match="cannot both be None"):
        create_encoder("tfidf", word_ngrams=None, char_ngrams=None).fit(TEXTS)
    encoder = create_encoder("tfidf").fit(TEXTS)
    out = encoder.transform(["ok", "caf\xe9".encode("latin-1")], on_error="skip")
    assert out[1].nnz == 0 and "not valid UTF-8" in encoder.errors_[0].message  # a zero row


# -- audio -----------------------------------------------------------------------------------


def test_mel_filterbank_shape_and_range():
    filters = mel_filterbank(16000, 512, 16, 20.0, 4000.0)
    assert filters.shape == (16, 257) and not filters.flags.writeable
    hz = np.linspace(0, 8000, 257)
    assert filters[:, hz > 4000].sum() == 0 and (filters.sum(axis=1) > 0).all()
    with pytest.raises(ValueError, match="fmin < fmax <= rate / 2"):
        mel_filterbank(8000, 256, 16, 0.0, 5000.0)


def test_audio_encoders_handle_short_silent_and_long_clips():
    short = (np.full(50, 0.1, np.float32), 8000)   # shorter than one 25 ms window
    silent = (np.zeros(8000, np.float32), 8000)
    long = _clip(300, seconds=3.0)
    for name in ("mfcc", "logmel"):
        out = create_encoder(name).transform([short, silent, long])
        assert np.isfinite(out).all(), name


def test_segments_capture_temporal_order():
    low, high = _clip(300, 0.3)[0], _clip(1500, 0.3)[0]
    encoder = create_encoder("mfcc", trim_db=None, preemphasis=0.0)
    a, b = encoder.transform([(np.concatenate([low, high]), 8000),
                              (np.concatenate([high, low]), 8000)])
    pooled = encoder.dim - encoder.segments * encoder.n_mfcc
    np.testing.assert_allclose(a[:13], b[:13], atol=0.2)  # same mean over the clip
    assert np.abs(a[pooled:] - b[pooled:]).max() > 5  # different order over time


def test_real_fsdd_digits_are_separable(data_root):
    folder = data_root / "fsdd" / "recordings"
    train = sorted(folder.glob("[0-9]_jackson_[0-9].wav"))
    test = sorted(folder.glob("[0-9]_jackson_1[0-9].wav"))
    if len(train) < 100 or len(test) < 100:
        pytest.skip(f"FSDD recordings not found in {folder}")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    encoder = create_encoder("mfcc")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    model.fit(encoder.transform([str(p) for p in train]), [p.name[0] for p in train])
    accuracy = model.score(encoder.transform([str(p) for p in test]), [p.name[0] for p in test])
    assert accuracy > 0.8  # same speaker, other takes: far above chance (0.1)


def test_real_big_photo_through_hog_is_fast(data_root):
    photo = data_root / "sign-digits" / "Dataset" / "7" / "IMG_5874.JPG"
    if not photo.is_file():
        pytest.skip(f"sign-digit photo not found: {photo}")
    out = create_encoder("hog").transform([str(photo)])
    assert out.shape == (1, 1764) and np.isfinite(out).all()
