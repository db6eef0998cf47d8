"""Per-view classifiers of the per-modality experts (mmfuse.fusion.experts)."""

import numpy as np
from sklearn.base import clone

from mmfuse.fusion import create_fusion
from mmfuse.fusion.experts import ExpertsCache, fit_experts, out_of_fold_probas
from mmfuse.fusion.linear import ANY_VIEW, SplitExperts

from conftest import make_views


def _data():
    views, y = make_views(n=240, seed=1)
    views["ab"] = np.hstack([views["a"], views["b"]])  # one view made of two encoders
    views = {m: views[m] for m in ("a", "ab")}
    present = {m: np.ones(len(y), bool) for m in views}
    return views, y, present, np.arange(len(y)) // 6


def test_each_view_expert_gets_its_own_classifier_and_memo_entry():
    views, y, present, g = _data()
    split = SplitExperts(widths=(12, 8))
    per_view = {ANY_VIEW: None, "ab": split}
    base = out_of_fold_probas(views, y, present, g, None, 4, 0)
    own = out_of_fold_probas(views, y, present, g, per_view, 4, 0)
    np.testing.assert_array_equal(base["a"], own["a"])  # the base classifier elsewhere
    assert not np.allclose(base["ab"], own["ab"])       # separate experts on "ab"
    alone = out_of_fold_probas({"ab": views["ab"]}, y, {"ab": present["ab"]}, g, split, 4, 0)
    np.testing.assert_array_equal(own["ab"], alone["ab"])
    cache = ExpertsCache()  # the cache keeps the two classifiers apart, in either order
    first = out_of_fold_probas(views, y, present, g, per_view, 4, 0, experts_cache=cache)
    second = out_of_fold_probas(views, y, present, g, None, 4, 0, experts_cache=cache)
    np.testing.assert_array_equal(first["ab"], own["ab"])
    np.testing.assert_array_equal(second["ab"], base["ab"])
    experts = fit_experts(views, y, present, per_view, 0)
    assert isinstance(experts["ab"].model_, SplitExperts)
    assert not isinstance(experts["a"].model_, SplitExperts)


def test_strategies_take_a_per_view_classifier_dict():
    views, y, present, g = _data()
    per_view = {ANY_VIEW: None, "ab": SplitExperts(widths=(12, 8))}
    fitted = {}
    for name in ("late", "stacking", "weighted", "early"):
        strategy = create_fusion(name, classifier=per_view, cv=3, random_state=0)
        assert clone(strategy).get_params()["classifier"]["ab"].widths == (12, 8)
        proba = strategy.fit(views, y, present, g).predict_proba(views, present)
        assert proba.shape == (len(y), 4) and np.allclose(proba.sum(axis=1), 1.0)
        fitted[name] = strategy
    for name in ("late", "stacking"):
        # inner-fold experts averaged, or (stacking that fell back to this modality) its
        # expert fitted on every training row
        expert = fitted[name].experts_["ab"]
        assert all(isinstance(e.model_, SplitExperts)
                   for e in getattr(expert, "experts", [expert]))


def test_two_strategies_given_one_cache_fit_the_experts_once(monkeypatch):
    import mmfuse.fusion.experts as experts

    views, y = make_views(n=240)
    groups = np.arange(len(y)) // 10
    fits = []
    real = experts.ModalityExpert.fit
    monkeypatch.setattr(experts.ModalityExpert, "fit",
                        lambda self, *a, **k: fits.append(1) or real(self, *a, **k))

    def fit_both(cache):
        fits.clear()
        out = [create_fusion(name, cv=4, random_state=0).fit(views, y, groups=groups,
                                                            experts_cache=cache)
               for name in ("late", "stacking")]
        return out, len(fits)

    alone, n_alone = fit_both(None)
    cache = ExpertsCache()
    shared, n_shared = fit_both(cache)
    assert n_shared == 2 * 4  # one inner CV of each modality's expert, for both strategies
    assert n_alone == 2 * n_shared * 2  # alone: each strategy fits them twice (oof, experts)
    assert cache.memo and cache.rows is None
    for a, b in zip(alone, shared):
        np.testing.assert_array_equal(a.predict_proba(views), b.predict_proba(views))
        assert "_experts_cache" not in vars(b)  # held for the fit only


def test_early_fusion_of_one_whole_view_is_its_expert_and_shares_its_fit(monkeypatch):
    """The evaluation's single-modality row (early fusion on one view) and a late fusion
    refit on the same rows fit one expert between them, to the bit the model each fitted
    alone (dense and sparse views)."""
    import mmfuse.fusion.early as early
    from scipy import sparse

    views, y = make_views(n=240)
    views["t"] = sparse.random(240, 30, density=0.2, random_state=0, format="csr",
                               dtype=np.float32)
    from sklearn.linear_model import LogisticRegression

    fits = []
    real = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit",
                        lambda self, *a, **k: fits.append(1) or real(self, *a, **k))
    for m in ("a", "t"):
        one = {m: views[m]}
        cache = ExpertsCache()
        create_fusion("late", weights="equal").fit(views, y, experts_cache=cache)
        fits.clear()
        shared = create_fusion("early").fit(one, y, experts_cache=cache)
        assert fits == []  # no classifier fitted: the late fusion's expert of m
        with monkeypatch.context() as patched:  # the fit as it was: its own design
            patched.setattr(early.EarlyFusion, "_is_the_expert", lambda *a: False)
            own = create_fusion("early").fit(one, y)
        assert np.array_equal(shared.model_.coef_, own.model_.coef_)
        assert np.array_equal(shared.model_.intercept_, own.model_.intercept_)
        assert np.array_equal(shared.predict_proba(one), own.predict_proba(one))
    # not the expert: a missing row (zeros and no rows dropped), or two views
    present = {"a": np.arange(240) % 9 > 0}
    assert not early.EarlyFusion()._is_the_expert({"a": views["a"]}, present, "equal")
