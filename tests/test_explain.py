"""Per-prediction modality contributions."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse import MultimodalClassifier
from mmfuse.explain import LEAVE_ONE_OUT, LOG_SHARE, explain_views


def toy(n=300, seed=0):
    """View "signal" carries all of the label, view "noise" none of it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    signal = rng.normal(size=(n, 4)).astype(np.float32)
    signal[:, 0] += 3.0 * y
    noise = rng.normal(size=(n, 6)).astype(np.float32)
    return {"noise": noise, "signal": signal}, y


@pytest.mark.parametrize("fusion, weights, method", [
    ("late", "cv", LOG_SHARE), ("late", "equal", LOG_SHARE), ("weighted", "cv", LOG_SHARE),
    ("early", "cv", LEAVE_ONE_OUT), ("stacking", "cv", LEAVE_ONE_OUT)])
def test_the_modality_that_carries_the_signal_gets_its_share(fusion, weights, method):
    X, y = toy()
    clf = MultimodalClassifier(fusion=fusion, weights=weights, random_state=0).fit(X, y)
    Xt, _ = toy(seed=1)
    exp = clf.explain(Xt)
    assert exp.method == method and exp.modalities == ["noise", "signal"]
    np.testing.assert_allclose(exp.proba, clf.predict_proba(Xt))
    assert (exp.labels == clf.predict(Xt)).all()
    share = np.abs(exp.shares).mean(axis=0)
    assert share[1] >= 0.9, share
    np.testing.assert_allclose(np.abs(exp.shares).sum(axis=1), 1.0)


@pytest.mark.parametrize("fusion, weights", [
    ("late", "equal"),
    # the seed's feature space: one logistic regression on the (row-rescaled) weighted sum
    # of the standardised views, so its centred logits split exactly per modality too
    ("weighted", {"noise": 0.3, "signal": 0.7}),
])
def test_log_share_adds_up_to_the_fused_centred_log_probability(fusion, weights):
    X, y = toy()
    clf = MultimodalClassifier(fusion=fusion, weights=weights, random_state=0).fit(X, y)
    views, present = clf.transform_views(X)
    present["noise"][:10] = False  # a row missing a modality is rescaled like the strategy
    exp = explain_views(clf.fusion_, views, present)
    logp = np.log(exp.proba)
    pred = exp.proba.argmax(axis=1)
    centred = logp[np.arange(len(pred)), pred] - logp.mean(axis=1)
    np.testing.assert_allclose(exp.contributions.sum(axis=1), centred, rtol=1e-6, atol=1e-6)
    assert (exp.contributions[:10, 0] == 0).all()


def test_frames_rows_and_class_means():
    X, y = toy(120)
    exp = MultimodalClassifier(fusion="early", random_state=0).fit(X, y).explain(X)
    frame = exp.to_frame()
    assert list(frame.columns) == ["label", "probability", "share:noise", "share:signal"]
    assert len(exp.rows()) == 120 and set(exp.rows()[0]) == {"noise", "signal"}
    means = exp.mean_by_class()
    assert set(means) == set(np.unique(exp.labels).tolist())


@pytest.mark.parametrize("fusion", ["late", "weighted", "early", "stacking"])
def test_stacked_and_one_by_one_predictions_give_the_same_explanation(fusion, monkeypatch):
    import mmfuse.explain as explain_module

    X, y = toy(150)
    clf = MultimodalClassifier(fusion=fusion, random_state=0).fit(X, y)
    views, present = clf.transform_views(toy(40, seed=3)[0])
    present["noise"][:5] = False
    stacked = explain_views(clf.fusion_, views, present)
    monkeypatch.setattr(explain_module, "STACK_ROWS", 0)  # one call per modality
    single = explain_views(clf.fusion_, views, present)
    np.testing.assert_allclose(stacked.proba, single.proba, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stacked.contributions, single.contributions,
                               rtol=1e-8, atol=1e-10)


def test_holdout_explanation_reads_the_chosen_encoders_views():
    """A column that chooses its encoder by inner CV has only a placeholder view in the
    table; the held-out explanation chooses it on the training fold, as evaluation does
    (`mmfuse run --encoders auto --report` failed on the placeholder's NaN rows)."""
    from conftest import number_frame

    from mmfuse.evaluate import FeatureTable
    from mmfuse.explain import holdout_explanation

    df, y = number_frame(n=120)
    table = FeatureTable(df, {"left": ["test-number", "test-vocab"], "right": "test-number"})
    assert np.isnan(table.views["left"]).all()  # the placeholder
    exp = holdout_explanation(table, y, None, 3, "late", weights="equal", inner_cv=3)
    frame = exp.to_frame()
    assert len(frame) == 40 and np.isfinite(frame.filter(like="share").to_numpy()).all()
    assert frame["share:left"].abs().sum() > 0
