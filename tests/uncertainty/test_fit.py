import numpy as np
import pytest
from conftest import make_views, spy_inner_splits

from mmfuse import InputError, MultimodalClassifier
from mmfuse.uncertainty import fit as fit_module
from mmfuse.uncertainty.fit import ALL, row_patterns
from mmfuse.uncertainty.metrics import ece, set_metrics


def grouped(n=1600, seed=1):
    views, y = make_views(n=n, seed=seed)
    groups = np.arange(n) // 20
    return views, y, groups


def rows(views, mask):
    return {k: v[mask] for k, v in views.items()}


def test_row_patterns_name_the_present_modalities():
    present = {"b": np.array([True, True, False]), "a": np.array([True, False, False])}
    assert row_patterns(present, ["a", "b"]).tolist() == ["a+b", "b", ""]


def test_calibration_folds_are_grouped_and_a_group_never_calibrates_itself(monkeypatch):
    import mmfuse.splits as splits_module

    seen = spy_inner_splits(monkeypatch, splits_module)
    views, y, groups = grouped(n=400)
    MultimodalClassifier(fusion="early", calibration="temperature", coverage=0.9,
                         random_state=0).fit(views, y, groups)
    calls = [(g, s) for g, s in seen if g is not None and len(g) == len(y)]
    assert calls, "the calibration folds were not grouped"
    for g, splits in calls:
        for train, test in splits:
            assert not set(g[train]) & set(g[test])


def test_refits_calibrate_on_ten_inner_folds_or_the_models_cv_when_larger(monkeypatch):
    real, seen = fit_module.out_of_fold, []

    def spy(strategy, views, present, y, groups, n_splits, *args, **kwargs):
        oof = real(strategy, views, present, y, groups, n_splits, *args, **kwargs)
        seen.append((n_splits, len(set(oof["a+b"][2]))))  # (asked, inner folds made)
        return oof

    monkeypatch.setattr(fit_module, "out_of_fold", spy)
    views, y, groups = grouped(n=400)  # 20 groups
    assert fit_module.REFIT_FOLDS == 10
    for cv, folds in ((5, 10), (12, 12)):
        MultimodalClassifier(fusion="early", calibration="temperature", cv=cv,
                             random_state=0).fit(views, y, groups)
        assert seen.pop() == (folds, folds)


@pytest.mark.parametrize("fusion", ["late", "stacking"])
def test_sets_cover_unseen_groups(fusion):
    # coverage is a mean over draws of the groups: one draw of 20 test groups varies by
    # a few points, so three seeded draws are averaged
    coverage, size = [], []
    for seed in (1, 2, 3):
        views, y, groups = grouped(seed=seed)
        train, test = groups < 60, groups >= 60
        clf = MultimodalClassifier(fusion=fusion, calibration="temperature", coverage=0.9,
                                   random_state=0).fit(rows(views, train), y[train],
                                                       groups[train])
        sets = clf.predict_set(rows(views, test))
        assert sets.shape == (test.sum(), 4) and sets.dtype == bool
        out = set_metrics(sets, y[test])
        coverage.append(out["coverage"])
        size.append(out["set_size"])
    assert 0.87 <= np.mean(coverage) <= 0.94 and min(coverage) >= 0.83
    assert np.mean(size) < 2.5  # fused sets are informative (a single view needs 2+)


def test_temperature_keeps_the_labels_and_lowers_ece_of_an_overconfident_model():
    from sklearn.linear_model import LogisticRegression

    views, y, groups = grouped()
    train, test = groups < 60, groups >= 60
    # an almost unregularised model on noisy features is overconfident
    common = dict(fusion="early", classifier=LogisticRegression(C=100.0, max_iter=2000),
                  random_state=0)
    raw = MultimodalClassifier(**common).fit(rows(views, train), y[train], groups[train])
    cal = MultimodalClassifier(calibration="temperature", **common).fit(
        rows(views, train), y[train], groups[train])
    assert (raw.predict(rows(views, test)) == cal.predict(rows(views, test))).all()
    assert cal.uncertainty_.calibrators[ALL].temperature != pytest.approx(1.0)
    assert ece(cal.predict_proba(rows(views, test)), y[test]) <= ece(
        raw.predict_proba(rows(views, test)), y[test]) + 0.005


