"""Membership attacks on predicted probabilities."""

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.privacy.audit import membership_audit


def _proba(rng, y, boost):
    p = rng.dirichlet([1, 1, 1], len(y))
    p[np.arange(len(y)), y] += boost
    return p / p.sum(axis=1, keepdims=True)


def test_no_leak_gives_auc_near_half_and_a_leak_is_found():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    same = membership_audit(_proba(rng, y, 0.5), y, _proba(rng, y, 0.5), y, [0, 1, 2],
                            n_bootstrap=300)
    for attack in same.attacks:
        assert attack.auc_ci95[0] < 0.5 < attack.auc_ci95[1]
    leaky = membership_audit(_proba(rng, y, 3.0), y, _proba(rng, y, 0.5), y, [0, 1, 2],
                             n_bootstrap=300)
    assert leaky.worst.auc > 0.8 and leaky.worst.auc_ci95[0] > 0.5
    assert {a.name for a in leaky.attacks} == {"loss", "confidence"}
    assert leaky.to_dict()["worst_auc"] == leaky.worst.auc


def test_unknown_labels_count_as_zero_probability():
    p = np.array([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]])
    res = membership_audit(p, ["a", "b", "zzz"], p, ["b", "a", "a"], ["a", "b"], n_bootstrap=50)
    assert res.accuracy_members == pytest.approx(2 / 3)


def test_bad_shapes_are_clear_errors():
    p = np.full((4, 2), 0.5)
    with pytest.raises(InputError, match="non-members: expected probabilities of shape"):
        membership_audit(p, [0, 1, 0, 1], p[:, :1], [0, 1, 0, 1], [0, 1])
    with pytest.raises(InputError, match="n_bootstrap"):
        membership_audit(p, [0, 1, 0, 1], p, [0, 1, 0, 1], [0, 1], n_bootstrap=1)
