"""Parameters checked in one place (mmfuse._params): constraint objects, the declarations
of MultimodalClassifier and the strategies, and the one on_error check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import make_views
from mmfuse import InputError, MultimodalClassifier
from mmfuse._params import (Boolean, HasMethods, Interval, Options, check_on_error, check_param,
                            same_value, validate_params)
from mmfuse.fusion import create_fusion


def test_constraints_describe_themselves_in_the_error():
    assert check_param("x", 3, [Interval(2, None, integer=True)]) == 3
    with pytest.raises(InputError, match=r"^cv must be an integer >= 2; got 1$"):
        check_param("cv", 1, [Interval(2, None, integer=True)])
    with pytest.raises(InputError, match=r"delta must be a number in \[0, 1\); got 1.5"):
        check_param("delta", 1.5, [Interval(0, 1, closed="left")])
    with pytest.raises(InputError, match=r"mode must be None or one of \['a', 'b'\]; got 'c'"):
        check_param("mode", "c", [None, Options(("a", "b"))])
    assert check_param("flag", np.bool_(True), [Boolean()])
    for bad in (True, 2.5, math.nan, "3"):
        assert not Interval(2, None, integer=True).is_satisfied_by(bad)
    assert not Options(("1",)).is_satisfied_by(1)  # compared with their type
    assert HasMethods(("fit",), "an estimator").is_satisfied_by(Interval(0, 1)) is False


def test_on_error_is_checked_by_one_function_everywhere():
    assert check_on_error("skip") == "skip"
    with pytest.raises(InputError, match=r"on_error must be one of \['raise', 'skip'\]; "
                                         r"got 'ignore'"):
        check_on_error("ignore")
    from pathlib import Path

    import mmfuse

    src = Path(mmfuse.__file__).parent
    inline = [str(p.relative_to(src)) for p in src.rglob("*.py")
              if "on_error not in ON_ERROR" in p.read_text(encoding="utf-8")]
    assert inline == []


@pytest.mark.parametrize("params, match", [
    ({"on_error": "ignore"}, r"on_error must be one of \['raise', 'skip'\]"),
    ({"cv": 1}, "cv must be an integer >= 2; got 1"),
    ({"scrub_pii": "yes"}, "scrub_pii must be True or False"),
    ({"pooling": "median"}, r"pooling must be one of \['mean', 'max'\]"),
    ({"fusion_params": ["x"]}, "fusion_params must be None or a dict"),
    ({"classifier": "logistic"}, "classifier must be None or a dict or a scikit-learn "
                                 "classifier with predict_proba"),
    ({"epsilon": 0}, "epsilon must be > 0"),
    ({"delta": 2.0}, r"delta must be in \[0, 1\)"),
    ({"fusion": 3}, "fusion must be a string or a fusion strategy"),
])
def test_the_estimator_checks_its_parameters_when_fit_starts(params, match):
    views, y = make_views(n=60)
    model = MultimodalClassifier(**params)  # __init__ only stores them
    with pytest.raises(InputError, match=match):
        model.fit(views, y)


def test_a_strategy_checks_the_shared_and_its_own_parameters():
    views, y = make_views(n=60)
    with pytest.raises(InputError, match="cv must be an integer >= 2; got 0"):
        create_fusion("late", cv=0).fit(views, y)
    with pytest.raises(InputError, match="fallback must be True or False"):
        create_fusion("stacking", fallback="no").fit(views, y)
    with pytest.raises(InputError, match=r"projection must be one of \['features'"):
        create_fusion("weighted", projection="svd").fit(views, y)
    validate_params(create_fusion("auto"))  # its defaults pass


def test_same_value():
    assert same_value("cv", "cv") and same_value(None, None) and not same_value(5, 5.0)
    clf = object()
    assert same_value(clf, clf) and not same_value(clf, object())