def test_sets_keep_coverage_when_a_modality_is_missing():
    views, y, groups = grouped()
    train, test = groups < 60, groups >= 60
    clf = MultimodalClassifier(fusion="late", coverage=0.9, random_state=0).fit(
        rows(views, train), y[train], groups[train])
    assert set(clf.uncertainty_.conformal.thresholds) == {"a+b", "a", "b"}
    X = rows(views, test)
    drop = np.random.default_rng(0).random(test.sum()) < 0.5
    X["a"] = X["a"].copy()
    X["a"][drop] = np.nan
    sets = clf.predict_set(X)
    assert set_metrics(sets[drop], y[test][drop])["coverage"] >= 0.86
    # a row without a's information needs larger sets
    assert sets[drop].sum(1).mean() > sets[~drop].sum(1).mean()


def test_params_are_stored_and_checked_at_fit():
    from sklearn.base import clone

    clf = MultimodalClassifier(calibration="platt", coverage=1.5, conformal_score="thr",
                               mondrian="yes")
    assert clone(clf).get_params()["calibration"] == "platt"
    views, y = make_views(n=200)
    with pytest.raises(InputError, match="calibration must be None or one of"):
        clf.fit(views, y)
    with pytest.raises(InputError, match=r"coverage must be None or a number in \(0, 1\)"):
        clf.set_params(calibration=None).fit(views, y)
    with pytest.raises(InputError, match="conformal_score must be one of"):
        clf.set_params(coverage=0.9).fit(views, y)
    with pytest.raises(InputError, match="mondrian must be True or False"):
        clf.set_params(conformal_score="lac").fit(views, y)


def test_predict_set_without_coverage_says_what_to_do():
    views, y = make_views(n=200)
    clf = MultimodalClassifier(fusion="early", calibration="temperature").fit(views, y)
    assert clf.uncertainty_.conformal is None
    with pytest.raises(InputError, match=r"prediction sets need a model fitted with coverage"):
        clf.predict_set(views)
    plain = MultimodalClassifier(fusion="early").fit(views, y)
    assert plain.uncertainty_ is None
    with pytest.raises(InputError, match="coverage"):
        plain.predict_set(views)


def test_epsilon_refuses_calibration():
    views, y = make_views(n=200)
    with pytest.raises(InputError, match="outside the privacy budget"):
        MultimodalClassifier(fusion="early", epsilon=5.0, coverage=0.9).fit(views, y)


def test_too_few_rows_for_inner_folds_is_a_clear_error():
    views, y = make_views(n=40)
    with pytest.raises(InputError, match="calibration and coverage need inner folds"):
        MultimodalClassifier(fusion="early", coverage=0.9).fit(views, y, np.zeros(40))


def test_too_few_groups_for_inner_folds_is_refused_before_the_fusion_is_fitted(monkeypatch):
    from mmfuse.fusion.early import EarlyFusion

    def fit(*args, **kwargs):
        raise AssertionError("the fusion was fitted before the calibration settings failed")

    monkeypatch.setattr(EarlyFusion, "fit", fit)
    views, y = make_views(n=200)
    with pytest.raises(InputError, match="calibration and coverage need inner folds"):
        MultimodalClassifier(fusion="early", calibration="temperature").fit(
            views, y, np.zeros(200))


