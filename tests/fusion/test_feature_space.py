"""Early fusion's block scaling: every view the same total variance, whatever its width, or
(``"mfa"``) the same variance along its first principal direction."""

import numpy as np
import pytest
from scipy import sparse

from conftest import make_views
from mmfuse import InputError
from mmfuse.fusion import create_fusion


def _design(f, views):
    present = {m: np.ones(len(next(iter(views.values()))), bool) for m in views}
    blocks = f._blocks(views, present, f.modality_weights_)
    return [b.toarray() if sparse.issparse(b) else np.asarray(b) for b in blocks]


def test_block_scaling_gives_every_view_the_total_variance_d_over_m():
    rng = np.random.RandomState(0)
    n = 200
    y = rng.randint(0, 2, n)
    views = {"narrow": rng.randn(n, 4) + y[:, None],
             "wide": rng.randn(n, 60),
             "text": sparse.random(n, 100, density=0.05, format="csr", random_state=0)}
    f = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    blocks = _design(f, views)
    total = 4 + 60 + 100
    for b in blocks:
        # mean squared row norm = the block's total variance (second moment for sparse)
        np.testing.assert_allclose(np.mean(np.sum(b ** 2, axis=1)), total / 3, rtol=1e-4)
    plain = _design(create_fusion("early", random_state=0).fit(views, y), views)
    assert [round(float(np.mean(np.sum(b ** 2, axis=1)))) for b in plain] == [4, 100, 60]  # (sorted: narrow, text, wide)


def test_block_scaling_changes_nothing_for_views_of_one_width():
    views, y = make_views(n=200)
    views["a"] = views["a"][:, :8]
    on = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    off = create_fusion("early", random_state=0).fit(views, y)
    np.testing.assert_allclose(on.predict_proba(views), off.predict_proba(views), atol=1e-6)


def test_block_scaling_keeps_a_narrow_informative_view_beside_a_wide_noise_view():
    rng = np.random.RandomState(0)
    n = 400
    y = rng.randint(0, 2, n)
    views = {"narrow": rng.randn(n, 3) + 1.5 * y[:, None], "wide": rng.randn(n, 400)}
    train, test = np.arange(300), np.arange(300, n)
    acc = {}
    for scaling in (False, True):
        f = create_fusion("early", block_scaling=scaling, random_state=0).fit(
            {m: v[train] for m, v in views.items()}, y[train])
        acc[scaling] = np.mean(f.predict({m: v[test] for m, v in views.items()}) == y[test])
    alone = create_fusion("early", random_state=0).fit({"narrow": views["narrow"][train]},
                                                       y[train])
    acc_alone = np.mean(alone.predict({"narrow": views["narrow"][test]}) == y[test])
    assert acc[True] >= acc_alone - 0.05      # not drowned
    assert acc[True] > acc[False] + 0.05       # while the width-weighted design is


# -- block_scaling="mfa": Multiple Factor Analysis weighting ---------------------------------


def _top_variance(b):
    """Largest eigenvalue of the centred covariance, exactly (numpy SVD)."""
    b = np.asarray(b, dtype=np.float64)
    b = b - b.mean(axis=0)
    return float(np.linalg.svd(b, compute_uv=False)[0] ** 2 / len(b))


def _mixed_views(n, seed=0):
    """A narrow informative view, a wide view driven by a few shared factors, and TF-IDF-like
    sparse counts."""
    rng = np.random.RandomState(seed)
    y = rng.randint(0, 2, n)
    factors = rng.randn(n, 4)
    wide = factors @ rng.randn(4, 150) + 0.5 * rng.randn(n, 150)
    return {"narrow": rng.randn(n, 3) + 1.2 * y[:, None],
            "wide": wide,
            "text": sparse.random(n, 120, density=0.05, format="csr", random_state=seed)}, y


def test_mfa_gives_every_view_a_leading_direction_of_one_variance():
    views, y = _mixed_views(200)
    f = create_fusion("early", block_scaling="mfa", random_state=0).fit(views, y)
    blocks = dict(zip(sorted(views), _design(f, views)))
    tops = {m: _top_variance(b) for m, b in blocks.items()}
    common = tops["narrow"]
    for m in views:  # every view's first principal direction: the same variance c²
        np.testing.assert_allclose(tops[m], common, rtol=1e-4)
    # c² is the one common factor keeping the design's total variance at D = Σ d_m
    plain = dict(zip(sorted(views), _design(create_fusion("early", random_state=0)
                                            .fit(views, y), views)))
    widths = {m: b.shape[1] for m, b in plain.items()}
    effective = sum(widths[m] / _top_variance(plain[m]) for m in views)
    np.testing.assert_allclose(common * effective, sum(widths.values()), rtol=1e-4)
    assert set(f.block_factors_) == set(views)
    assert all(isinstance(v, float) and v > 0 for v in f.block_factors_.values())


