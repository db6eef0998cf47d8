"""What keeps learned combinations honest under group shift: cross-fitted experts, the
one-standard-error rule, a regularised stacking meta-model, sparse views, one inner CV
for auto."""

import numpy as np
import pytest
from scipy import sparse

from conftest import make_views
from mmfuse import InputError
from mmfuse.fusion import create_fusion, experts
from mmfuse.fusion.choice import choose, one_se_choice
from mmfuse.fusion.experts import CrossFitExpert
from mmfuse.fusion.scaling import ViewScaler
from mmfuse.splits import inner_splits


def test_one_se_rule_prefers_the_simple_candidate_unless_clearly_better():
    simple = {"eq"}
    noisy = {"eq": np.array([0.70, 0.72, 0.68, 0.71]), "learned": np.array([0.74, 0.66, 0.73, 0.70])}
    assert one_se_choice(noisy, simple) == "eq"
    clear = {"eq": np.array([0.70, 0.72, 0.68, 0.71]), "learned": np.array([0.80, 0.81, 0.79, 0.80])}
    assert one_se_choice(clear, simple) == "learned"
    # the best simple one is the reference; ties go to the first listed
    assert one_se_choice({"a": np.ones(3), "b": np.ones(3)}, {"a", "b"}) == "a"


def test_learned_weights_predict_with_the_cross_fitted_experts():
    views, y = make_views(n=300)
    groups = np.repeat(np.arange(10), 30)
    for name, params in (("late", {"weights": "cv"}), ("stacking", {}),
                         ("weighted", {"projection": "class-scores"})):
        f = create_fusion(name, random_state=0, cv=4, **params).fit(views, y, groups=groups)
        assert all(isinstance(e, CrossFitExpert) for e in f.experts_.values())
        assert all(len(e.experts) == 4 for e in f.experts_.values())
    expert = f.experts_["a"]
    present = np.ones(len(y), bool)
    present[:5] = False
    mean = np.mean([e.predict_proba(views["a"], present) for e in expert.experts], axis=0)
    got = expert.predict_proba(views["a"], present)
    np.testing.assert_allclose(got[5:], mean[5:])
    assert np.isnan(got[:5]).all()
    # fixed equal weights need no out-of-fold work: one expert per modality, refit on all
    f = create_fusion("late", weights="equal").fit(views, y)
    assert not any(isinstance(e, CrossFitExpert) for e in f.experts_.values())


def test_stacking_meta_penalty_is_chosen_by_grouped_inner_cv():
    views, y = make_views(n=300, noise_view=True)
    groups = np.repeat(np.arange(10), 30)
    f = create_fusion("stacking", random_state=0, cv=3).fit(views, y, groups=groups)
    assert f.meta_C_ in (0.01, 0.1, 1.0) and f.meta_[-1].C == f.meta_C_
    assert set(f.meta_C_scores_) == {0.01, 0.1, 1.0}
    f = create_fusion("stacking", meta_Cs=(0.5,), cv=3).fit(views, y)
    assert f.meta_C_ == 0.5
    with pytest.raises(InputError, match="meta_Cs must be positive"):
        create_fusion("stacking", meta_Cs=(0.0, 1.0), cv=3).fit(views, y)


def test_weighted_cv_keeps_equal_weights_for_two_copies_of_one_view():
    views, y = make_views(n=300)
    twins = {"a": views["a"], "b": views["a"].copy()}
    f = create_fusion("weighted", random_state=0, cv=3).fit(twins, y)
    assert f.modality_weights_ == {"a": 0.5, "b": 0.5}
    assert "fold_accuracy" in f.weight_search_


