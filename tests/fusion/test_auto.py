"""fusion="auto": selection by inner cross-validation, never below the best single modality."""

import importlib.util

import numpy as np
import pytest

from conftest import make_views, spy_inner_splits
from mmfuse import InputError, MultimodalClassifier
from mmfuse.fusion import auto as auto_module
from mmfuse.fusion import create_fusion
from mmfuse.fusion.base import WeightsFallbackWarning

CLASSICAL_ONLY = {"neural": False, "cv": 3}


def best_single(f):
    return max(v for k, v in f.inner_scores_.items() if k.startswith("single:"))


def test_complementary_views_choose_a_fusion():
    views, y = make_views(n=400)
    f = create_fusion("auto", random_state=0, **CLASSICAL_ONLY).fit(views, y)
    assert not f.chosen_name_.startswith("single:")
    # (the one-SE rule may keep a simple fusion a little below the best learned one)
    assert f.inner_scores_[f.chosen_name_] >= max(f.inner_scores_.values()) - 0.05
    assert f.inner_scores_[f.chosen_name_] > best_single(f) + 0.1
    assert {"early[equal]", "seed-baseline", "late[cv]", "late[equal]", "stacking",
            "single:a", "single:b"} <= set(f.inner_scores_)
    assert f.score(views, y) > 0.65
    assert set(f.modality_weights_) == {"a", "b"}


def test_one_informative_view_among_noise_is_never_beaten_by_a_worse_choice():
    rng = np.random.default_rng(0)
    n = 300
    y = rng.integers(0, 3, n)
    good = rng.normal(size=(n, 4)).astype(np.float32)
    good[:, 0] += 3.0 * y
    views = {"good": good, "noise1": rng.normal(size=(n, 30)).astype(np.float32),
             "noise2": rng.normal(size=(n, 30)).astype(np.float32)}
    f = create_fusion("auto", random_state=0, **CLASSICAL_ONLY).fit(views, y)
    # the guarantee: on the inner folds the choice is at least the best single modality
    assert f.inner_scores_[f.chosen_name_] >= best_single(f)
    assert f.inner_scores_["single:good"] == best_single(f)
    assert sum(f.modality_weights_.values()) == pytest.approx(1.0)
    assert set(f.modality_weights_) == {"good", "noise1", "noise2"}


def test_inner_splits_are_grouped(monkeypatch):
    seen = spy_inner_splits(monkeypatch, auto_module)
    views, y = make_views(n=240)
    groups = np.repeat(np.arange(6), 40)
    create_fusion("auto", random_state=0, **CLASSICAL_ONLY).fit(views, y, groups=groups)
    groups_seen, splits = seen[0]
    assert groups_seen is not None
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])


def test_candidates_and_fixed_weights():
    views, y = make_views(n=240, noise_view=True)
    f = create_fusion("auto", candidates=["late", ("early", {"weights": "equal"})],
                      weights="relative", cv=3, random_state=0).fit(views, y)
    scored = {k for k in f.inner_scores_ if not k.startswith("ensemble(")}
    assert scored == {"late[relative]", "early[relative]", "single:a", "single:b",
                      "single:noise"}


def test_candidate_params_reach_the_candidates():
    views, y = make_views(n=200)
    f = create_fusion("auto", candidates=["weighted"], candidate_params={
        "weighted": {"projection": "pca", "dim": 3}}, cv=3, random_state=0).fit(views, y)
    if f.chosen_name_.startswith("weighted"):
        assert f.chosen_.projection == "pca"
    assert "weighted[cv]" in f.inner_scores_


@pytest.mark.parametrize("params, match", [
    ({"candidates": ["magic"]}, "unknown fusion strategy 'magic'; valid names"),
    ({"candidates": ["auto"]}, "'auto' cannot be one of its own candidates"),
    ({"candidates": "late"}, "candidates must be a list"),
    ({"candidates": [3]}, "each candidate must be a strategy name or a"),
    ({"neural": "yes"}, "neural must be True, False, 'auto' or head names among"),
    ({"neural": ["gmu", 3]}, "neural must be True, False, 'auto' or head names among"),
])
def test_bad_candidates(params, match):
    views, y = make_views(n=100)
    with pytest.raises(InputError, match=match):
        create_fusion("auto", **params).fit(views, y)