def test_mfa_factors_come_from_the_training_rows_only():
    views, y = _mixed_views(300)
    train, test = np.arange(200), np.arange(200, 300)
    sub = {m: v[train] for m, v in views.items()}
    f = create_fusion("early", block_scaling="mfa", random_state=0).fit(sub, y[train])
    refit = create_fusion("early", block_scaling="mfa", random_state=0).fit(sub, y[train])
    factors = dict(f.block_factors_)
    assert factors == refit.block_factors_          # deterministic
    everything = create_fusion("early", block_scaling="mfa", random_state=0).fit(views, y)
    assert factors != everything.block_factors_     # they do depend on the rows fitted
    held = {m: v[test] for m, v in views.items()}
    proba = f.predict_proba(held)
    # predicting a batch with other, shifted rows changes neither the factors nor the rows
    shifted = {m: (v * 5.0 if m != "text" else v) for m, v in held.items()}
    both = {m: (sparse.vstack([held[m], shifted[m]]).tocsr() if m == "text"
                else np.vstack([held[m], shifted[m]])) for m in held}
    np.testing.assert_allclose(f.predict_proba(both)[:100], proba, atol=1e-6)
    assert f.block_factors_ == factors


def test_mfa_uses_a_narrow_informative_view_beside_a_wide_correlated_noise_view():
    gains = []
    for seed in range(4):
        rng = np.random.RandomState(seed)
        n = 400
        y = rng.randint(0, 2, n)
        # 400 noise columns driven by 2 shared factors plus their own noise (a wide view,
        # wider than the training rows are many), beside 3 informative columns
        wide = rng.randn(n, 2) @ rng.randn(2, 400) + 1.5 * rng.randn(n, 400)
        views = {"narrow": rng.randn(n, 3) + 1.0 * y[:, None], "wide": wide}
        train, test = np.arange(300), np.arange(300, n)
        acc = {}
        for scaling in (False, "mfa"):
            f = create_fusion("early", block_scaling=scaling, random_state=0).fit(
                {m: v[train] for m, v in views.items()}, y[train])
            acc[scaling] = np.mean(f.predict({m: v[test] for m, v in views.items()})
                                   == y[test])
        gains.append(acc["mfa"] - acc[False])
    # the plain design drowns the narrow view (0.71 against 0.85 for it alone, measured);
    # MFA weighting gains on every seed and over 5 points on average
    assert min(gains) > 0 and np.mean(gains) > 0.05


def test_mfa_with_missing_modalities_sparse_views_and_the_gram_path():
    from sklearn.linear_model import LogisticRegression

    from mmfuse.fusion.early import _hstack
    from mmfuse.fusion.linear import gram_applicable

    views, y = _mixed_views(120, seed=1)
    present = {m: np.ones(120, bool) for m in views}
    present["narrow"][::5] = False
    present["wide"][1::7] = False
    f = create_fusion("early", block_scaling="mfa", random_state=0).fit(views, y, present)
    assert f.imputer_ is not None and f.presence_flags_
    # the factors are those of the present training rows
    scaled = f.scalers_["wide"].transform(views["wide"], present["wide"])
    lam = _top_variance(scaled[present["wide"]])
    lam_narrow = _top_variance(f.scalers_["narrow"].transform(
        views["narrow"], present["narrow"])[present["narrow"]])
    np.testing.assert_allclose(f.block_factors_["narrow"] ** 2 * lam_narrow,
                               f.block_factors_["wide"] ** 2 * lam, rtol=1e-4)
    # the design is wide: fitted through the Gram factor, the same model as a direct fit
    blocks = f._blocks(views, present, f.modality_weights_)
    width = sum(b.shape[1] for b in blocks)
    assert gram_applicable(LogisticRegression(max_iter=2000), 120, width)
    direct = LogisticRegression(max_iter=2000).fit(_hstack(blocks), y)
    np.testing.assert_allclose(f.predict_proba(views, present),
                               direct.predict_proba(_hstack(blocks)), atol=2e-3)


def test_mfa_survives_a_saved_model(tmp_path):
    import mmfuse
    from mmfuse import MultimodalClassifier

    views, y = make_views(n=200)
    views = {m: v.copy() for m, v in views.items()}
    views["b"][::7] = np.nan  # rows missing a modality
    clf = MultimodalClassifier(fusion="early", fusion_params={"block_scaling": "mfa"},
                               random_state=0).fit(views, y)
    loaded = mmfuse.load(clf.save(tmp_path / "m.mmfuse"))
    assert loaded.fusion_.block_factors_ == clf.fusion_.block_factors_
    np.testing.assert_array_equal(loaded.predict_proba(views), clf.predict_proba(views))


def test_block_scaling_values():
    views, y = make_views(n=120)
    with pytest.raises(InputError, match=r"block_scaling must be one of False, True, "
                                         r"'variance', 'mfa'; got 'pca'"):
        create_fusion("early", block_scaling="pca").fit(views, y)
    on = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    named = create_fusion("early", block_scaling="variance", random_state=0).fit(views, y)
    assert on.block_factors_ == named.block_factors_
    np.testing.assert_array_equal(on.predict_proba(views), named.predict_proba(views))
    off = create_fusion("early", random_state=0).fit(views, y)
    assert off.block_factors_ == {"a": 1.0, "b": 1.0}
    # a model fitted before block_factors_ existed predicts as before
    legacy = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    del legacy.block_factors_
    np.testing.assert_array_equal(legacy.predict_proba(views), on.predict_proba(views))