def test_sparse_views_scale_to_unit_rows_without_centring():
    rng = np.random.RandomState(0)
    x = sparse.random(50, 30, density=0.2, format="csr", random_state=0, dtype=np.float32)
    present = np.ones(50, bool)
    present[:3] = False
    z = ViewScaler().fit(x, present).transform(x * 3.0, present)
    assert sparse.issparse(z)
    norms = np.sqrt(np.asarray(z.multiply(z).sum(axis=1))).ravel()
    has = present & (np.diff(x.indptr) > 0)
    np.testing.assert_allclose(norms[has], np.sqrt(30), rtol=1e-5)  # sqrt(width)
    assert z[:3].nnz == 0  # missing rows stay all-zero
    del rng


def _sparse_problem(n=240, seed=0):
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 3, n)
    text = sparse.lil_matrix((n, 60), dtype=np.float32)
    for i in range(n):
        text[i, y[i] * 5 + rng.randint(0, 5)] = 1.0
        text[i, 15 + rng.randint(0, 45)] = 1.0
    dense_view = rng.normal(size=(n, 4)).astype(np.float32)
    dense_view[:, 0] += y
    return {"d": dense_view, "t": text.tocsr()}, y


@pytest.mark.parametrize("name", ["early", "late", "stacking", "weighted", "seed-baseline"])
def test_strategies_fit_sparse_views(name):
    views, y = _sparse_problem()
    f = create_fusion(name, random_state=0, cv=3).fit(views, y)
    proba = f.predict_proba(views)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)  # float32 sparse design
    assert f.score(views, y) > 0.8


def test_early_fusion_of_a_sparse_view_is_a_sparse_design():
    views, y = _sparse_problem()
    f = create_fusion("early", random_state=0).fit(views, y)
    design = f._design(views, {m: np.ones(len(y), bool) for m in views}, f.modality_weights_)
    assert sparse.issparse(design) and design.shape == (len(y), 64)


def test_auto_runs_one_inner_cv_of_the_per_modality_experts(monkeypatch):
    views, y = make_views(n=240)
    groups = np.repeat(np.arange(8), 30)
    fits = []
    real = experts.ModalityExpert.fit

    def counting(self, *args, **kwargs):
        fits.append(1)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(experts.ModalityExpert, "fit", counting)
    f = create_fusion("auto", cv=3, random_state=0).fit(views, y, groups=groups)
    # 2 modalities x 3 inner folds, shared by every candidate, plus at most one refit per
    # modality for the chosen member(s); the old selection refit every candidate per fold
    assert len(fits) <= 2 * 3 + 2 * 2
    assert {"early[equal]", "late[equal]", "seed-baseline", "late[cv]", "stacking",
            "single:a", "single:b"} <= set(f.inner_scores_)
    assert all(len(v) == 3 for v in f.inner_fold_scores_.values())


def test_auto_follows_the_one_se_rule_on_its_inner_folds():
    views, y = make_views(n=300, noise_view=True)
    groups = np.repeat(np.arange(10), 30)
    f = create_fusion("auto", cv=4, random_state=0, ensemble=False).fit(views, y, groups=groups)
    scores = {n: np.asarray(v) for n, v in f.inner_fold_scores_.items()}
    simple = {n for n in scores if n in ("early[equal]", "late[equal]", "seed-baseline")
              or n.startswith("single:")}
    assert f.chosen_name_ == choose(scores)
    picked = one_se_choice(scores, simple)  # learned vs simple: the one-SE rule
    assert (f.chosen_name_ in simple) == (picked in simple)
    best_single = max(v for n, v in f.inner_scores_.items() if n.startswith("single:"))
    assert f.inner_scores_[f.chosen_name_] >= best_single
    assert inner_splits(y, groups, 4, 0)  # grouped inner splits exist for this data


