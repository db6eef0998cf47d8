"""Several encoders for one modality side by side (mmfuse.encoders.concat)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.encoders.concat import ConcatEncoder, concat_views
from mmfuse.encoders.registry import create_encoder
from mmfuse.views import is_sparse

TEXTS = ["a red fish swims", "two blue birds sing", None, "a green frog jumps", "red birds"]


def test_dense_parts_side_by_side():
    images = [np.full((20, 20, 3), v, np.uint8) for v in (0, 90, 180)]
    images[1][5:15, 5:15] = 255
    enc = create_encoder("color-hist+pixels")
    out = enc.transform(images)
    a = create_encoder("color-hist").transform(images)
    b = create_encoder("pixels").transform(images)
    np.testing.assert_allclose(out, np.hstack([a, b]), rtol=1e-6)
    assert enc.name == "color-hist+pixels" and enc.stateless and enc.dim == out.shape[1]


def test_sparse_part_gives_unit_norm_blocks_and_matches_concat_views():
    enc = create_encoder("tfidf+hashing")
    assert not enc.stateless and enc.stores_training_text and enc.modality == "text"
    out = enc.fit_transform(TEXTS)
    assert is_sparse(out) and out.shape[0] == len(TEXTS)
    tfidf = enc.parts_[0].transform(TEXTS)
    hashed = create_encoder("hashing").transform(TEXTS)
    expected = concat_views([tfidf, hashed])
    np.testing.assert_allclose(out.toarray(), expected.toarray(), rtol=1e-5, atol=1e-7)
    norms = np.sqrt(np.asarray(out.multiply(out).sum(axis=1))).ravel()
    np.testing.assert_allclose(norms[[0, 1, 3, 4]], np.sqrt(2), rtol=1e-5)
    assert norms[2] == 0  # the missing row stays empty


def test_fingerprint_depends_on_the_parts_and_pickles():
    a, b = create_encoder("hashing+tfidf"), create_encoder("tfidf+hashing")
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == create_encoder("hashing+tfidf").fingerprint
    a.fit(TEXTS)
    again = pickle.loads(pickle.dumps(a))
    np.testing.assert_allclose(again.transform(TEXTS).toarray(), a.transform(TEXTS).toarray())


def test_settings_reach_the_parts():
    enc = create_encoder("tfidf+hashing")
    assert enc.scrubs_pii
    enc.scrub_pii = True
    assert all(p.scrub_pii for p in enc.parts_)


@pytest.mark.parametrize("name, match", [
    ("tfidf+", "at least 2"), ("tfidf+hog", "one modality"), ("tfidf+tfidf", "twice"),
])
def test_bad_concatenations(name, match):
    with pytest.raises(InputError, match=match):
        create_encoder(name)
    with pytest.raises(InputError, match="at least 2"):
        ConcatEncoder(["tfidf"]).set_parts([create_encoder("tfidf")])
    with pytest.raises(InputError, match="unknown encoder"):
        create_encoder("tfidf+nope")


def test_a_model_with_a_concatenation_saves_and_loads(tmp_path):
    import pandas as pd

    from mmfuse import MultimodalClassifier, load

    rng = np.random.default_rng(0)
    words = ["apple", "river", "stone", "cloud"]
    y = np.arange(40) % 4
    X = pd.DataFrame({"text": [f"{words[c]} {rng.choice(words)}" for c in y]})
    model = MultimodalClassifier(encoders={"text": "tfidf+hashing"}, fusion="late",
                                 weights="equal", random_state=0).fit(X, y)
    path = model.save(tmp_path / "m.mmfuse", allow_training_text=True)
    again = load(path)
    assert again.encoders_["text"].name == "tfidf+hashing"
    np.testing.assert_allclose(again.predict_proba(X), model.predict_proba(X), atol=1e-6)
