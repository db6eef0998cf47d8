import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from conftest import make_views
from mmfuse import InputError
from mmfuse.fusion import create_fusion, list_fusions
from mmfuse.splits import inner_splits
from mmfuse.fusion.weights import simplex_grid

CLASSICAL = ["early", "weighted", "late", "stacking", "seed-baseline"]


def split(views, y, n_train):
    tr = {k: v[:n_train] for k, v in views.items()}
    te = {k: v[n_train:] for k, v in views.items()}
    return tr, y[:n_train], te, y[n_train:]


@pytest.mark.parametrize("name", CLASSICAL)
def test_strategy_fits_predicts_and_fuses(name):
    views, y = make_views(n=500)
    tr, ytr, te, yte = split(views, y, 350)
    labels = np.array(["cat", "dog", "eel", "fox"])
    # weighted's default space is the seed's padded sum of features, where these two views'
    # informative columns collide (as for the seed): the fusion check uses class scores
    params = {"projection": "class-scores"} if name == "weighted" else {}
    f = create_fusion(name, random_state=0, **params).fit(tr, labels[ytr])
    proba = f.predict_proba(te)
    assert proba.shape == (150, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(f.predict(te)) <= set(labels)
    assert f.classes_.tolist() == labels.tolist()
    assert f.modality_weights_ is None or abs(sum(f.modality_weights_.values()) - 1) < 1e-6
    if name != "seed-baseline":
        # each view alone is at most ~0.5 accurate (it sees half the label); fusion must combine them
        assert f.score(te, labels[yte]) > 0.65


def test_registry_lists_and_rejects_unknown():
    names = {f["name"] for f in list_fusions()}
    assert set(CLASSICAL) <= names
    with pytest.raises(InputError, match="unknown fusion strategy 'magic'; valid names: .*late"):
        create_fusion("magic")


@pytest.mark.parametrize("name", ["late", "weighted", "stacking"])
def test_cv_weights_ignore_a_noise_modality(name):
    views, y = make_views(n=600, noise_view=True)
    # (stacking: its meta-model's own weights, without the one-SE fallback)
    params = {"weighted": {"projection": "class-scores"},
              "stacking": {"fallback": False}}.get(name, {})
    f = create_fusion(name, random_state=0, **params).fit(views, y)
    w = f.modality_weights_
    assert w["noise"] < min(w["a"], w["b"])


def test_stacking_falls_back_to_a_simple_combination_that_the_meta_model_does_not_beat():
    from mmfuse.fusion.stacking import StackingFusion

    views, y = make_views(n=600, noise_view=True)
    f = create_fusion("stacking", random_state=0).fit(views, y)
    assert f.meta_fallback_ in {"equal", "single:a", "single:b", "single:noise"}
    scores = f.meta_fold_scores_
    assert set(scores) == {"meta", "equal", "single:a", "single:b", "single:noise"}
    # the meta-model did not beat the fallback by more than one SE of the paired differences
    from mmfuse._stats import beats_by_one_se

    assert not beats_by_one_se(scores["meta"], scores[f.meta_fallback_])
    # it predicts with the fallback, and its weights say which modalities that uses
    probas = {m: np.full((3, 4), 0.25) for m in ("a", "b", "noise")}
    probas["a"][0] = [0.7, 0.1, 0.1, 0.1]
    np.testing.assert_allclose(f._predict_meta(probas, {}), f._simple_proba(f.meta_fallback_,
                                                                            probas))
    assert abs(sum(f.modality_weights_.values()) - 1) < 1e-9
    kept = StackingFusion(random_state=0, fallback=False).fit(views, y)
    assert kept.meta_fallback_ is None
    with pytest.raises(InputError, match="fallback must be True or False"):
        StackingFusion(fallback="yes").fit(views, y)


def test_stacking_simple_combinations_handle_missing_modalities():
    from mmfuse.fusion.stacking import StackingFusion

    f = StackingFusion()
    f.prior_ = np.array([0.5, 0.25, 0.25])
    nan = np.full(3, np.nan)
    probas = {"a": np.array([[0.8, 0.1, 0.1], nan, nan]),
              "b": np.array([[0.2, 0.4, 0.4], [0.1, 0.8, 0.1], nan])}
    single_a = f._simple_proba("single:a", probas)
    np.testing.assert_allclose(single_a[0], [0.8, 0.1, 0.1])
    # a row that lacks a: the equal-weight mean of the others' log-probabilities (late
    # fusion's rule for a missing modality)
    np.testing.assert_allclose(single_a[1], [0.1, 0.8, 0.1])
    np.testing.assert_allclose(single_a[2], [0.5, 0.25, 0.25])  # none: the prior
    equal = f._simple_proba("equal", probas)
    expected = np.sqrt([0.8 * 0.2, 0.1 * 0.4, 0.1 * 0.4])
    np.testing.assert_allclose(equal[0], expected / expected.sum())


def test_relative_and_dict_weights():
    views, y = make_views(n=400, noise_view=True)
    rel = create_fusion("late", weights="relative", random_state=0).fit(views, y)
    assert rel.modality_weights_["noise"] < 0.1
    fixed = create_fusion("late", weights={"a": 3, "b": 1, "noise": 0}).fit(views, y)
    assert fixed.modality_weights_ == pytest.approx({"a": 0.75, "b": 0.25, "noise": 0.0})


@pytest.mark.parametrize("weights, match", [
    ("magic", "weights must be one of"),
    ({"zzz": 1.0}, "does not have: \\['zzz'\\]"),
    ({"a": -1.0, "b": 1.0}, ">= 0"),
])
def test_bad_weights(weights, match):
    views, y = make_views(n=100)
    with pytest.raises(InputError, match=match):
        create_fusion("late", weights=weights).fit(views, y)


def test_late_cv_falls_back_to_best_single_when_fusion_does_not_help():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    good = rng.normal(size=(300, 4)) + 3 * np.eye(3)[y] @ rng.normal(size=(3, 4))
    views = {"good": good, "noise": rng.normal(size=(300, 30))}
    f = create_fusion("late", random_state=0).fit(views, y)
    # the guard chose something at least as accurate out-of-fold as the best single modality
    assert max(f.oof_accuracy_.values()) == f.oof_accuracy_[max(
        f.oof_accuracy_, key=f.oof_accuracy_.get)]
    assert f.modality_weights_["good"] > 0.9


def test_one_class_and_bad_y_are_clear_errors():
    views, y = make_views(n=50)
    with pytest.raises(InputError, match="at least 2 classes"):
        create_fusion("late").fit(views, np.zeros(50))
    with pytest.raises(InputError, match="y must be 1-D with 50 labels"):
        create_fusion("late").fit(views, np.zeros(49))


def test_predict_needs_training_modalities():
    views, y = make_views(n=120)
    f = create_fusion("early").fit(views, y)
    with pytest.raises(InputError, match="lack modalities the model was trained on: \\['b'\\]"):
        f.predict({"a": views["a"]})


def test_custom_classifier_is_cloned_not_fitted_in_place():
    views, y = make_views(n=200)
    rf = RandomForestClassifier(n_estimators=10, random_state=0)
    create_fusion("late", classifier=rf, weights="equal").fit(views, y)
    assert not hasattr(rf, "estimators_")


def test_inner_splits_are_grouped():
    y = np.repeat([0, 1], 30)
    groups = np.tile(np.arange(6), 10)
    for train, test in inner_splits(y, groups, 3, 0):
        assert not set(groups[train]) & set(groups[test])


def _skewed_groups():
    """12 groups of 3 classes with very unequal class mixes (class 2 in 4 groups only)."""
    rng = np.random.RandomState(0)
    y, groups = [], []
    for g in range(12):
        classes = [0, 1] if g < 8 else [1, 2]
        for c in classes:
            n = rng.randint(3, 15)
            y += [c] * n
            groups += [g] * n
    return np.array(y), np.array(groups)


def test_inner_splits_are_stratified_grouped_shuffled_and_seeded():
    y, groups = _skewed_groups()
    a = inner_splits(y, groups, 4, 0)
    assert len(a) == 4
    for train, test in a:
        assert not set(groups[train]) & set(groups[test])
        # stratified: every training fold keeps every class (GroupKFold lost class 2 here)
        assert set(y[train]) == {0, 1, 2}
    b = inner_splits(y, groups, 4, 0)
    assert all((x[1] == z[1]).all() for x, z in zip(a, b))  # seeded
    # groups with the same class mix are dealt in an order shuffled by the seed
    y, groups = np.repeat([0, 1], 60), np.tile(np.arange(12), 10)
    tests = [{frozenset(groups[te]) for _, te in inner_splits(y, groups, 4, s)} for s in range(4)]
    assert len({frozenset(t) for t in tests}) > 1


def test_inner_split_fallbacks():
    y = np.repeat([0, 1], 6)
    # no more groups than folds: one fold per group (leave one group out)
    groups = np.repeat(np.arange(3), 4)
    splits = inner_splits(y, groups, 5, 0)
    assert len(splits) == 3 and all(len(set(groups[te])) == 1 for _, te in splits)
    assert inner_splits(y, np.zeros(12), 5, 0) == []  # one group: nothing to hold out
    # no groups: stratified, folds capped by the smallest class
    y = np.array([0] * 10 + [1] * 3)
    splits = inner_splits(y, None, 5, 0)
    assert len(splits) == 3 and all(set(y[te]) == {0, 1} for _, te in splits)
    assert inner_splits(np.array([0] * 5 + [1]), None, 5, 0) == []


def test_simplex_grid():
    g = simplex_grid(3, 0.5)
    assert len(g) == 6
    np.testing.assert_allclose(g.sum(axis=1), 1.0)


def test_missing_rows_are_renormalised_in_late_fusion():
    views, y = make_views(n=400)
    f = create_fusion("late", random_state=0).fit(views, y)
    te = {k: v[:20].copy() for k, v in views.items()}
    te["b"][:10] = np.nan  # first ten rows have only view a
    proba = f.predict_proba(te)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    only_a = f.experts_["a"].predict_proba(te["a"][:10], np.ones(10, bool))
    # with one modality present, the fused prediction follows that modality's ranking
    assert (proba[:10].argmax(1) == only_a.argmax(1)).all()


def test_seed_baseline_sums_in_the_views_precision():
    # the seed's 0.5·f1 + 0.5·f2 of float32 features is a float32 sum; float64 views stay
    # float64; the model is the same either way (to the solver's tolerance)
    views, y = make_views(n=300)
    tr, ytr, te, _ = split(views, y, 200)
    fits = {}
    for dtype in (np.float32, np.float64):
        cast = {k: v.astype(dtype) for k, v in tr.items()}
        f = create_fusion("seed-baseline").fit(cast, ytr)
        present = {k: np.ones(len(v), bool) for k, v in cast.items()}
        assert f._sum(cast, present).dtype == dtype
        fits[dtype] = f.predict_proba({k: v.astype(dtype) for k, v in te.items()})
    np.testing.assert_allclose(fits[np.float32], fits[np.float64], atol=1e-3)


def test_stacking_falling_back_to_one_modality_predicts_with_that_modality_alone():
    """A fallback to one modality is that modality's model: its expert fitted on every
    training row (as the single-modality row is), not the inner-fold experts averaged."""
    from mmfuse.fusion.experts import fit_experts

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    strong = (rng.normal(size=(300, 6)) + 1.5 * np.eye(4)[y] @ rng.normal(size=(4, 6))
              ).astype(np.float32)
    noise = rng.normal(size=(300, 60)).astype(np.float32)  # confident, and wrong
    views = {"a": strong, "b": noise}
    f = create_fusion("stacking", random_state=0).fit(views, y)
    assert f.meta_fallback_ == "single:a"
    alone = fit_experts({"a": strong}, y, {"a": np.ones(300, bool)}, None, 0)["a"]
    np.testing.assert_allclose(f.predict_proba(views),
                               alone.predict_proba(strong, np.ones(300, bool)), rtol=1e-6)


def test_stacking_falling_back_to_the_equal_mean_predicts_as_late_fusion_with_equal_weights():
    """With no meta-model, stacking is the simple combination it fell back to: its experts
    fitted on every training row, as late fusion's equal form fits them."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    centres = rng.normal(size=(2, 3, 5))
    views = {m: (rng.normal(size=(300, 5)) + 0.8 * centres[i][y]).astype(np.float32)
             for i, m in enumerate(("a", "b"))}
    f = create_fusion("stacking", random_state=0).fit(views, y)
    assert f.meta_fallback_ == "equal"
    late = create_fusion("late", weights="equal", random_state=0).fit(views, y)
    np.testing.assert_allclose(f.predict_proba(views), late.predict_proba(views), rtol=1e-6)


@pytest.mark.parametrize("equal, expected", [([0.6, 0.5, 0.7], "single:a"),
                                             ([0.8, 0.8, 0.9], "equal")])
def test_stacking_falls_back_to_the_equal_mean_only_when_it_beats_the_best_single_by_one_se(
        equal, expected):
    """Parsimony between the simple combinations: the equal-weight mean (every modality)
    replaces the best single modality only when it beats it by more than one SE."""
    from mmfuse.fusion.stacking import StackingFusion

    splits = [(None, np.arange(10 * j, 10 * j + 10)) for j in range(3)]
    y = np.zeros(30, dtype=int)
    wanted = {"equal": equal, "single:a": [0.5, 0.6, 0.6], "single:b": [0.3, 0.3, 0.3]}

    def proba(name, probas):  # per-fold accuracies as wanted (class 0 is right)
        out = np.tile([0.0, 1.0], (30, 1))
        for j, acc in enumerate(wanted[name]):
            out[10 * j: 10 * j + round(10 * acc)] = [1.0, 0.0]
        return out

    f = StackingFusion()
    f.meta_fold_scores_ = {"meta": [0.4, 0.4, 0.4]}
    f._simple_proba = proba
    assert f._simple_fallback({"a": None, "b": None}, y, splits) == expected
