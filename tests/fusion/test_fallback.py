"""Learned weights degrade gracefully: when the training rows cannot be split into inner
folds that hold every class, a strategy fits its equal-weight form, warns and says why
(``weights_fallback_``), never an error that stops the run."""

import warnings

import numpy as np
import pytest

from conftest import make_views
from mmfuse.evaluate import evaluate
from mmfuse.fusion import create_fusion
from mmfuse.fusion.base import WeightsFallbackWarning

LEARNED = [("late", {}), ("late", {"weights": "relative"}), ("weighted", {}),
           ("weighted", {"weights": "relative"}),
           ("weighted", {"projection": "class-scores"}), ("early", {"weights": "cv"}),
           ("stacking", {}), ("auto", {"neural": False})]


def small_views(seed: int = 0):
    """60 rows, 9 classes, the rarest with 2 rows (the issue's setting)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(9), [2, 6, 7, 7, 7, 7, 8, 8, 8])
    views = {"image": (rng.normal(size=(60, 5)) + 0.8 * y[:, None]).astype(np.float32),
             "text": (rng.normal(size=(60, 4)) + 0.5 * y[:, None]).astype(np.float32)}
    return views, y


@pytest.mark.parametrize("fusion, params", LEARNED)
def test_a_class_with_one_training_row_falls_back_to_equal_weights(fusion, params):
    views, y = small_views()
    train = np.r_[0, 2:60]  # the rarest class keeps one training row
    model = create_fusion(fusion, random_state=0, **params)
    with pytest.warns(WeightsFallbackWarning, match=f"{fusion} fusion fell back to .*equal "
                      "weights: too few training rows per class for inner folds \\(59 rows, "
                      "the rarest class has 1\\)"):
        model.fit({m: v[train] for m, v in views.items()}, y[train])
    assert model.weights_fallback_.startswith(("equal weights", "early fusion with equal"))
    if model.modality_weights_ is not None:
        assert model.modality_weights_ == pytest.approx({"image": 0.5, "text": 0.5})
    proba = model.predict_proba(views)
    assert proba.shape == (60, 9) and np.allclose(proba.sum(axis=1), 1)
    assert model.get_params()["weights"] == params.get("weights", model.weights)  # untouched


@pytest.mark.parametrize("fusion, params", LEARNED[:1] + LEARNED[4:7])
def test_enough_rows_learn_their_weights(fusion, params):
    views, y = make_views(n=120)
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsFallbackWarning)
        model = create_fusion(fusion, random_state=0, cv=3, **params).fit(views, y)
    assert model.weights_fallback_ is None


def test_equal_weights_or_a_dict_never_fall_back():
    views, y = small_views()
    for weights in ("equal", {"image": 2.0, "text": 1.0}):
        with warnings.catch_warnings():
            warnings.simplefilter("error", WeightsFallbackWarning)
            model = create_fusion("late", weights=weights).fit(views, y)
        assert model.weights_fallback_ is None


def test_the_60_row_evaluation_with_default_weights_finishes_and_records_it():
    views, y = small_views()
    with warnings.catch_warnings():
        warnings.simplefilter("error", WeightsFallbackWarning)  # recorded, not warned
        result = evaluate(views, y, cv=2, strategies=["late", "stacking"], n_jobs=1)
    late = result.row("late")
    assert late.weights == "cv" and len(late.weights_fallback) == 2
    assert all(f and f.startswith("equal weights") for f in late.weights_fallback)
    assert late.fold_weights == [{"image": 0.5, "text": 0.5}] * 2
    doc = result.to_dict()
    assert doc["weights_fallback"] == ["late", "stacking"]
    assert result.row("image").weights_fallback == [None, None]


def test_the_estimator_says_that_it_fell_back_and_the_saved_model_keeps_it(tmp_path):
    from mmfuse import MultimodalClassifier, load

    views, y = small_views()
    train = np.r_[0, 2:60]
    with pytest.warns(WeightsFallbackWarning):
        clf = MultimodalClassifier(fusion="late", random_state=0).fit(
            {m: v[train] for m, v in views.items()}, y[train])
    assert clf.weights_fallback_.startswith("equal weights: too few training rows")
    assert clf.modality_weights_ == pytest.approx({"image": 0.5, "text": 0.5})
    loaded = load(clf.save(tmp_path / "m.mmfuse"))
    assert loaded.weights_fallback_ == clf.weights_fallback_
    enough = MultimodalClassifier(fusion="late", cv=3, random_state=0).fit(*make_views(n=120))
    assert enough.weights_fallback_ is None