def test_out_of_fold_uses_every_training_row_once_per_pattern():
    views, y, groups = grouped(n=400)
    from mmfuse.fusion import create_fusion

    present = {k: np.ones(len(y), bool) for k in views}
    oof = fit_module.out_of_fold(create_fusion("early"), views, present, y, groups, 5, 0, 4)
    assert set(oof) == {"a+b", "a", "b"}
    assert all(len(lab) == len(y) for _, lab, _ in oof.values())
    for _, _, fold in oof.values():  # each row's inner fold: 5 folds of about 80 rows
        assert np.bincount(fold).tolist() == [len(y) // 5] * 5 or len(set(fold)) == 5


def test_inner_folds_refit_the_stateful_encoders_on_their_training_rows():
    from conftest import VocabEncoder, number_frame

    df, y = number_frame(n=150)
    groups = np.arange(150) // 5
    VocabEncoder.fitted_on.clear()
    MultimodalClassifier(encoders={"left": "test-vocab", "right": "test-number"},
                         fusion="late", cv=3, coverage=0.9, random_state=0).fit(df, y, groups)
    # once on every training row, then once per held-out inner fold (10, REFIT_FOLDS,
    # above the model's cv of 3) on its training rows only
    assert VocabEncoder.fitted_on[0] == 150
    assert len(VocabEncoder.fitted_on) == 1 + fit_module.REFIT_FOLDS
    assert all(n == 135 for n in VocabEncoder.fitted_on[1:])


def test_evaluation_refits_the_stateful_encoders_in_each_inner_fold():
    from conftest import VocabEncoder, number_frame

    from mmfuse.evaluate import evaluate
    from mmfuse.uncertainty.evaluation import UncertaintySpec

    df, y = number_frame(n=150)
    VocabEncoder.fitted_on.clear()
    evaluate(df, y, encoders={"left": "test-vocab", "right": "test-number"}, cv=2,
             inner_cv=3, strategies=["late"], singles=False, baseline=False, n_jobs=1,
             uncertainty=UncertaintySpec("temperature"))
    # per outer fold: once on its 75 training rows, then on each of its 10 held-out inner
    # folds' training rows (REFIT_FOLDS, above the evaluation's inner_cv of 3), ~67 each
    assert sorted(VocabEncoder.fitted_on, reverse=True)[:2] == [75, 75]
    assert len(VocabEncoder.fitted_on) == 2 + 2 * fit_module.REFIT_FOLDS
    assert all(n <= 68 for n in sorted(VocabEncoder.fitted_on)[:20])


@pytest.mark.parametrize("fusion", ["late", "stacking"])
def test_meta_strategies_calibrate_on_the_final_combination_of_the_inner_experts(fusion):
    # the calibration rows are the final model's meta level (its weights, its meta-model)
    # applied to the very out-of-fold probabilities of the inner-fold experts it is built
    # on, not clones of the whole strategy refit on inner folds (nested twice)
    from sklearn.base import clone

    from mmfuse.fusion import create_fusion
    from mmfuse.fusion.experts import ExpertsCache, out_of_fold_probas

    views, y, groups = grouped(n=400)
    present = {k: np.ones(len(y), bool) for k in views}
    strategy, cache = create_fusion(fusion, random_state=0), ExpertsCache()
    _, oof = fit_module.fit_uncertainty(strategy, views, present, y, groups,
                                        calibration="temperature", coverage=0.9,
                                        random_state=0, experts_cache=cache,
                                        calibrate_on="experts")
    final = clone(strategy).fit(views, y, present, groups, experts_cache=cache)
    experts = out_of_fold_probas(views, y, present, groups, None, 5, 0, experts_cache=cache)
    np.testing.assert_allclose(oof["a+b"][0], final.predict_meta(experts, present))
    alone = {"a": experts["a"], "b": np.full_like(experts["b"], np.nan)}
    np.testing.assert_allclose(oof["a"][0], final.predict_meta(
        alone, {"a": present["a"], "b": ~present["b"]}))
    assert oof["a+b"][1].tolist() == y.tolist()
    fold = oof["a+b"][2]  # each row from the experts of the one inner fold holding its group
    assert all(len(set(fold[groups == g])) == 1 for g in np.unique(groups))
    assert len(set(fold)) == 5


def test_calibrating_on_the_experts_fits_no_expert_beyond_the_model_s_own(monkeypatch):
    from mmfuse.fusion import create_fusion
    from mmfuse.fusion import experts as experts_module
    from mmfuse.fusion.experts import ExpertsCache

    views, y, groups = grouped(n=400)
    present = {k: np.ones(len(y), bool) for k in views}
    fits = []
    original = experts_module.ModalityExpert.fit

    def counted(self, *args, **kwargs):
        fits.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(experts_module.ModalityExpert, "fit", counted)
    create_fusion("late", random_state=0).fit(views, y, present, groups,
                                              experts_cache=ExpertsCache())
    plain = len(fits)
    fits.clear()
    cache = ExpertsCache()
    fit_module.fit_uncertainty(create_fusion("late", random_state=0), views, present, y,
                               groups, calibration="temperature", coverage=0.9,
                               random_state=0, experts_cache=cache, calibrate_on="experts")
    create_fusion("late", random_state=0).fit(views, y, present, groups, experts_cache=cache)
    assert len(fits) == plain  # the experts cache: the calibration reuses the model's


def test_auto_calibrates_meta_strategies_on_bagged_experts_and_others_on_refits():
    from mmfuse.fusion import create_fusion

    assert fit_module.resolve_calibrate_on(create_fusion("late")) == "bagged"
    assert fit_module.resolve_calibrate_on(create_fusion("stacking")) == "bagged"
    assert fit_module.resolve_calibrate_on(create_fusion("early")) == "refits"


def test_calibrate_on_refits_keeps_the_nested_clones_and_is_checked():
    from mmfuse.fusion import create_fusion

    views, y, groups = grouped(n=400)
    present = {k: np.ones(len(y), bool) for k in views}
    args = (views, present, y, groups)
    _, experts = fit_module.fit_uncertainty(create_fusion("late", random_state=0), *args,
                                            calibration="temperature", coverage=None,
                                            random_state=0, calibrate_on="experts")
    _, refits = fit_module.fit_uncertainty(create_fusion("late", random_state=0), *args,
                                           calibration="temperature", coverage=None,
                                           random_state=0, calibrate_on="refits")
    assert not np.allclose(experts["a+b"][0], refits["a+b"][0])
    with pytest.raises(InputError, match="calibrate_on must be one of"):
        fit_module.fit_uncertainty(create_fusion("late"), *args, calibration="temperature",
                                   coverage=None, calibrate_on="inner")
    with pytest.raises(InputError, match="needs a strategy with a meta level"):
        fit_module.fit_uncertainty(create_fusion("early"), *args, calibration="temperature",
                                   coverage=None, calibrate_on="experts")


def test_bagged_predicts_each_inner_fold_as_the_final_model_predicts_new_rows():
    # calibrate_on="bagged": a held-out inner fold is scored by the final combination
    # averaged over experts cross-fitted inside its inner training fold
    from sklearn.base import clone

    from mmfuse.fusion import create_fusion
    from mmfuse.fusion.experts import cross_fitted_experts, predict_cross_fitted
    from mmfuse.splits import inner_splits

    views, y, groups = grouped(n=400)
    present = {k: np.ones(len(y), bool) for k in views}
    strategy = create_fusion("late", random_state=0)
    _, oof = fit_module.fit_uncertainty(strategy, views, present, y, groups,
                                        calibration="temperature", coverage=None,
                                        random_state=0, calibrate_on="bagged")
    final = clone(strategy).fit(views, y, present, groups)
    # held out: 10 inner folds (REFIT_FOLDS), each predicted by experts cross-fitted on
    # the strategy's own 5 folds of the other 90%, nearer the final model's experts
    train, test = inner_splits(y, groups, fit_module.REFIT_FOLDS, 0)[0]
    test = np.sort(test)
    inner = cross_fitted_experts(rows(views, train), y[train], rows(present, train),
                                 groups[train], None, 5, 0)
    expected = predict_cross_fitted(inner, rows(views, test), rows(present, test),
                                    final.predict_meta)
    proba, labels, fold = oof["a+b"]
    assert len(np.unique(fold)) == fit_module.REFIT_FOLDS == 10
    assert fold[test].tolist() == [0] * len(test) and (fold == 0).sum() == len(test)
    np.testing.assert_allclose(proba[test], expected)
    assert labels.tolist() == y.tolist()


def test_auto_calibrates_the_strategy_it_chose_without_redoing_the_selection(monkeypatch):
    from mmfuse.fusion.auto import AutoFusion

    calls = []
    real = AutoFusion._fit

    def counting(self, *args, **kwargs):
        calls.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AutoFusion, "_fit", counting)
    views, y, groups = grouped(n=400)
    clf = MultimodalClassifier(fusion="auto", fusion_params={"neural": False},
                               calibration="temperature", coverage=0.9,
                               random_state=0).fit(views, y, groups)
    assert len(calls) == 1  # before: once more per inner fold (nested selections)
    chosen, mods = clf.fusion_.calibrated_as()
    assert clf.uncertainty_.modalities == sorted(mods)
    present = {m: np.ones(len(y), bool) for m in mods}
    alone, _ = fit_module.fit_uncertainty(chosen, {m: views[m] for m in mods}, present, y,
                                          groups, calibration="temperature", coverage=0.9,
                                          random_state=0, n_classes=4)
    assert clf.uncertainty_.calibrators[ALL].temperature == pytest.approx(
        alone.calibrators[ALL].temperature)
    pattern = "+".join(sorted(mods))
    assert np.allclose(clf.uncertainty_.conformal.thresholds[pattern],
                       alone.conformal.thresholds[pattern])
    # calibrate_on="refits" keeps the whole selection, redone in each inner fold
    target, *_ = fit_module.calibration_target(clf.fusion_, views, present, "refits")
    assert isinstance(target, AutoFusion)


