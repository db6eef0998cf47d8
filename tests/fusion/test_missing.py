"""Missing modalities in every strategy: random holes at fit and predict time, weights
renormalised over the modalities a sample has, and the error table for bad rows."""

import importlib.util
import warnings

import numpy as np
import pytest
from scipy.special import softmax

from conftest import make_views
from mmfuse import InputError, MultimodalClassifier
from mmfuse.fusion import create_fusion
from mmfuse.fusion.late import pooled_log_scores
from mmfuse.fusion.weighted import weighted_sum

CLASSICAL = ["early", "weighted", "late", "stacking", "seed-baseline"]
NEURAL = ["gmu", "attention", "lowrank"]
HAS_TORCH = importlib.util.find_spec("torch") is not None
ALL = CLASSICAL + ["auto"] + [pytest.param(h, marks=pytest.mark.skipif(
    not HAS_TORCH, reason="needs torch")) for h in NEURAL]
# small settings so the whole table runs in seconds
FAST = {"gmu": {"max_epochs": 40, "patience": 6}, "attention": {"max_epochs": 40, "patience": 6},
        "lowrank": {"max_epochs": 40, "patience": 6},
        "auto": {"candidates": ["early", "late", "stacking"], "cv": 3},
        # (class scores: in weighted's default space, the seed's padded sum of features,
        # these synthetic views' informative columns collide, as for the seed baseline)
        "weighted": {"step": 0.25, "projection": "class-scores"}}


def with_holes(views, rate, seed):
    """Each modality missing in ``rate`` of the rows at random, never all of a row's."""
    rng = np.random.default_rng(seed)
    n = len(next(iter(views.values())))
    present = {m: rng.random(n) > rate for m in sorted(views)}
    none = ~np.any(np.stack(list(present.values())), axis=0)
    first = sorted(views)[0]
    present[first][none] = True
    holed = {m: np.where(present[m][:, None], v, np.nan).astype(np.float32)
             for m, v in views.items()}
    return holed, present


@pytest.mark.parametrize("name", ALL)
def test_fits_and_predicts_with_random_holes(name):
    views, y = make_views(n=400, noise_view=True)
    views, present = with_holes(views, 0.3, seed=1)
    tr = {m: v[:300] for m, v in views.items()}
    te = {m: v[300:] for m, v in views.items()}
    f = create_fusion(name, random_state=0, **FAST.get(name, {}))
    # present=None: the NaN rows say which are missing
    f.fit(tr, y[:300])
    proba = f.predict_proba(te)
    assert proba.shape == (100, 4)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    if name != "seed-baseline":
        assert f.score(te, y[300:]) > 0.45  # chance is 0.25; one view alone is ~0.5


@pytest.mark.parametrize("name", ALL)
def test_a_row_with_one_modality_left_uses_it(name):
    views, y = make_views(n=300)
    f = create_fusion(name, random_state=0, **FAST.get(name, {})).fit(views, y)
    only_a = {"a": views["a"][:50], "b": np.full((50, views["b"].shape[1]), np.nan, np.float32)}
    proba = f.predict_proba(only_a)
    assert np.isfinite(proba).all()
    if name != "seed-baseline":
        # view a knows the parity (y % 2): with b missing, that much must survive
        assert np.mean(proba.argmax(1) % 2 == y[:50] % 2) > 0.75


def test_late_renormalises_weights_over_present_modalities():
    views, y = make_views(n=300)
    f = create_fusion("late", weights={"a": 0.8, "b": 0.2}).fit(views, y)
    only_a = {"a": views["a"][:20], "b": np.full((20, 8), np.nan, np.float32)}
    # with b missing, a takes the whole weight: the fused answer is a's expert alone
    expert_a = f.experts_["a"].predict_proba(views["a"][:20], np.ones(20, bool))
    np.testing.assert_allclose(f.predict_proba(only_a), expert_a, atol=1e-6)
    # and the pooled scores are those of a weight renormalised to 1
    probas = {"a": expert_a, "b": np.full_like(expert_a, np.nan)}
    scores = pooled_log_scores(probas, {"a": 0.8, "b": 0.2})
    np.testing.assert_allclose(softmax(scores, axis=1), expert_a, atol=1e-9)


def test_weighted_sum_renormalises_over_present_modalities():
    z = {"a": np.ones((3, 2)), "b": 3 * np.ones((3, 2))}
    present = {"a": np.array([True, True, False]), "b": np.array([True, False, True])}
    out = weighted_sum(z, present, {"a": 0.25, "b": 0.75})
    np.testing.assert_allclose(out[0], 0.25 * 1 + 0.75 * 3)
    np.testing.assert_allclose(out[1], 1.0)  # only a: its weight becomes 1
    np.testing.assert_allclose(out[2], 3.0)  # only b


@pytest.mark.parametrize("name", ["early", "stacking"])
def test_presence_flags_are_learned(name):
    views, y = make_views(n=400)
    views, present = with_holes(views, 0.3, seed=2)
    f = create_fusion(name, random_state=0).fit(views, y, present)
    if name == "early":
        assert f.presence_flags_
        assert f.model_.coef_.shape[1] == 12 + 8 + 2  # both blocks + one flag per modality
    else:
        assert f.meta_[-1].coef_.shape[1] == 2 * (4 + 1)  # per modality: K log-probs + a flag