@pytest.mark.parametrize("direct_sum", [False, True])
def test_weighted_with_equal_weights_is_the_seed_baseline(direct_sum):
    views, y = make_views(n=200)
    views["b"] = views["b"][:, :3]  # different widths: zero-padded sums, as in the seed
    seed = create_fusion("seed-baseline").fit(views, y)
    f = create_fusion("weighted", weights="equal").fit(views, y)
    np.testing.assert_allclose(f.predict_proba(views), seed.predict_proba(views), atol=1e-4)
    # views of one width are summed either way (a common space)
    views["a"] = views["a"][:, :3]
    seed = create_fusion("seed-baseline").fit(views, y)
    f = create_fusion("weighted", weights="equal", direct_sum=direct_sum).fit(views, y)
    np.testing.assert_allclose(f.predict_proba(views), seed.predict_proba(views), atol=1e-4)


def test_weighted_direct_sum_of_views_of_different_widths():
    """direct_sum: views of different widths keep their own columns (no cross terms
    between unrelated features), rows rescaled over the present modalities as in the
    padded sum."""
    from mmfuse.fusion.weighted import _PairGram, weighted_sum

    rng = np.random.RandomState(0)
    z = {"a": rng.randn(6, 5), "b": rng.randn(6, 2)}
    present = {"a": np.array([1, 1, 1, 1, 0, 1], bool), "b": np.array([1, 1, 0, 1, 1, 1], bool)}
    w = {"a": 0.25, "b": 0.75}
    f = weighted_sum(z, present, w, direct=True)
    assert f.shape == (6, 7)
    r = np.array([1, 1, 1 / 0.25, 1, 1 / 0.75, 1])[:, None]
    np.testing.assert_allclose(f[:, :5], r * 0.25 * np.where(present["a"][:, None], z["a"], 0))
    np.testing.assert_allclose(f[:, 5:], r * 0.75 * np.where(present["b"][:, None], z["b"], 0))
    # the kernel is the weighted sum of the per-view kernels, Σ w_m² K_m: no cross terms
    za, zb = (np.where(present[m][:, None], z[m], 0) for m in ("a", "b"))
    expected = r * (0.25 ** 2 * za @ za.T + 0.75 ** 2 * zb @ zb.T) * r.T
    np.testing.assert_allclose(_PairGram(z, present, direct=True).kernel(w), expected,
                               atol=1e-12)
    assert weighted_sum(z, present, w).shape == (6, 5)  # the default: zero-padded


def test_weighted_keeps_a_narrow_informative_view_beside_a_wide_noise_view():
    """Zero-padding a 3-column informative view onto a 20-column noise view (the seed's
    formula, the default) adds noise to its signal; the direct sum keeps it clean."""
    rng = np.random.RandomState(0)
    n = 400
    y = rng.randint(0, 2, n)
    informative = rng.randn(n, 3) + 1.5 * y[:, None]
    views = {"narrow": informative, "wide": 3.0 * rng.randn(n, 20)}
    train, test = np.arange(300), np.arange(300, n)
    acc = {}
    for name, params in (("weighted", {"weights": "equal", "direct_sum": True}),
                         ("seed-baseline", {})):
        f = create_fusion(name, random_state=0, **params).fit(
            {m: v[train] for m, v in views.items()}, y[train])
        acc[name] = np.mean(f.predict({m: v[test] for m, v in views.items()}) == y[test])
    alone = create_fusion("early", random_state=0).fit({"narrow": informative[train]}, y[train])
    acc_alone = np.mean(alone.predict({"narrow": informative[test]}) == y[test])
    assert acc["weighted"] >= acc_alone - 0.05
    assert acc["weighted"] > acc["seed-baseline"] + 0.1