def test_an_ensemble_is_calibrated_as_its_members_refit_without_redoing_the_selection(
        monkeypatch):
    from mmfuse.fusion.auto import AutoFusion

    monkeypatch.setattr(AutoFusion, "_select_ensemble",
                        lambda self, oof, y, best, *rest: {"late[cv]": 3, "single:b": 1})
    selections = []
    real = AutoFusion._score_candidates

    def counting(self, *args, **kwargs):
        selections.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AutoFusion, "_score_candidates", counting)
    views, y, groups = grouped(n=400)
    clf = MultimodalClassifier(fusion="auto", fusion_params={
        "neural": False, "candidates": ["late"], "ensemble": True},
        calibration="temperature", coverage=0.9, random_state=0).fit(views, y, groups)
    assert clf.fusion_.chosen_name_ == "ensemble(late[cv]+single:b)"
    assert len(selections) == 1  # before: once more per inner fold (nested selections)
    target, mods = clf.fusion_.calibrated_as()
    assert isinstance(target, AutoFusion) and mods == ["a", "b"]
    assert target.get_params()["choice"] == {"late[cv]": 0.75, "single:b": 0.25}
    present = {m: np.ones(len(y), bool) for m in mods}
    alone, _ = fit_module.fit_uncertainty(target, views, present, y, groups,
                                          calibration="temperature", coverage=0.9,
                                          random_state=0, n_classes=4)
    assert clf.uncertainty_.calibrators[ALL].temperature == pytest.approx(
        alone.calibrators[ALL].temperature)


def test_too_few_groups_to_certify_the_coverage_warn_and_are_recorded():
    views, y, _ = grouped(n=400)
    groups = np.arange(len(y)) % 5  # 5 groups: enough for 0.8 (4), not for 0.9 (9)
    assert fit_module.groups_needed(0.9) == 9 and fit_module.groups_needed(0.8) == 4
    with pytest.warns(fit_module.FewCalibrationGroupsWarning, match="5 groups.*at least 9"):
        clf = MultimodalClassifier(fusion="late", coverage=0.9, random_state=0).fit(
            views, y, groups)
    assert clf.uncertainty_.calibration_groups == 5
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", fit_module.FewCalibrationGroupsWarning)
        MultimodalClassifier(fusion="late", coverage=0.8, random_state=0).fit(views, y, groups)