def test_reproducible():
    views, y = make_views(n=200, noise_view=True)
    params = {"candidates": ["late", "stacking"], "cv": 3, "random_state": 1}
    a = create_fusion("auto", **params).fit(views, y)
    b = create_fusion("auto", **params).fit(views, y)
    assert a.chosen_name_ == b.chosen_name_ and a.inner_scores_ == b.inner_scores_


def test_too_little_data_falls_back_to_early_fusion():
    views, y = make_views(n=40)
    y = np.r_[np.zeros(39, int), 1]  # one sample of class 1: no inner split is possible
    with pytest.warns(WeightsFallbackWarning, match="auto fusion fell back to early fusion"):
        f = create_fusion("auto", **CLASSICAL_ONLY).fit(views, y)
    assert f.chosen_name_ == "early[equal]" and f.inner_scores_ == {}
    assert f.weights_fallback_.startswith("early fusion with equal weights: too few")


def test_through_the_classifier_reports_the_choice():
    views, y = make_views(n=300)
    clf = MultimodalClassifier(fusion="auto", cv=3, random_state=0,
                               fusion_params={"neural": False})
    clf.fit(views, y)
    assert clf.fusion_.chosen_name_ in clf.fusion_.inner_scores_
    assert clf.score(views, y) > 0.65


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_learned_heads_are_candidates_when_asked_and_torch_is_installed():
    views, y = make_views(n=200)
    fast = {"max_epochs": 20, "patience": 4}
    f = create_fusion("auto", candidates=["late"], cv=3, random_state=0).fit(views, y)
    assert "gmu" not in f.inner_scores_  # an explicit list is taken as given
    f = create_fusion("auto", cv=3, random_state=0, candidate_params={
        "gmu": fast, "attention": fast, "lowrank": fast}).fit(views, y)
    # gmu is raced by default: scored, or stopped by the race; the other heads are opt-in
    assert "gmu" in f.inner_scores_ or "raced out" in f.failed_candidates_["gmu"]
    assert "attention" not in f.inner_scores_ and "lowrank" not in f.inner_scores_
    f = create_fusion("auto", cv=3, random_state=0, neural=False).fit(views, y)
    assert "gmu" not in f.inner_scores_ and "gmu" not in f.failed_candidates_
    f = create_fusion("auto", cv=3, random_state=0, neural="auto", candidate_params={
        "gmu": fast, "attention": fast, "lowrank": fast}).fit(views, y)
    assert {"gmu", "attention", "lowrank"} <= set(f.inner_scores_)


# -- ensemble selection ------------------------------------------------------------------------

def test_ensemble_is_used_only_when_at_least_as_accurate_as_the_best_candidate():
    views, y = make_views(n=400, noise_view=True)
    f = create_fusion("auto", ensemble=True, random_state=0, **CLASSICAL_ONLY).fit(views, y)
    single = {k: v for k, v in f.inner_scores_.items()
              if not k.startswith(("ensemble(", "average("))}
    if f.chosen_name_.startswith("ensemble("):
        assert f.inner_scores_[f.chosen_name_] >= max(single.values())
    assert sum(f.ensemble_weights_.values()) == pytest.approx(1.0)
    assert len(f.members_) == len(f.ensemble_weights_)
    if len(f.members_) > 1:
        assert f.chosen_name_ == "ensemble(" + "+".join(sorted(f.ensemble_weights_)) + ")"