@pytest.mark.parametrize("width_b, direct", [(40, False), (40, True), (300, True)])
def test_weighted_weight_search_on_the_gram_matrix_is_exact(width_b, direct):
    from sklearn.linear_model import LogisticRegression

    from mmfuse.fusion.weighted import _kernel_factor, _PairGram, weighted_sum

    rng = np.random.RandomState(0)
    n = 120
    z = {"a": rng.randn(n, 300), "b": rng.randn(n, width_b)}
    present = {"a": np.ones(n, bool), "b": rng.rand(n) > 0.2}
    y = (z["a"][:, 0] + z["b"][:, 0] > 0).astype(int) + (z["a"][:, 1] > 1)
    w = {"a": 0.3, "b": 0.7}
    train, test = np.arange(90), np.arange(90, n)
    f = weighted_sum(z, present, w, direct)
    k = _PairGram(z, present, direct).kernel(w)
    np.testing.assert_allclose(k, f @ f.T, atol=1e-8)
    g_tr, g_te = _kernel_factor(k, train, test)
    lr = dict(max_iter=5000, tol=1e-10)
    direct = LogisticRegression(**lr).fit(f[train], y[train]).predict_proba(f[test])
    factored = LogisticRegression(**lr).fit(g_tr, y[train]).predict_proba(g_te)
    np.testing.assert_allclose(direct, factored, atol=1e-6)


@pytest.mark.parametrize("direct_sum", [False, True])
def test_weighted_features_with_missing_rows_and_a_sparse_view(direct_sum):
    views, y = make_views(n=240)
    present = {"a": np.ones(240, bool), "b": np.arange(240) % 4 != 0}
    views["b"] = np.where(present["b"][:, None], views["b"], np.nan)
    views["c"] = sparse.random(240, 50, density=0.1, format="csr", random_state=0)
    present["c"] = np.ones(240, bool)
    groups = np.repeat(np.arange(12), 20)
    f = create_fusion("weighted", random_state=0, cv=3, direct_sum=direct_sum).fit(
        views, y, present, groups)
    proba = f.predict_proba(views, present)
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert set(f.modality_weights_) == {"a", "b", "c"}
    assert f.weight_search_["fold_accuracy"].shape[1] == 3
    with pytest.raises(InputError, match="direct_sum must be True or False; got 'yes'"):
        create_fusion("weighted", direct_sum="yes").fit(views, y, present)


def test_linear_proba_equals_logistic_regression_predict_proba_exactly():
    """The experts' validation-free LogisticRegression path gives scikit-learn's numbers,
    bit for bit, on dense and sparse (CSR) float32/float64 input, one row or many; anything
    else falls back to predict_proba (None)."""
    from sklearn.linear_model import LogisticRegression

    from mmfuse.fusion.linear import aligned_proba, linear_proba

    rng = np.random.RandomState(0)
    x = rng.normal(size=(120, 7))
    y = rng.randint(0, 4, size=120)
    lr = LogisticRegression(max_iter=500).fit(x, y)
    xs = sparse.random(120, 7, density=0.3, random_state=0, format="csr")
    lr_sparse = LogisticRegression(max_iter=500).fit(xs, y)
    for model, data in ((lr, x), (lr, x.astype(np.float32)), (lr_sparse, xs),
                        (lr_sparse, xs.astype(np.float32))):
        for rows in (slice(0, 1), slice(0, 5), slice(None)):
            got = linear_proba(model, data[rows])
            assert got is not None
            assert np.array_equal(got, model.predict_proba(data[rows]))
    # fold lacking a class: aligned_proba still places the columns
    sub = y < 3
    lr3 = LogisticRegression(max_iter=500).fit(x[sub], y[sub])
    out = aligned_proba(lr3, x[:3], 4)
    assert np.array_equal(out[:, :3], lr3.predict_proba(x[:3])) and not out[:, 3].any()
    # not taken: binary model, non-finite input, wrong width, another classifier
    binary = LogisticRegression().fit(x, y % 2)
    assert linear_proba(binary, x[:2]) is None
    bad = x[:2].copy()
    bad[0, 0] = np.nan
    assert linear_proba(lr, bad) is None
    assert linear_proba(lr, x[:2, :5]) is None
    from sklearn.naive_bayes import GaussianNB

    assert linear_proba(GaussianNB().fit(x, y), x[:2]) is None
    with pytest.raises(ValueError):  # the fallback keeps scikit-learn's own errors
        aligned_proba(lr, bad, 4)
