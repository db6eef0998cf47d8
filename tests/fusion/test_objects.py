"""Fusion strategies as objects: ``fusion=LateFusion(...)``, nested parameters, GridSearchCV."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_views
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from mmfuse import InputError, MultimodalClassifier
from mmfuse.fusion import EarlyFusion, LateFusion, fusion_name
from mmfuse.views import views_to_frame


@pytest.fixture(scope="module")
def data():
    return make_views(n=120, seed=3)


def test_an_instance_is_the_same_as_its_name(data):
    views, y = data
    by_name = MultimodalClassifier(fusion="late", weights="equal", cv=3, random_state=0)
    by_object = MultimodalClassifier(fusion=LateFusion(weights="equal", cv=3), random_state=0)
    np.testing.assert_array_equal(by_name.fit(views, y).predict_proba(views),
                                  by_object.fit(views, y).predict_proba(views))
    assert by_object.fusion_ is not by_object.fusion  # cloned, never fitted in place
    assert not hasattr(by_object.fusion, "classes_")
    assert by_object.fusion_.random_state == 0  # passed on: the instance had none
    assert fusion_name(by_object.fusion) == "late" and fusion_name("early") == "early"


def test_nested_parameters(data):
    clf = MultimodalClassifier(fusion=LateFusion(weights="cv"))
    params = clf.get_params(deep=True)
    assert params["fusion__weights"] == "cv" and params["fusion__combine"] == "log"
    clf.set_params(fusion__weights="relative", fusion__cv=3)
    assert clf.fusion.weights == "relative" and clf.fusion.cv == 3
    copy = clone(clf)
    assert copy.fusion is not clf.fusion and copy.get_params()["fusion__weights"] == "relative"
    views, y = data
    fitted = MultimodalClassifier(fusion=EarlyFusion(), fusion_params={"impute": False},
                                  random_state=0).fit(views, y)
    assert fitted.fusion_.impute is False and fitted.fusion.impute is True
    with pytest.raises(InputError, match="epsilon needs the fusion strategy by name"):
        MultimodalClassifier(fusion=LateFusion(), epsilon=1.0).fit(views, y)


def test_grid_search_over_a_fusion_parameter(data):
    views, y = data
    search = GridSearchCV(
        MultimodalClassifier(fusion=LateFusion(cv=3), random_state=0),
        {"fusion__weights": ["equal", "relative"], "fusion__combine": ["log", "linear"]},
        cv=3)
    search.fit(views_to_frame(views), y)
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_["fusion__weights"] in ("equal", "relative")
    assert search.best_estimator_.fusion_.weights == search.best_params_["fusion__weights"]
    assert search.best_score_ > 0.5  # four classes: chance is 0.25


def test_an_instance_survives_save_and_load(data, tmp_path):
    from mmfuse import load
    from mmfuse.persist import read_header

    views, y = data
    model = MultimodalClassifier(fusion=LateFusion(weights="equal", cv=3), random_state=0)
    model.fit(views, y)
    path = model.save(tmp_path / "m.mmfuse")
    assert read_header(path)["fusion"] == "late"
    loaded = load(path)
    assert isinstance(loaded.fusion, LateFusion) and loaded.fusion.weights == "equal"
    np.testing.assert_array_equal(loaded.predict_proba(views), model.predict_proba(views))


def test_the_estimators_settings_reach_a_strategy_object_in_a_grid_search(data):
    """weights, classifier and cv of the estimator apply to a strategy given as an object,
    as to one given by name: GridSearchCV sees them (issue 28)."""
    from sklearn.linear_model import LogisticRegression

    views, y = data
    search = GridSearchCV(MultimodalClassifier(fusion=LateFusion(), cv=3, random_state=0),
                          {"weights": ["equal", "relative"]}, cv=3)
    search.fit(views_to_frame(views), y)
    assert [p["weights"] for p in search.cv_results_["params"]] == ["equal", "relative"]
    best = search.best_estimator_
    assert best.fusion_.weights == search.best_params_["weights"] and best.fusion_.cv == 3
    assert best.fusion.weights == "cv"  # the object given is not changed
    by_name = MultimodalClassifier(fusion="late", weights="relative", cv=3, random_state=0)
    by_object = MultimodalClassifier(fusion=LateFusion(), weights="relative", cv=3,
                                     random_state=0)
    np.testing.assert_array_equal(by_name.fit(views, y).predict_proba(views),
                                  by_object.fit(views, y).predict_proba(views))
    base = LogisticRegression(C=0.5, max_iter=500)
    fitted = MultimodalClassifier(fusion=EarlyFusion(), classifier=base,
                                  random_state=0).fit(views, y)
    assert fitted.fusion_.classifier is base


def test_a_setting_given_twice_differently_is_an_error(data):
    views, y = data
    model = MultimodalClassifier(fusion=LateFusion(weights="equal"), weights="relative")
    with pytest.raises(InputError, match=r"weights is set both on MultimodalClassifier "
                                         r"\('relative'\) and on its fusion strategy "
                                         r"\('equal'\); set it in one place"):
        model.fit(views, y)
    # the same value on both sides is no conflict
    MultimodalClassifier(fusion=LateFusion(weights="equal"), weights="equal", cv=3).fit(views, y)
