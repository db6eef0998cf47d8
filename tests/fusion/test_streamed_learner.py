"""The out-of-core learner and feature maps (fusion/streamed.py)."""

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.fusion.late import pooled_log_scores
from mmfuse.fusion.streamed import StreamedSoftmax, design, pool_late


def _blobs(n=1500, d=10, k=3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y


def test_chunks_learn_and_export_as_logistic_regression():
    x, y = _blobs()
    labels = np.array(["a", "b", "c"])[y]
    model = StreamedSoftmax(random_state=0)
    for _ in range(3):
        for lo in range(0, 1000, 250):
            model.partial_fit(x[lo:lo + 250], labels[lo:lo + 250], classes=["a", "b", "c"],
                              n_train=1000)
    assert model.n_seen_ == 3000 and model.alpha_ == pytest.approx(1e-3)
    p = model.predict_proba(x[1000:])
    assert np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert (model.classes_[p.argmax(axis=1)] == labels[1000:]).mean() > 0.9
    lr = model.to_logistic()
    assert np.allclose(lr.predict_proba(x[1000:]), p, atol=1e-5)
    assert (lr.predict(x[1000:]) == model.classes_[p.argmax(axis=1)]).all()


def test_same_seed_same_model_and_bad_parameters():
    x, y = _blobs(300)
    a = StreamedSoftmax(random_state=1).partial_fit(x, y, classes=[0, 1, 2])
    b = StreamedSoftmax(random_state=1).partial_fit(x, y, classes=[0, 1, 2])
    assert np.array_equal(a.coef_, b.coef_)
    with pytest.raises(InputError, match="the first partial_fit needs classes="):
        StreamedSoftmax().partial_fit(x, y)
    with pytest.raises(InputError, match="learning_rate must be a positive number"):
        StreamedSoftmax(learning_rate=0).partial_fit(x, y, classes=[0, 1, 2])
    with pytest.raises(InputError, match="X has 4 columns; this model was started with 10"):
        a.partial_fit(x[:, :4], y)


def test_design_and_late_pooling():
    a = np.ones((2, 3), np.float32)
    b = 2 * np.ones((2, 1), np.float32)
    assert design("concat", {"b": b, "a": a}).tolist() == [[1, 1, 1, 2]] * 2
    assert design("sum", {"a": a, "b": b}).tolist() == [[1.5, 0.5, 0.5]] * 2
    assert design("sum", {"a": a, "b": b}, {"a": 0.25, "b": 0.75})[0].tolist() == [1.75, .25, .25]
    rng = np.random.default_rng(0)
    probas = {m: rng.dirichlet(np.ones(4), 6) for m in ("a", "b")}
    present = {"a": np.ones(6, bool), "b": np.array([1, 1, 0, 1, 0, 1], bool)}
    weights = {"a": 0.3, "b": 0.7}
    masked = {m: np.where(present[m][:, None], p, np.nan) for m, p in probas.items()}
    assert np.allclose(pool_late(probas, present, weights), pooled_log_scores(masked, weights))