def test_ensemble_false_picks_one_candidate():
    views, y = make_views(n=300, noise_view=True)
    f = create_fusion("auto", ensemble=False, random_state=0, **CLASSICAL_ONLY).fit(views, y)
    assert len(f.members_) == 1 and f.ensemble_weights_ == {f.chosen_name_: 1.0}
    # off by default (measured: the gated ensemble lost on the tuxpaint sets)
    assert create_fusion("auto").get_params()["ensemble"] is False
    assert not any(k.startswith("ensemble(") for k in f.inner_scores_)
    assert f.members_[0] is f.chosen_


def _forced_ensemble(monkeypatch, counts):
    monkeypatch.setattr(auto_module.AutoFusion, "_select_ensemble",
                        lambda self, oof, y, best, *rest: dict(counts))
    views, y = make_views(n=240)
    return views, y, create_fusion("auto", candidates=["late"], ensemble=True, random_state=0,
                                   **CLASSICAL_ONLY).fit(views, y)


def test_ensemble_predicts_the_weighted_mean_of_its_members(monkeypatch):
    views, y, f = _forced_ensemble(monkeypatch, {"late[cv]": 3, "single:b": 1})
    assert f.chosen_name_ == "ensemble(late[cv]+single:b)"
    assert f.ensemble_weights_ == {"late[cv]": 0.75, "single:b": 0.25}
    assert f.chosen_name_ != "single:b" and f.chosen_.__class__.__name__ == "LateFusion"
    late, single_b = f.members_
    expected = 0.75 * late.predict_proba(views) + 0.25 * single_b.predict_proba({"b": views["b"]})
    np.testing.assert_allclose(f.predict_proba(views), expected, atol=1e-12)
    assert f.modality_weights_["a"] + f.modality_weights_["b"] == pytest.approx(1.0)


def test_ensemble_member_that_sees_nothing_of_a_row_gets_no_say(monkeypatch):
    views, y, f = _forced_ensemble(monkeypatch, {"late[cv]": 1, "single:b": 1})
    present = {"a": np.ones(len(y), bool), "b": np.ones(len(y), bool)}
    present["b"][:10] = False
    proba = f.predict_proba(views, present)
    late = f.members_[0].predict_proba(views, present)
    # without b, only late fusion (on a) speaks: single:b would answer with the class prior
    np.testing.assert_allclose(proba[:10], late[:10], atol=1e-12)
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_a_fixed_choice_fits_and_averages_its_members_without_a_selection(monkeypatch):
    views, y, forced = _forced_ensemble(monkeypatch, {"late[cv]": 3, "single:b": 1})
    fixed = create_fusion("auto", candidates=["late"], choice={"late[cv]": 3, "single:b": 1},
                          random_state=0, **CLASSICAL_ONLY).fit(views, y)
    assert fixed.inner_scores_ == {}  # nothing scored, nothing selected
    assert fixed.chosen_name_ == forced.chosen_name_ == "ensemble(late[cv]+single:b)"
    assert fixed.ensemble_weights_ == forced.ensemble_weights_
    np.testing.assert_allclose(fixed.predict_proba(views), forced.predict_proba(views))


@pytest.mark.parametrize("choice", [{"stacking": 1}, {"late[cv]": 0}, {}])
def test_a_fixed_choice_names_known_candidates_with_positive_weights(choice):
    views, y = make_views(n=100)
    with pytest.raises(InputError, match="choice: positive weights of candidates among"):
        create_fusion("auto", candidates=["late"], choice=choice, **CLASSICAL_ONLY).fit(views, y)


@pytest.mark.parametrize("params, match", [
    ({"ensemble": "yes"}, "ensemble must be True or False"),
    ({"ensemble_size": 0}, "ensemble_size must be an integer >= 1"),
])
def test_bad_ensemble_parameters(params, match):
    views, y = make_views(n=100)
    with pytest.raises(InputError, match=match):
        create_fusion("auto", **params).fit(views, y)


