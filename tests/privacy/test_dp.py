"""Differentially private fusion: budget accounting, data-independent bounds, clear refusals."""

import math

import numpy as np
import pytest

from mmfuse.privacy.dp import import_diffprivlib  # noqa: E402

try:
    import_diffprivlib()
except ImportError:  # MissingDependencyError
    pytest.skip('needs pip install "mmfuse[privacy]"', allow_module_level=True)

from conftest import make_views  # noqa: E402
from mmfuse import InputError, MultimodalClassifier  # noqa: E402
from mmfuse.persist import load  # noqa: E402
from mmfuse.privacy.dp import (DPCentroidClassifier, DPLogisticRegression,  # noqa: E402
                               make_private_fusion, unit_rows)


def test_dp_logistic_regression_noise_shrinks_with_epsilon():
    views, y = make_views(n=1500, n_classes=2)
    x = unit_rows(np.hstack([views["a"], views["b"]]))
    accs = {}
    for eps in (0.05, 50.0, math.inf):
        runs = [DPLogisticRegression(epsilon=eps, noise_seed=s).fit(x, y).score(x, y)
                for s in range(3)]
        accs[eps] = float(np.mean(runs))
    assert accs[0.05] < accs[50.0] <= accs[math.inf] + 0.02
    assert accs[math.inf] > 0.75


def test_noise_is_secret_unless_seeded():
    views, y = make_views(n=300)
    x = unit_rows(views["a"])
    a = DPLogisticRegression(epsilon=1.0).fit(x, y).coef_
    b = DPLogisticRegression(epsilon=1.0).fit(x, y).coef_
    assert not np.allclose(a, b)
    c = DPLogisticRegression(epsilon=1.0, noise_seed=3).fit(x, y).coef_
    np.testing.assert_array_equal(c, DPLogisticRegression(epsilon=1.0, noise_seed=3).fit(x, y).coef_)


def test_rows_are_clipped_to_the_fixed_norm_not_read_from_data():
    views, y = make_views(n=200)
    big = np.hstack([views["a"], views["b"]]) * 1000
    model = DPLogisticRegression(epsilon=2.0, data_norm=1.0, noise_seed=0).fit(big, y)
    same = DPLogisticRegression(epsilon=2.0, data_norm=1.0, noise_seed=0).fit(unit_rows(big), y)
    np.testing.assert_allclose(model.coef_, same.coef_, rtol=1e-6, atol=1e-9)


def test_centroid_noise_is_dimension_free_and_delta_zero_is_laplace():
    views, y = make_views(n=1500, n_classes=2)
    x = unit_rows(np.hstack([views["a"], views["b"]]))
    clear = DPCentroidClassifier(epsilon=np.inf).fit(x, y).score(x, y)
    gauss = np.mean([DPCentroidClassifier(epsilon=1.0, noise_seed=s).fit(x, y).score(x, y)
                     for s in range(3)])
    assert clear > 0.7 and gauss > clear - 0.1
    model = DPCentroidClassifier(epsilon=1.0, delta=0, noise_seed=0).fit(x, y)
    assert model.delta_spent_ == 0 and model.epsilon_spent_ == 1.0
    np.testing.assert_allclose(np.linalg.norm(model.coef_, axis=1), 1.0)
    np.testing.assert_allclose(model.predict_proba(x).sum(axis=1), 1.0)


@pytest.mark.parametrize("fusion", ["early", "late"])
@pytest.mark.parametrize("dp_model", ["centroid", "logistic"])
def test_estimator_spends_exactly_epsilon_and_round_trips(tmp_path, fusion, dp_model):
    views, y = make_views(n=400)
    model = MultimodalClassifier(fusion=fusion, weights="equal", epsilon=2.0,
                                 fusion_params={"noise_seed": 0, "dp_model": dp_model}
                                 ).fit(views, y)
    assert model.epsilon_spent_ == pytest.approx(2.0)
    assert model.delta_spent_ == pytest.approx(1e-5 if dp_model == "centroid" else 0.0, rel=1e-3)
    assert np.allclose(model.fusion_.class_prior_, 0.25)  # not the training counts
    loaded = load(model.save(tmp_path / "dp.mmfuse"))
    np.testing.assert_array_equal(loaded.predict_proba(views), model.predict_proba(views))
    assert loaded.model_file_["privacy"]["epsilon_spent"] == pytest.approx(2.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"fusion": "stacking", "weights": "equal"}, "must be one of \\['early', 'late'\\]"),
    ({"fusion": "late", "weights": "cv"}, "fixed in advance"),
    ({"fusion": "late", "weights": "equal", "epsilon": 0}, "epsilon must be > 0"),
    ({"fusion": "late", "weights": "equal", "epsilon": "1"}, "positive number"),
    ({"fusion": "late", "weights": "equal", "delta": 1.5}, "delta must be in"),
    ({"fusion": "late", "weights": "equal", "fusion_params": {"dp_model": "svm"}},
     "dp_model must be one of"),
])
def test_refusals(kwargs, match):
    views, y = make_views(n=100)
    params = {"epsilon": 1.0, **kwargs}
    with pytest.raises(InputError, match=match):
        MultimodalClassifier(**params).fit(views, y)


def test_data_dependent_encoder_is_an_error():
    import pandas as pd

    X = pd.DataFrame({"text": ["a frog", "a bird", "frogs", "birds"] * 5})
    y = np.array([0, 1, 0, 1] * 5)
    for name in ("tfidf", "tfidf-hashed"):
        with pytest.raises(InputError, match=f"column 'text' uses '{name}'.*'hashing'"):
            MultimodalClassifier(encoders={"text": name}, weights="equal", epsilon=1.0).fit(X, y)
    from mmfuse.encoders import create_encoder

    small = create_encoder("hashing", n_features=64)
    model = MultimodalClassifier(encoders={"text": small}, fusion="early", weights="equal",
                                 epsilon=1.0).fit(X, y)
    assert model.epsilon_spent_ == 1.0


def test_classifier_and_extra_params_are_refused():
    with pytest.raises(InputError, match="classifier must be None"):
        make_private_fusion("early", 1.0, classifier=object())
    with pytest.raises(InputError, match="takes no"):
        make_private_fusion("late", 1.0, combine="linear")
