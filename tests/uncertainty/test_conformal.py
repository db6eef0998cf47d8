import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.uncertainty.conformal import (ConformalSets, check_coverage, check_score,
                                          quantile, row_uniforms, score_matrix, thresholds)


def probas(n, k=5, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=2.0, size=(n, k))
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.array([rng.choice(k, p=row) for row in p])  # calibrated by construction
    return p, y


def test_quantile_is_the_finite_sample_rank():
    scores = np.arange(1, 10) / 10  # 9 scores
    assert quantile(scores, 0.8) == pytest.approx(0.8)  # ceil(10 * 0.8) = 8th smallest
    assert quantile(scores, 0.95) == float("inf")  # ceil(10 * 0.95) = 10 > 9
    assert quantile(np.array([]), 0.9) == float("inf")


@pytest.mark.parametrize("score", ["aps", "raps", "lac"])
def test_sets_cover_exchangeable_rows_at_the_target(score):
    p, y = probas(6000, seed=1)
    cal, test = slice(0, 3000), slice(3000, None)
    sets = ConformalSets(0.9, score, False, {"a": thresholds(p[cal], y[cal], 0.9, score,
                                                             False)})
    s = sets.sets(p[test], np.array(["a"] * 3000))
    cover = s[np.arange(3000), y[test]].mean()
    assert 0.88 <= cover <= 0.92


def test_lac_sets_match_crepes_on_the_same_scores():
    crepes = pytest.importorskip("crepes")
    p, y = probas(1000, seed=2)
    alphas = score_matrix(p, "lac")
    ours = ConformalSets(0.9, "lac", False,
                         {"a": thresholds(p[:600], y[:600], 0.9, "lac", False)})
    theirs = crepes.ConformalClassifier().fit(alphas[np.arange(600), y[:600]])
    expected = theirs.predict_set(alphas[600:], confidence=0.9, smoothing=False)
    assert (ours.sets(p[600:], np.array(["a"] * 400)) == expected.astype(bool)).all()


def test_aps_sets_are_adaptive_and_deterministic():
    p, y = probas(4000, seed=3)
    t = thresholds(p[:2000], y[:2000], 0.9, "aps", False)
    s = ConformalSets(0.9, "aps", False, {"a": t}).sets(p[2000:], np.array(["a"] * 2000))
    confident = p[2000:].max(1) > 0.9
    assert s[~confident].sum(1).mean() > s[confident].sum(1).mean()
    assert (row_uniforms(p) == row_uniforms(p.copy())).all()
    u = row_uniforms(p)
    assert (u > 0).all() and (u < 1).all() and 0.4 < u.mean() < 0.6


def test_mondrian_covers_each_class():
    rng = np.random.default_rng(4)
    p, y = probas(8000, k=3, seed=4)
    # class 2 is made hard: its probability is shrunk, so marginal sets under-cover it
    p[:, 2] *= 0.3
    p /= p.sum(1, keepdims=True)
    order = rng.permutation(8000)
    cal, test = order[:4000], order[4000:]
    marginal = ConformalSets(0.9, "lac", False, {"a": thresholds(p[cal], y[cal], 0.9, "lac",
                                                                 False)})
    mondrian = ConformalSets(0.9, "lac", True, {"a": thresholds(p[cal], y[cal], 0.9, "lac",
                                                                True)})
    pat = np.array(["a"] * 4000)
    for sets, ok in ((marginal, False), (mondrian, True)):
        s = sets.sets(p[test], pat)
        per_class = [s[y[test] == k, k].mean() for k in range(3)]
        assert bool(min(per_class) >= 0.85) is ok


def test_unknown_pattern_uses_the_largest_threshold():
    sets = ConformalSets(0.9, "lac", False, {"a": np.array([0.35]), "b": np.array([0.75])})
    p = np.array([[0.7, 0.3], [0.7, 0.3]])
    s = sets.sets(p, np.array(["a", "a+b"]))
    assert s.tolist() == [[True, False], [True, True]]


def test_bad_settings_are_one_line_errors():
    with pytest.raises(InputError, match="coverage must be a number between 0 and 1"):
        check_coverage(90)
    with pytest.raises(InputError, match=r"conformal_score must be one of \['aps', 'raps', "
                                         r"'lac'\]; got 'thr'"):
        check_score("thr")


@pytest.mark.parametrize("mondrian", [False, True])
def test_worst_fold_threshold_is_the_largest_fold_threshold(mondrian):
    p, y = probas(900, seed=3)
    folds = np.repeat([0, 1, 2], 300)
    # fold 2's labels are shuffled: its own threshold is the largest
    y = y.copy()
    y[600:] = np.random.default_rng(0).permutation(y[600:])
    per_fold = [thresholds(p[folds == f], y[folds == f], 0.9, "aps", mondrian)
                for f in range(3)]
    worst = thresholds(p, y, 0.9, "aps", mondrian, folds=folds)
    assert np.allclose(worst, np.max(per_fold, axis=0))
    pooled = thresholds(p, y, 0.9, "aps", mondrian)
    assert np.all(worst >= pooled) and worst.max() > pooled.max()