def test_simple_candidates_tied_with_the_choice_are_averaged():
    from mmfuse.fusion.choice import tied_with

    scores = {"early[equal]": np.array([0.8, 0.7, 0.9]), "seed-baseline": np.array([0.79, 0.72, 0.88]),
              "single:a": np.array([0.5, 0.5, 0.5])}
    assert tied_with(scores, "early[equal]", set(scores)) == ["early[equal]", "seed-baseline"]
    views, y = make_views(n=300)
    twins = {"a": views["a"], "b": views["a"].copy()}  # single:a and single:b tie exactly
    f = create_fusion("auto", ensemble=False, average_ties=True, random_state=0,
                      **CLASSICAL_ONLY).fit(twins, y)
    assert f.chosen_name_.startswith("average(") and len(f.members_) > 1
    assert f.chosen_name_ in f.inner_scores_
    assert set(f.ensemble_weights_.values()) == {1 / len(f.members_)}
    mean = np.mean([f._proba(e, c, twins, {m: np.ones(300, bool) for m in twins})
                    for c, e in zip(f.member_candidates_, f.members_)], axis=0)
    np.testing.assert_allclose(f.predict_proba(twins), mean, atol=1e-9)
    f = create_fusion("auto", ensemble=False, random_state=0, **CLASSICAL_ONLY).fit(twins, y)
    assert len(f.members_) == 1 and f.chosen_name_ in f.inner_scores_


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_a_raced_head_that_trails_the_simple_candidates_stops_early(monkeypatch):
    from mmfuse.fusion import candidates as candidates_module
    from mmfuse.fusion.neural import NeuralFusion

    views, y = make_views(n=300)
    trained = []
    original = NeuralFusion._fit

    def counting_fit(self, *args, **kwargs):
        trained.append(self.n_members)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(NeuralFusion, "_fit", counting_fit)
    # an impossible margin: the head must beat the best simple candidate by 100 points
    monkeypatch.setattr(candidates_module, "HEAD_RACE_MARGIN", -1.0)
    fast = {"max_epochs": 5, "patience": 2}
    f = create_fusion("auto", cv=4, random_state=0, candidate_params={"gmu": fast}).fit(views, y)
    assert "raced out after 2 inner folds" in f.failed_candidates_["gmu"]
    assert "gmu" not in f.inner_scores_ and f.chosen_name_ != "gmu"
    assert trained == [1, 1]  # two inner folds, one network each; no refit of the head
    # a margin the head passes: scored on every fold, one network per inner fold
    trained.clear()
    monkeypatch.setattr(candidates_module, "HEAD_RACE_MARGIN", 2.0)
    f = create_fusion("auto", cv=4, random_state=0, candidate_params={"gmu": fast}).fit(views, y)
    assert "gmu" in f.inner_scores_ and len(f.inner_fold_scores_["gmu"]) == 4
    assert trained[:4] == [1, 1, 1, 1]


def test_head_race_check_compares_with_the_best_simple_candidate_on_the_same_folds():
    from mmfuse.fusion.candidates import RacedOut, head_race

    y = np.array([0, 1, 0, 1, 0, 1])
    splits = [(None, np.array([0, 1])), (None, np.array([2, 3])), (None, np.array([4, 5]))]
    scores = {"single:a": [1.0, 1.0, 0.0], "late[cv]": [1.0, 1.0, 1.0]}
    check = head_race(scores, splits, y)
    wrong = np.tile([0.0, 1.0], (6, 1))  # always class 1: half right
    check(0, wrong)  # too early to judge
    with pytest.raises(RacedOut, match="after 2 inner folds: accuracy 0.500 against 1.000"):
        check(1, wrong)
    right = np.eye(2)[y]
    check(1, right)
    check(2, wrong)  # the last fold: nothing left to save


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_a_raced_head_is_not_trained_on_two_inner_folds(monkeypatch):
    from mmfuse.fusion.neural import NeuralFusion

    views, y = make_views(n=200)
    trained = []
    monkeypatch.setattr(NeuralFusion, "_fit", lambda self, *a, **k: trained.append(1))
    f = create_fusion("auto", cv=2, random_state=0).fit(views, y)
    assert "not raced: 2 inner folds" in f.failed_candidates_["gmu"]
    assert trained == [] and "gmu" not in f.inner_scores_
