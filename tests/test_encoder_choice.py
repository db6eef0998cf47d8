"""Encoders chosen by inner CV inside MultimodalClassifier, evaluate and the CLI (issue 16)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmfuse import InputError, MultimodalClassifier
from mmfuse.evaluate import evaluate

from conftest import number_frame

# The fake encoders of conftest keep these tests about the pipeline fast: "test-number" is
# stateless (cached features), "test-vocab" learns from its training rows.
CANDS = ["test-number", "test-vocab"]


def _frame(n=160, seed=0):
    X, y = number_frame(n=n, seed=seed)
    return X, y, np.arange(n) // 8


def test_classifier_chooses_per_column_and_predicts():
    X, y, g = _frame()
    clf = MultimodalClassifier(encoders={"left": CANDS, "right": "test-number"},
                               fusion="late", cv=4, random_state=0)
    clf.fit(X, y, groups=g)
    assert set(clf.encoders_chosen_) == {"left", "right"}
    assert clf.encoders_chosen_["left"] in tuple(CANDS)
    assert clf.encoders_chosen_["right"] == "test-number"
    assert clf.encoders_["left"].name == clf.encoders_chosen_["left"]
    sel = clf.encoder_selection_["left"]
    assert set(sel["accuracy"]) == set(CANDS) and sel["chosen"] == \
        clf.encoders_chosen_["left"]
    assert "right" not in clf.encoder_selection_  # one name: no selection
    assert np.mean(clf.predict(X) == y) > 0.7
    json.dumps(clf.encoder_selection_)  # JSON-ready


def test_single_name_keeps_todays_behaviour():
    X, y, g = _frame()
    a = MultimodalClassifier(encoders={"left": "test-number"}, fusion="late", cv=4,
                             random_state=0).fit(X, y, groups=g)
    b = MultimodalClassifier(encoders={"left": ["test-number"]}, fusion="late", cv=4,
                             random_state=0).fit(X, y, groups=g)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X))
    assert a.encoders_chosen_ == {"left": "test-number"} and a.encoder_selection_ == {}


def test_choice_errors():
    X, y, g = _frame(n=40)
    with pytest.raises(InputError, match="mix modalities"):
        MultimodalClassifier(encoders={"left": ["test-number", "hog"]}).fit(X, y)
    with pytest.raises(InputError, match="privacy budget"):
        MultimodalClassifier(encoders={"left": CANDS}, fusion="early",
                             weights="equal", epsilon=1.0).fit(X, y)


def test_evaluate_reports_the_choice_of_every_outer_fold():
    X, y, g = _frame()
    result = evaluate(X, y, encoders={"left": CANDS + ["test-number+test-vocab"],
                                      "right": "test-number"},
                      groups=g, cv=3, inner_cv=3, strategies=["late"], baseline=False)
    assert len(result.chosen_encoders) == 3
    for fold in result.chosen_encoders:
        assert set(fold) == {"left"}
        assert fold["left"] in ("test-number", "test-vocab", "test-number+test-vocab")
    doc = result.to_dict()
    assert doc["chosen_encoders"] == result.chosen_encoders
    assert result.row("left").accuracy > 0.4
    fixed = evaluate(X, y, encoders={"left": "test-number", "right": "test-number"}, groups=g, cv=3,
                     inner_cv=3, strategies=["late"], baseline=False)
    assert "chosen_encoders" not in fixed.to_dict()


def test_selection_sees_training_rows_only(monkeypatch):
    import mmfuse.encoder_choice as selection

    X, y, g = _frame()
    seen = []
    real = selection.select_encoder

    def spy(parts, cands, y_, groups=None, **kw):
        seen.append(set(groups.tolist()))
        return real(parts, cands, y_, groups, **kw)

    monkeypatch.setattr(selection, "select_encoder", spy)
    result = evaluate(X, y, encoders={"left": CANDS}, groups=g, cv=4,
                      inner_cv=3, strategies=["late"], baseline=False)
    assert len(seen) == 4
    from mmfuse.evaluate import make_splits

    splits, _ = make_splits(np.unique(y, return_inverse=True)[1], g, 4, 0)
    for (train, test), groups_seen in zip(splits, seen):
        assert groups_seen == set(g[train].tolist())
        assert not groups_seen & set(g[test].tolist())
    assert len(result.chosen_encoders) == 4


def test_robustness_chooses_per_fold_too():
    from mmfuse.evaluate import evaluate_robustness

    X, y, g = _frame(n=120)
    result = evaluate_robustness(X, y, encoders={"left": CANDS, "right": "test-number"},
                                 groups=g, cv=3, inner_cv=3, strategies=["late"],
                                 missing_levels=[0.0, 0.5], baseline=False)
    late = next(r for r in result.rows if r.name == "late")
    assert late.accuracy[0] > 0.5  # the chosen views are real features, not placeholders


SPLIT = "test-number|test-vocab"  # separate experts: the view of test-number+test-vocab


def _split_experts(model):
    from mmfuse.fusion.linear import SplitExperts

    # cross-fitted experts (one per inner fold), or one expert fitted on every row (late
    # fusion's equal form, stacking fallen back to a simple combination)
    expert = model.fusion_.experts_["left"]
    return [e.model_ for e in getattr(expert, "experts", [expert])
            if isinstance(e.model_, SplitExperts)]


def test_classifier_with_separate_experts_fits_saves_and_loads(tmp_path):
    import mmfuse
    from mmfuse.fusion.linear import ANY_VIEW

    X, y, g = _frame()
    clf = MultimodalClassifier(encoders={"left": [SPLIT], "right": "test-number"},
                               fusion="late", cv=4, random_state=0).fit(X, y, groups=g)
    assert clf.encoders_chosen_ == {"left": SPLIT, "right": "test-number"}
    assert clf.encoders_["left"].name == "test-number+test-vocab"
    experts = _split_experts(clf)
    assert len(experts) == 4 and all(e.widths == (2, 2) for e in experts)
    assert clf.fusion_.classifier[ANY_VIEW] is None and "right" not in clf.fusion_.classifier
    assert clf.get_params()["classifier"] is None  # the estimator's parameter is unchanged
    path = clf.save(tmp_path / "split.mmfuse")
    back = mmfuse.load(path)
    np.testing.assert_array_equal(back.predict_proba(X), clf.predict_proba(X))
    assert back.encoders_chosen_["left"] == SPLIT
    # the concatenation, one classifier: another model
    cat = MultimodalClassifier(encoders={"left": ["test-number+test-vocab"],
                                         "right": "test-number"},
                               fusion="late", cv=4, random_state=0).fit(X, y, groups=g)
    assert not _split_experts(cat)
    assert not np.allclose(cat.predict_proba(X), clf.predict_proba(X))


def test_strategy_instance_gets_the_separate_experts_too():
    from sklearn.linear_model import LogisticRegression

    from mmfuse.fusion.stacking import StackingFusion

    X, y, g = _frame()
    base = LogisticRegression(C=0.5, max_iter=500)
    clf = MultimodalClassifier(encoders={"left": [SPLIT], "right": "test-number"},
                               fusion=StackingFusion(classifier=base, cv=3),
                               random_state=0).fit(X, y, groups=g)
    experts = _split_experts(clf)
    assert experts and all(e.estimator.C == 0.5 for e in experts)
    assert clf.fusion.classifier is base  # the instance given is not changed


def test_evaluate_folds_choosing_separate_experts_fit_them(monkeypatch):
    import mmfuse.encoder_choice as selection
    import mmfuse.encoders.candidates as candidates
    from mmfuse.fusion.linear import SplitExperts

    X, y, g = _frame()
    fits = []
    real_fit = SplitExperts.fit
    monkeypatch.setattr(SplitExperts, "fit",
                        lambda self, *a, **k: fits.append(self.widths) or real_fit(self, *a, **k))
    # "auto" for the column: its candidates are the fake encoders, and every pair form
    monkeypatch.setattr(candidates, "installed_encoders", lambda modality, variants=False: CANDS)
    monkeypatch.setattr(selection, "SEPARATE_EXPERTS", True)  # opt-in for "auto"
    result = evaluate(X.rename(columns={"left": "text"}), y,
                      encoders={"text": "auto", "right": "test-number"}, groups=g,
                      cv=3, inner_cv=3, strategies=["late"], baseline=False)
    assert len(result.chosen_encoders) == 3
    assert fits  # "a|b" was scored by its own experts in the inner folds
    assert all(f["text"] in CANDS + [SPLIT, "test-number+test-vocab"]
               for f in result.chosen_encoders)
    fits.clear()
    forced = evaluate(X, y, encoders={"left": [SPLIT], "right": "test-number"}, groups=g,
                      cv=3, inner_cv=3, strategies=["late"], baseline=False)
    assert [f["left"] for f in forced.chosen_encoders] == [SPLIT] * 3
    assert fits and set(fits) == {(2, 2)}  # each fold's late fusion fitted separate experts
    assert forced.row("late").accuracy > 0.4