@pytest.mark.parametrize("name", ALL)
def test_a_training_row_with_no_modality_is_an_error(name):
    views, y = make_views(n=120)
    views = {m: v.copy() for m, v in views.items()}
    for v in views.values():
        v[7] = np.nan
    with pytest.raises(InputError, match="row 7 has no modality at all"):
        create_fusion(name, **FAST.get(name, {})).fit(views, y)


@pytest.mark.parametrize("name", ALL)
def test_a_prediction_row_with_no_modality_gets_the_prior(name):
    views, y = make_views(n=200)
    f = create_fusion(name, random_state=0, **FAST.get(name, {})).fit(views, y)
    te = {m: v[:5].copy() for m, v in views.items()}
    for v in te.values():
        v[2] = np.nan
    proba = f.predict_proba(te)
    np.testing.assert_allclose(proba[2], np.bincount(y) / len(y))
    assert np.isfinite(proba).all()


def test_the_classifier_raises_or_skips_an_empty_row():
    views, y = make_views(n=200)
    clf = MultimodalClassifier(fusion="late", random_state=0).fit(views, y)
    te = {m: v[:5].copy() for m, v in views.items()}
    for v in te.values():
        v[3] = np.nan
    with pytest.raises(InputError, match="row 3 has no usable modality"):
        clf.predict(te)
    skip = MultimodalClassifier(fusion="late", random_state=0, on_error="skip").fit(views, y)
    assert len(skip.predict(te)) == 5


@pytest.mark.parametrize("name", ALL)
def test_a_modality_missing_for_every_training_row_is_dropped_with_a_warning(name):
    views, y = make_views(n=300, noise_view=True)
    views = dict(views)
    views["b"] = np.full_like(views["b"], np.nan)
    f = create_fusion(name, random_state=0, **FAST.get(name, {}))
    with pytest.warns(UserWarning, match=r"dropped: \['b'\]"):
        f.fit(views, y)
    assert f.dropped_modalities_ == ["b"]
    assert f.modalities_ == ["a", "noise"]
    # at prediction the dropped modality may be there; it is ignored
    full, _ = make_views(n=300, noise_view=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert f.predict_proba(full).shape == (300, 4)


@pytest.mark.parametrize("name", ["late", "early", "auto"]
                         + [pytest.param("gmu", marks=pytest.mark.skipif(not HAS_TORCH,
                                                                        reason="needs torch"))])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_a_present_row_names_modality_and_row(name, bad):
    views, y = make_views(n=100)
    views = {m: v.copy() for m, v in views.items()}
    views["b"][13, 2] = bad
    present = {m: np.ones(100, bool) for m in views}
    f = create_fusion(name, **FAST.get(name, {}))
    with pytest.raises(InputError,
                       match="view .b. has NaN or inf in row 13, which is marked present"):
        f.fit(views, y, present)
    good, _ = make_views(n=100)
    f.fit(good, y)
    with pytest.raises(InputError, match="view 'b' has NaN or inf in row 13"):
        f.predict(views, present)


def correlated_views(n=300, seed=0):
    """b is a noisy linear function of a: a missing b can be predicted from a."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    a = rng.normal(size=(n, 6)).astype(np.float32)
    a[:, 0] += 2.0 * y
    b = (a @ rng.normal(size=(6, 4)) + 0.1 * rng.normal(size=(n, 4))).astype(np.float32)
    return {"a": a, "b": b}, y


def test_block_imputer_predicts_a_missing_block_from_the_others():
    from mmfuse.fusion.imputer import BlockImputer

    views, _ = correlated_views()
    present = {"a": np.ones(300, bool), "b": np.r_[np.ones(200, bool), np.zeros(100, bool)]}
    blocks = {"a": views["a"], "b": np.where(present["b"][:, None], views["b"], 0.0)}
    imputer = BlockImputer().fit(blocks, present)
    filled = imputer.transform(blocks, present)
    np.testing.assert_array_equal(filled["b"][:200], views["b"][:200])  # present: untouched
    err = filled["b"][200:] - views["b"][200:]
    assert np.mean(err**2) < 0.05 * np.var(views["b"])
    np.testing.assert_array_equal(filled["a"], blocks["a"])


@pytest.mark.parametrize("name", ["early", "stacking"])
def test_early_and_stacking_use_learned_imputation(name):
    views, y = correlated_views()
    f = create_fusion(name, random_state=0).fit(views, y)
    assert set(f.imputer_.models_) == {"a", "b"}
    off = create_fusion(name, random_state=0, impute=False).fit(views, y)
    assert off.imputer_ is None
    only_b = {"a": np.full_like(views["a"], np.nan), "b": views["b"]}
    # b carries a's information, so with a missing the imputed model keeps most accuracy
    assert f.score(only_b, y) >= off.score(only_b, y) - 0.02
    assert f.score(only_b, y) > 0.6
