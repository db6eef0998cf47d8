import numpy as np
import pytest

from mmfuse.uncertainty.metrics import ece, ece_of_confidence
from mmfuse.uncertainty.toplabel import POOLED, TopLabelBinning, TopLabelIsotonic


def overconfident(n=4000, k=4, seed=0, temperature=3.0):
    """Labels drawn from softmax(z); the reported probabilities are softmax(z * T)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (true.cumsum(1) > rng.random((n, 1))).argmax(1)
    shown = np.exp(z * temperature) / np.exp(z * temperature).sum(1, keepdims=True)
    return shown, y


def test_ece_of_confidence_is_the_ece_of_the_top_label():
    proba, y = overconfident(n=500)
    assert ece_of_confidence(proba.max(1), proba.argmax(1) == y) == pytest.approx(
        ece(proba, y))


@pytest.mark.parametrize("method", [TopLabelBinning, TopLabelIsotonic])
def test_top_label_maps_fitted_on_other_rows_fix_an_overconfidence(method):
    proba, y = overconfident()
    cal = method.fit(proba[:2000], y[:2000])
    test, y_test = proba[2000:], y[2000:]
    conf = cal.confidence(test)
    assert conf.shape == (2000,) and ((conf >= 0) & (conf <= 1)).all()
    correct = test.argmax(1) == y_test  # the label is kept: only its confidence moves
    assert ece_of_confidence(conf, correct) < 0.4 * ece(test, y_test)


def test_each_predicted_class_gets_its_own_map():
    # the same confidences, but class 0's predictions are right far less often
    rng = np.random.default_rng(1)
    n, k = 6000, 4
    pred = rng.integers(0, k, n)
    conf = rng.uniform(0.5, 1.0, n)
    proba = np.tile(((1 - conf) / (k - 1))[:, None], (1, k))
    proba[np.arange(n), pred] = conf
    p_right = np.where(pred == 0, conf - 0.3, conf)
    right = rng.random(n) < p_right
    y = np.where(right, pred, (pred + rng.integers(1, k, n)) % k)
    for method in (TopLabelBinning, TopLabelIsotonic):
        cal = method.fit(proba, y)
        assert set(cal.maps) == {POOLED, 0, 1, 2, 3}
        fixed = cal.confidence(proba)
        for c in range(k):  # per class, the mean confidence meets the accuracy
            rows = pred == c
            assert fixed[rows].mean() == pytest.approx(right[rows].mean(), abs=0.02)


def test_a_rarely_predicted_class_shares_the_pooled_map():
    proba, y = overconfident(n=1000)
    rare = proba.argmax(1) == 3
    proba[rare] = proba[rare][:, [3, 1, 2, 0]]  # class 3 never the arg-max
    proba[:20] = np.array([0.1, 0.1, 0.1, 0.7])  # ... but on 20 rows (< MIN_BIN)
    for method in (TopLabelBinning, TopLabelIsotonic):
        cal = method.fit(proba, y)
        assert 3 not in cal.maps and POOLED in cal.maps
        row = np.array([[0.1, 0.1, 0.1, 0.7]])
        assert cal.confidence(row)[0] == pytest.approx(cal._apply(np.array([0.7]), POOLED)[0])
