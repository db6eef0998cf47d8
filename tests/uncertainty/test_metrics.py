import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from mmfuse import InputError
from mmfuse.uncertainty.metrics import (brier, ece, ece_floor, ece_of_bins, log_loss,
                                        probability_metrics, reliability, set_metrics)


def test_log_loss_and_brier_match_their_definitions():
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]])
    y = np.array([0, 2, 0])
    assert log_loss(proba, y) == pytest.approx(sk_log_loss(y, proba, labels=[0, 1, 2]))
    expected = np.mean([(0.3 ** 2 + 0.04 + 0.01), (0.01 + 0.01 + 0.04), (0.49 + 0.16 + 0.09)])
    assert brier(proba, y) == pytest.approx(expected)


def test_ece_uses_15_equal_width_bins_of_the_top_label():
    # confidences 0.95 (bin 14) right twice, wrong twice; 0.5 (bin 7) right once
    proba = np.array([[0.95, 0.05]] * 4 + [[0.5, 0.5]])
    y = np.array([0, 0, 1, 1, 0])
    # bin 14: |0.5 - 0.95| * 4 rows; bin 7: |1 - 0.5| * 1 row
    assert ece(proba, y) == pytest.approx((4 * 0.45 + 0.5) / 5)
    bins = reliability(proba, y)
    assert len(bins["edges"]) == 16 and sum(bins["count"]) == 5
    assert bins["count"][14] == 4 and bins["count"][7] == 1


def test_ece_of_perfectly_calibrated_bins_is_zero():
    proba = np.array([[0.75, 0.25]] * 4)
    assert ece(proba, np.array([0, 0, 0, 1])) == pytest.approx(0.0)


def test_set_metrics():
    sets = np.array([[True, False, False], [True, True, False], [False, False, False]])
    out = set_metrics(sets, np.array([0, 2, 1]))
    assert out == pytest.approx({"coverage": 1 / 3, "set_size": 1.0, "singletons": 1 / 3})


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(InputError, match="expected probabilities"):
        probability_metrics(np.ones(3), np.zeros(3))


def test_ece_floor_is_the_ece_of_labels_drawn_from_the_probabilities():
    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=150)
    draws = []
    for seed in range(300):  # the definition, the slow way
        r = np.random.default_rng(seed)
        correct = r.random(150) < proba.max(1)
        y = np.where(correct, proba.argmax(1), (proba.argmax(1) + 1) % 5)
        draws.append(ece(proba, y))
    assert ece_floor(proba) == pytest.approx(np.mean(draws), rel=0.1)
    # the floor falls as rows are added: 1/sqrt(rows per bin)
    many = rng.dirichlet(np.ones(5), size=6000)
    assert ece_floor(many) < 0.3 * ece_floor(proba)
    assert probability_metrics(proba, np.zeros(150, int))["ece_floor"] == ece_floor(proba)


def test_ece_of_bins_matches_ece_and_skips_empty_bins():
    proba = np.array([[0.95, 0.05]] * 4 + [[0.5, 0.5]])
    y = np.array([0, 0, 1, 1, 0])
    bins = reliability(proba, y)
    bins["confidence"] = [None if np.isnan(v) else v for v in bins["confidence"]]
    assert ece_of_bins(bins) == pytest.approx(ece(proba, y))


def test_debiased_ece_removes_part_of_the_finite_sample_floor_and_keeps_real_error():
    from mmfuse.uncertainty.metrics import ece_debiased

    rng = np.random.default_rng(0)
    proba = rng.dirichlet(np.ones(5), size=150)
    plug, debiased = [], []
    for seed in range(40):  # perfectly calibrated: labels drawn from the probabilities
        r = np.random.default_rng(seed)
        correct = r.random(150) < proba.max(1)
        y = np.where(correct, proba.argmax(1), (proba.argmax(1) + 1) % 5)
        plug.append(ece(proba, y))
        debiased.append(ece_debiased(proba, y))
    # measured: 0.054 against 0.087 (the correction is partial at 150 rows in 15 bins)
    assert np.mean(debiased) < 0.7 * np.mean(plug)
    # a model 0.2 more confident than it is right: the error stays
    many = rng.dirichlet(np.ones(5), size=6000)
    correct = rng.random(6000) < np.clip(many.max(1) - 0.2, 0, 1)
    y = np.where(correct, many.argmax(1), (many.argmax(1) + 1) % 5)
    assert ece_debiased(many, y) == pytest.approx(ece(many, y), abs=0.01)
    assert ece_debiased(many, y) > 0.15
    assert probability_metrics(many, y)["ece_debiased"] == ece_debiased(many, y)
