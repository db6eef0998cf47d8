"""Outer splits (stratified, grouped whenever groups exist) and the fold-mean interval."""

import numpy as np
import pytest
from sklearn.model_selection import KFold

from mmfuse import InputError
from mmfuse.evaluate import make_splits, mean_ci95


def test_grouped_outer_splits_never_share_a_group():
    y = np.repeat(np.arange(3), 40)
    groups = np.tile(np.arange(6), 20)
    splits, info = make_splits(y, groups, 3, 0)
    assert info == {"kind": "stratified-group", "n_splits": 3}
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
    splits, info = make_splits(y, groups, "loso", 0)
    assert info == {"kind": "leave-one-group-out", "n_splits": 6}


def test_grouped_outer_splits_are_stratified_with_fallbacks():
    rng = np.random.RandomState(0)
    y, groups = [], []
    for g in range(15):
        for c in ([0, 1] if g < 10 else [1, 2]):
            n = rng.randint(3, 15)
            y += [c] * n
            groups += [g] * n
    y, groups = np.array(y), np.array(groups)
    splits, info = make_splits(y, groups, 5, 0)
    assert info == {"kind": "stratified-group", "n_splits": 5}
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])
        assert set(y[train]) == {0, 1, 2}
    again, _ = make_splits(y, groups, {"kind": "stratified-group", "n_splits": 5}, 0)
    assert all((a[1] == b[1]).all() for a, b in zip(splits, again))
    # more folds than groups: leave one group out
    _, info = make_splits(y, groups, 40, 0)
    assert info == {"kind": "leave-one-group-out", "n_splits": 15}
    _, info = make_splits(y, groups, {"kind": "loso"}, 0)
    assert info["kind"] == "leave-one-group-out"
    with pytest.raises(InputError, match="at least 2 groups"):
        make_splits(y, np.zeros(len(y)), 5, 0)
    with pytest.raises(InputError, match="must be grouped"):
        make_splits(y, groups, {"kind": "stratified", "n_splits": 3}, 0)
    with pytest.raises(InputError, match="integer >= 2 or 'loso'"):
        make_splits(y, groups, 1, 0)
    # a class held by one group only is named in a warning
    lonely = np.where(groups == 14, 3, y)
    with pytest.warns(UserWarning, match=r"classes \[3\] occur in a single group"):
        make_splits(lonely, groups, 5, 0)


def test_split_specs_and_errors():
    y = np.repeat([0, 1], 10)
    _, info = make_splits(y, None, {"kind": "repeated-stratified", "n_splits": 2, "n_repeats": 3}, 0)
    assert info == {"kind": "repeated-stratified", "n_splits": 2, "n_repeats": 3}
    splits, info = make_splits(y, None, KFold(4), 0)
    assert len(splits) == 4
    with pytest.raises(InputError, match="smallest class has 10 samples, fewer than cv=11"):
        make_splits(y, None, 11, 0)
    with pytest.raises(InputError, match="needs a group column"):
        make_splits(y, None, "loso", 0)
    with pytest.raises(InputError, match="at least 2 groups"):
        make_splits(y, np.zeros(20), 5, 0)


def test_mean_ci95():
    mean, ci = mean_ci95([0.5, 0.7])
    assert mean == pytest.approx(0.6) and ci[0] < 0.6 < ci[1]
    assert mean_ci95([0.8]) == (0.8, [0.8, 0.8])
