import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.uncertainty.calibration import (IsotonicCalibration, TemperatureScaling,
                                            fit_calibrator)
from mmfuse.uncertainty.metrics import ece, log_loss


def overconfident(n=3000, k=4, seed=0, temperature=3.0):
    """Labels drawn from softmax(z); the reported probabilities are softmax(z * T)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=(n, k))
    true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=p) for p in true])
    shown = np.exp(z * temperature) / np.exp(z * temperature).sum(1, keepdims=True)
    return shown, y


def test_temperature_recovers_the_overconfidence_and_keeps_the_labels():
    proba, y = overconfident()
    cal = fit_calibrator("temperature", proba, y)
    assert isinstance(cal, TemperatureScaling)
    assert cal.temperature == pytest.approx(3.0, rel=0.15)
    fixed = cal.transform(proba)
    assert np.allclose(fixed.sum(1), 1.0)
    assert (fixed.argmax(1) == proba.argmax(1)).all()
    assert ece(fixed, y) < 0.5 * ece(proba, y)
    assert log_loss(fixed, y) < log_loss(proba, y)


def test_isotonic_lowers_ece_and_gives_distributions():
    proba, y = overconfident(seed=1)
    cal = fit_calibrator("isotonic", proba, y)
    assert isinstance(cal, IsotonicCalibration)
    fixed = cal.transform(proba)
    assert np.allclose(fixed.sum(1), 1.0) and (fixed >= 0).all()
    assert ece(fixed, y) < 0.5 * ece(proba, y)


def test_unknown_calibration_names_the_valid_ones():
    with pytest.raises(InputError, match=r"calibration must be one of \['temperature', "
                                         r"'isotonic'\] or None; got 'platt'"):
        fit_calibrator("platt", np.full((2, 2), 0.5), np.array([0, 1]))


def test_temperature_is_not_driven_by_rows_whose_label_got_no_probability():
    # calibrated rows, but 10% carry the label the model gave least (late fusion on unseen
    # groups): the log-loss temperature flattens every row for them, the Brier one does not
    rng = np.random.default_rng(0)
    z = rng.normal(scale=3.0, size=(3000, 6))
    proba = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(6, p=p) for p in proba])
    odd = rng.random(3000) < 0.1
    y[odd] = proba[odd].argmin(1)
    brier_t = TemperatureScaling.fit(proba, y)
    nll_t = TemperatureScaling.fit(proba, y, objective="log_loss")
    assert brier_t.temperature < 1.5 < nll_t.temperature
    assert ece(brier_t.transform(proba), y) < 0.5 * ece(nll_t.transform(proba), y)
    assert ece(brier_t.transform(proba), y) < ece(proba, y)


def test_vector_scaling_fixes_a_per_class_bias_temperature_cannot():
    from mmfuse.uncertainty.calibration import VectorScaling

    proba, y = overconfident(temperature=1.0)
    shifted = proba * np.array([4.0, 1.0, 1.0, 1.0])  # class 0 over-predicted
    shifted /= shifted.sum(1, keepdims=True)
    vector = VectorScaling.fit(shifted, y)
    temperature = fit_calibrator("temperature", shifted, y)
    assert vector.bias[0] < min(vector.bias[1:])  # the shift learned back
    assert ece(vector.transform(shifted), y) < ece(temperature.transform(shifted), y)
    assert np.allclose(vector.transform(shifted).sum(1), 1.0)
