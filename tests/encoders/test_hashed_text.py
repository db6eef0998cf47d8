"""The hashed text encoders: fixed width, no vocabulary, idf as numbers only."""

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from mmfuse.encoders import create_encoder
from mmfuse.privacy.scrub import scrub_text

TEXTS = ["A green frog on a lily pad.", "A red bird sings", "Frogs jump", "The bird flies"]


@pytest.mark.parametrize("name", ["hashing", "tfidf-hashed"])
def test_fixed_width_unit_rows_and_missing(name):
    enc = create_encoder(name)
    x = enc.fit_transform(TEXTS + [None, "  "])
    assert x.shape == (6, 2 * 2**12) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:4], axis=1), 1.0, rtol=1e-5)
    assert np.isnan(x[4:]).all()
    # similar texts are closer than unrelated ones
    assert x[0] @ x[2] > x[0] @ x[3]


def test_hashing_is_stateless_and_tfidf_hashed_learns_idf_only():
    hashing = create_encoder("hashing")
    assert hashing.stateless and not hashing.stores_training_text
    np.testing.assert_array_equal(hashing.transform(TEXTS), create_encoder("hashing").transform(TEXTS))
    tf = create_encoder("tfidf-hashed")
    assert not tf.stateless and not tf.stores_training_text
    with pytest.raises(NotFittedError):
        tf.transform(TEXTS)
    tf.fit(TEXTS)
    fitted = {k: v for k, v in vars(tf).items() if k.endswith("_") and k != "errors_"}
    assert set(fitted) == {"idf_"}
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in tf.idf_)
    # a term in every document weighs less than a rare one
    frog, bird = tf.transform(["frog"]), tf.transform(["bird sings"])
    assert frog.shape == bird.shape


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="n_features"):
        create_encoder("hashing", n_features=0).transform(["x"])
    with pytest.raises(ValueError, match="cannot both be None"):
        create_encoder("hashing", word_ngrams=None, char_ngrams=None).transform(["x"])
    assert create_encoder("hashing", char_ngrams=None, n_features=64).dim == 64


@pytest.mark.parametrize("name", ["hashing", "tfidf-hashed", "tfidf"])
def test_scrub_pii_encodes_the_scrubbed_text(name):
    raw = ["write to ann.lee@example.org or call +44 20 7946 0958", "a frog", "a bird"]
    plain = create_encoder(name)
    scrub = create_encoder(name)
    scrub.scrub_pii = True
    assert scrub.fingerprint != plain.fingerprint  # other features, other cache entries
    x = _dense(scrub.fit_transform(raw))
    y = _dense(plain.fit_transform([scrub_text(t) for t in raw]))
    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, _dense(plain.fit_transform(raw)))


def _dense(x):
    """tfidf gives a SciPy sparse matrix, the hashed encoders a dense array."""
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)
