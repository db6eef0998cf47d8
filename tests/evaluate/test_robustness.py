"""Robustness evaluation: accuracy per strategy as a fraction of one modality goes missing."""

import json

import numpy as np
import pytest

from conftest import make_views, number_frame
from mmfuse import InputError
from mmfuse.evaluate import FeatureTable, evaluate
from mmfuse.evaluate.robustness import drop_fraction, evaluate_robustness

LEVELS = [0, 0.5, 1.0]


@pytest.fixture(scope="module")
def result():
    views, y = make_views(n=300, noise_view=True)
    return evaluate_robustness(views, y, strategies=["late", "early"], missing_levels=LEVELS,
                               missing_modality="a", cv=3, inner_cv=3, random_state=0)


def test_rows_and_levels(result):
    assert result.levels == [0.0, 0.5, 1.0]
    assert result.missing_modality == "a"
    assert [r.name for r in result.rows] == ["a", "b", "noise", "late", "early", "seed-baseline"]
    for r in result.rows:
        assert len(r.accuracy) == len(r.accuracy_ci95) == 3
        assert all(lo <= acc <= hi for acc, (lo, hi) in zip(r.accuracy, r.accuracy_ci95))


def test_only_configurations_using_the_modality_change(result):
    assert result.row("b").accuracy == [result.accuracy("b", 0)] * 3
    a = result.row("a").accuracy
    assert a[0] > a[1] > a[2]  # the single modality loses its samples
    # fusion degrades gracefully: with half of a missing it beats b alone
    assert result.accuracy("late", 0.5) > result.accuracy("b", 0)


def test_with_the_modality_gone_late_fusion_is_the_other_modality(result):
    # fitted on complete rows; at test time only b (and noise) are left
    assert result.accuracy("late", 1.0) >= result.accuracy("b", 0) - 0.05


def test_level_zero_matches_evaluate():
    views, y = make_views(n=240)
    rob = evaluate_robustness(views, y, strategies=["late"], missing_levels=[0.5],
                              missing_modality="b", cv=3, inner_cv=3, random_state=0)
    ev = evaluate(views, y, strategies=["late"], cv=3, inner_cv=3, random_state=0)
    for row in ev.rows:
        assert rob.accuracy(row.name, 0) == pytest.approx(row.accuracy)


def test_best_modality_is_resolved_from_the_same_run():
    views, y = make_views(n=240)
    views["b"] = views["b"] + np.random.default_rng(0).normal(0, 3, views["b"].shape).astype(
        np.float32)  # make b the weaker modality
    rob = evaluate_robustness(views, y, strategies=["late"], missing_levels=[0.3], cv=3,
                              inner_cv=3, random_state=0)
    assert rob.missing_modality == rob.singles_ranked()[0].name == "a"


def test_train_missing_refits_and_notes_a_modality_gone_from_training():
    views, y = make_views(n=200)
    rob = evaluate_robustness(views, y, strategies=["late"], missing_levels=[0.5, 1.0],
                              missing_modality="a", train_missing=True, cv=3, inner_cv=3,
                              random_state=0)
    assert rob.train_missing
    assert rob.accuracy("a", 1.0) < rob.accuracy("a", 0)
    assert any("['a'] missing from every training row" in n for n in rob.notes)
    assert any("a: no training row has ['a']" in n for n in rob.notes)


def test_masking_is_exact_nested_and_seeded():
    draws = np.random.default_rng(0).random(100)
    present = np.ones(100, bool)
    present[:10] = False
    rows = np.arange(100)
    m30 = drop_fraction(present, rows, 0.3, draws)
    m50 = drop_fraction(present, rows, 0.5, draws)
    assert (present & ~m30).sum() == 27 and (present & ~m50).sum() == 45  # of 90 present
    assert ((present & ~m30) <= (present & ~m50)).all()  # nested
    np.testing.assert_array_equal(m30, drop_fraction(present, rows, 0.3, draws))
    assert not (m30 & ~present).any()  # nothing becomes present


def test_deterministic_and_json_section():
    views, y = make_views(n=200)
    kw = dict(strategies=["late"], missing_levels="0,0.3", missing_modality="a", cv=3,
              inner_cv=3, random_state=5)
    a = evaluate_robustness(views, y, **kw)
    b = evaluate_robustness(views, y, **kw)
    for r, s in zip(a.rows, b.rows):
        assert r.accuracy == s.accuracy and r.accuracy_ci95 == s.accuracy_ci95
    doc = json.loads(json.dumps(a.to_dict()))
    assert doc["missing_modality"] == "a" and doc["levels"] == [0.0, 0.3]
    assert {"name", "kind", "accuracy", "accuracy_ci95"} <= set(doc["rows"][0])
    assert set(doc["best"]) == {"0.0", "0.3"}
    assert list(a.to_frame().columns) == ["kind", "0", "0.3"]


def test_accepts_a_feature_table_and_groups():
    views, y = make_views(n=240)
    groups = np.repeat(np.arange(6), 40)
    table = FeatureTable(views, None)
    rob = evaluate_robustness(table, y, groups=groups, strategies=["late"],
                              missing_levels=[0.5], missing_modality="a", cv=3, inner_cv=3)
    assert rob.cv["kind"] == "stratified-group"


@pytest.mark.parametrize("kwargs, match", [
    ({"missing_levels": [0.2, 1.5]}, r"missing levels must be fractions in \[0, 1\]"),
    ({"missing_levels": "0,half"}, "missing levels must be numbers"),
    ({"missing_modality": "text"}, r"missing_modality must be one of \['a', 'b'\] or 'best'"),
    ({"singles": False}, "needs the single-modality rows"),
])
def test_bad_arguments(kwargs, match):
    views, y = make_views(n=60)
    with pytest.raises(InputError, match=match):
        evaluate_robustness(views, y, strategies=["late"], cv=3, **kwargs)


def test_a_column_of_separate_experts_is_fitted_as_in_evaluate(monkeypatch):
    # the engine hands robustness the fold's classifier: a column that chose separate
    # experts ("a|b") gets its SplitExperts there too, so level 0 is evaluate's folds
    from mmfuse.fusion.linear import SplitExperts

    X, y = number_frame(n=120)
    g = np.arange(120) // 8
    fits = []
    real_fit = SplitExperts.fit
    monkeypatch.setattr(SplitExperts, "fit",
                        lambda self, *a, **k: fits.append(self.widths) or real_fit(self, *a, **k))
    spec = {"left": ["test-number|test-vocab"], "right": "test-number"}
    kwargs = dict(encoders=spec, groups=g, cv=3, inner_cv=3, strategies=["late"],
                  baseline=False, random_state=0)
    rob = evaluate_robustness(X, y, missing_levels=[0.5], missing_modality="right", **kwargs)
    assert fits and set(fits) == {(2, 2)}
    ev = evaluate(X, y, **kwargs)
    for row in ev.rows:
        assert rob.row(row.name).fold_accuracy[0] == row.fold_accuracy
