"""The encoder choice by inner cross-validation (mmfuse.encoder_choice) and what it chooses
from (mmfuse.encoders.candidates)."""

from __future__ import annotations

import numpy as np
import pytest

from mmfuse import InputError
import mmfuse.encoder_choice as selection
import mmfuse.encoders.candidates as candidates
from mmfuse.encoder_choice import one_se_cheapest, parsimonious_choice, select_encoder
from mmfuse.encoders.candidates import (Candidates, encoder_cost, installed_encoders,
                                        parse_candidates)
from mmfuse.encoders.featurizer import encode_candidates
from mmfuse.encoders.parts import Part, candidate_features, candidate_view, view_classifier


def _data(n=240, n_classes=4, seed=0, groups=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    good = rng.normal(size=(n, 6)).astype(np.float32)
    good[np.arange(n), y] += 3.0                      # knows the class well
    weak = rng.normal(size=(n, 6)).astype(np.float32)
    weak[np.arange(n), y] += 0.4                      # barely
    noise = rng.normal(size=(n, 6)).astype(np.float32)
    g = (np.arange(n) // 12) if groups else None
    return y, g, {"good": good, "weak": weak, "noise": noise}


def _parts(views):
    return {k: Part(np.ones(v.shape[0], bool), view=v) for k, v in views.items()}


def test_default_choice_gives_up_no_inner_accuracy_for_a_cheaper_encoder(monkeypatch):

    y, g, views = _data(groups=True)
    views["good2"] = views["good"] + np.float32(0.3) * views["noise"]  # a bit worse, cheaper
    monkeypatch.setitem(candidates.COST, "good", 50.0)
    monkeypatch.setitem(candidates.COST, "good2", 1.0)
    parts = _parts(views)
    sel = select_encoder(parts, Candidates(("good2", "good")), y, g, cv=4, random_state=0)
    acc = {n: float(np.mean(v)) for n, v in sel.fold_accuracy.items()}
    assert sel.chosen == max(acc, key=lambda n: (acc[n], -candidates.COST[n]))
    assert selection.MAX_ACCURACY_LOSS == 0.0


def test_one_se_prefers_the_cheaper_candidate_within_noise():
    scores = {"costly": [0.80, 0.82, 0.79, 0.81], "cheap": [0.79, 0.83, 0.78, 0.80]}
    assert one_se_cheapest(scores, {"costly": 10, "cheap": 1}) == "cheap"
    clear = {"costly": [0.90, 0.91, 0.92, 0.90], "cheap": [0.70, 0.72, 0.69, 0.71]}
    assert one_se_cheapest(clear, {"costly": 10, "cheap": 1}) == "costly"
    with pytest.raises(InputError):
        one_se_cheapest({}, {})


def test_one_se_gives_up_at_most_the_accuracy_cap_for_a_cheaper_encoder():
    # noisy folds: "cheap" is 3 points worse on average but within one SE of "costly"
    acc = {"costly": [0.90, 0.70, 0.85, 0.65], "cheap": [0.80, 0.72, 0.78, 0.68]}
    costs = {"costly": 10, "cheap": 1}
    assert one_se_cheapest(acc, costs) == "cheap"
    assert one_se_cheapest(acc, costs, acc, 0.01) == "costly"
    assert one_se_cheapest(acc, costs, acc, 0.05) == "cheap"
    # the cap is on accuracy even when another score chooses
    loss = {"costly": [-0.5, -0.9, -0.6, -0.95], "cheap": [-0.55, -0.85, -0.65, -0.95]}
    assert one_se_cheapest(loss, costs) == "cheap"
    assert one_se_cheapest(loss, costs, acc, 0.01) == "costly"


@pytest.mark.parametrize("scoring", ["log_loss", "accuracy"])
@pytest.mark.parametrize("grouped", [False, True])
def test_select_finds_the_informative_encoder(scoring, grouped, monkeypatch):
    y, g, views = _data(groups=grouped)
    # make "good" the costliest: it must still win, by far more than one standard error
    monkeypatch.setitem(candidates.COST,
                        "good", 50.0)
    sel = select_encoder(_parts(views), Candidates(("noise", "weak", "good")), y, g,
                         cv=4, scoring=scoring, random_state=0, race_margin=None)
    assert sel.chosen == "good"
    assert set(sel.fold_accuracy) == {"noise", "weak", "good"}
    assert all(len(v) == 4 for v in sel.fold_accuracy.values())
    assert np.mean(sel.fold_accuracy["good"]) > np.mean(sel.fold_accuracy["noise"]) + 0.3
    assert sel.to_dict()["chosen"] == "good"


def test_inner_splits_are_grouped_when_groups_exist(monkeypatch):

    y, g, views = _data(groups=True)
    seen = []
    real = selection.score_candidates

    def spy(parts, names, y_, splits, *a, **k):
        seen.extend(splits)
        return real(parts, names, y_, splits, *a, **k)

    monkeypatch.setattr(selection, "score_candidates", spy)
    select_encoder(_parts(views), Candidates(("weak", "good")), y, g, cv=4, random_state=0)
    assert seen
    for train, test in seen:
        assert not set(g[train]) & set(g[test])


def test_pair_candidate_is_scored_and_can_win(monkeypatch):
    rng = np.random.default_rng(1)
    n = 320
    y = np.arange(n) % 4
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    a[:, 0] += 3.0 * (y % 2)   # a knows the parity, b the half: only both know the class
    b[:, 0] += 3.0 * (y // 2)
    parts = _parts({"a": a, "b": b})
    sel = select_encoder(parts, Candidates(("a", "b"), pair=True), y, cv=4, random_state=0)
    assert "a+b" in sel.fold_scores
    assert sel.chosen == "a+b"
    # without pair=True only the listed candidates are scored
    sel = select_encoder(parts, Candidates(("a", "b")), y, cv=4, random_state=0)
    assert set(sel.fold_scores) == {"a", "b"}


def test_no_pair_is_scored_where_parsimony_could_not_admit_it():
    # two inner folds (leave one group out over three groups): no gain is established on
    # fewer than MIN_FOLDS folds, so the pair is not fitted; without parsimony it is
    rng = np.random.default_rng(1)
    n = 240
    y = np.arange(n) % 4
    g = np.arange(n) % 3
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    a[:, 0] += 3.0 * (y % 2)
    b[:, 0] += 3.0 * (y // 2)
    parts = _parts({"a": a, "b": b})
    sel = select_encoder(parts, Candidates(("a", "b"), pair=True), y, g, cv=2, random_state=0)
    assert len(next(iter(sel.fold_scores.values()))) == 2
    assert set(sel.fold_scores) == {"a", "b"} and sel.chosen in {"a", "b"}
    off = select_encoder(parts, Candidates(("a", "b"), pair=True), y, g, cv=2,
                         random_state=0, parsimony=False)
    assert "a+b" in off.fold_scores


def test_an_extra_encoder_must_beat_the_best_single_by_one_standard_error():
    costs = {"a": 1.0, "b": 2.0, "a+b": 3.0}
    # the pair's edge over "a" is within one SE of the paired differences: "a" stays
    noisy = {"a": [0.70, 0.60, 0.80, 0.70], "b": [0.5, 0.5, 0.5, 0.5],
             "a+b": [0.72, 0.58, 0.84, 0.71]}
    assert one_se_cheapest(noisy, costs, noisy, 0.0) == "a+b"  # the best mean, as before
    assert parsimonious_choice(noisy, costs, noisy, 0.0) == "a"
    # a steady gain on every fold pays for the extra encoder
    steady = {"a": [0.70, 0.60, 0.80, 0.70], "b": [0.5, 0.5, 0.5, 0.5],
              "a+b": [0.75, 0.66, 0.84, 0.76]}
    assert parsimonious_choice(steady, costs, steady, 0.0) == "a+b"
    # among single encoders the rule is unchanged
    singles = {k: v for k, v in noisy.items() if "+" not in k}
    assert parsimonious_choice(singles, costs, singles, 0.0) == one_se_cheapest(
        singles, costs, singles, 0.0)


def test_select_encoder_applies_parsimony_to_the_pair(monkeypatch):
    y, _, views = _data(n=240)
    parts = _parts({"good": views["good"], "weak": views["weak"]})
    sel = select_encoder(parts, Candidates(("good", "weak"), pair=True), y, cv=4,
                         random_state=0)
    assert "good+weak" in sel.fold_scores
    expected = parsimonious_choice({n: sel.fold_scores[n] for n in sel.fold_scores},
                                   sel.costs, sel.fold_accuracy, 0.0)
    assert sel.chosen == expected
    off = select_encoder(parts, Candidates(("good", "weak"), pair=True), y, cv=4,
                         random_state=0, parsimony=False)
    assert off.chosen == one_se_cheapest(off.fold_scores, off.costs, off.fold_accuracy, 0.0)


def test_single_candidate_is_no_selection():
    y, g, views = _data()
    sel = select_encoder(_parts(views), Candidates(("weak",)), y)
    assert sel.chosen == "weak" and not sel.fold_scores


def test_encoder_that_learns_is_fit_on_training_rows_only():
    from mmfuse.encoders.registry import create_encoder

    texts = ["alpha beta", "gamma delta", "alpha gamma", "zeta eta"]
    enc = create_encoder("tfidf", char_ngrams=None)
    prepared, mask, _ = enc.prepare_all(texts)
    part = Part(mask, encoder=enc, prepared=prepared)
    train = np.array([0, 1])
    view = part.features(train)
    # "zeta" / "eta" only occur in row 3 (not a training row): that row has no features
    assert view[3].nnz == 0 and view[0].nnz > 0
    assert enc is part.encoder and not hasattr(enc, "vectorizers_")  # the original is not fitted


def test_candidate_features_concatenates_and_masks():
    p = {"a": Part(np.array([True, True, False]), view=np.ones((3, 2), np.float32)),
         "b": Part(np.array([True, False, True]), view=np.zeros((3, 1), np.float32))}
    view, present = candidate_features(p, "a+b", None)
    assert view.shape == (3, 3) and present.tolist() == [True, False, False]
    assert np.isnan(view[1]).all() and not np.isnan(view[0]).any()
    with pytest.raises(InputError, match="no features"):
        candidate_features(p, "c", None)


def test_parse_candidates():
    auto = parse_candidates("auto", "text")
    assert auto.pair and "tfidf" in auto.names
    assert "hashing" not in auto.names and "tfidf-hashed" not in auto.names  # privacy variants
    assert "hashing" in installed_encoders("text", variants=True)
    assert list(auto.names) == installed_encoders("text")
    assert [encoder_cost(n) for n in auto.names] == sorted(encoder_cost(n) for n in auto.names)
    listed = parse_candidates(["tfidf", "hashing+tfidf"], "text")
    assert listed == Candidates(("tfidf", "hashing+tfidf"), False)
    assert encoder_cost("hashing+tfidf") == encoder_cost("hashing") + encoder_cost("tfidf")
    with pytest.raises(InputError, match="mix modalities"):
        parse_candidates(["tfidf", "hog"], "text")
    with pytest.raises(InputError, match="unknown encoder"):
        parse_candidates(["tfidf", "nope"], "text")
    with pytest.raises(InputError, match="repeat"):
        parse_candidates(["tfidf", "tfidf"], "text")
    with pytest.raises(InputError, match="modality is unknown"):
        parse_candidates("auto", "caption")
    assert parse_candidates("auto", "caption", modality="text").pair


def test_encode_candidates_reports_each_bad_item_once(tmp_path):
    texts = ["a red fish", None, "two blue birds", "green frog"]
    parts, errors = encode_candidates(["hashing", "tfidf"], texts, "text", cache=None)
    assert parts["hashing"].view is not None and parts["tfidf"].encoder is not None
    assert parts["tfidf"].present.tolist() == [True, False, True, True]
    assert errors == []
    # an item both candidates fail on is one error, not two
    parts, errors = encode_candidates(["hashing", "tfidf"], texts[:2] + [5] + texts[3:],
                                      "text", cache=None, on_error="skip")
    assert [(e.row, e.column) for e in errors] == [(2, "text")]
    assert parts["hashing"].present.tolist() == [True, False, False, True]


def test_fusion_reuses_the_selection_experts_in_a_shared_memo(monkeypatch):
    import mmfuse.fusion.experts as common
    from mmfuse.fusion.experts import ExpertsCache, ModalityExpert, out_of_fold_probas

    y, g, views = _data(groups=True)
    parts = _parts(views)
    view, present = candidate_features(parts, "good", None)
    # the same experts fitted by the fusion's own code, outside any memo
    expected = out_of_fold_probas({"image": view}, y, {"image": present}, g, None, 4, 0)
    calls = []
    real_fit = ModalityExpert.fit
    monkeypatch.setattr(common.ModalityExpert, "fit",
                        lambda self, *a, **k: calls.append(1) or real_fit(self, *a, **k))
    cache = ExpertsCache()
    sel = select_encoder(parts, Candidates(("noise", "good")), y, g, cv=4, random_state=0,
                         column="image", experts_cache=cache)
    assert sel.chosen == "good" and len(calls) == 2 * 4  # each candidate, each fold
    got = out_of_fold_probas({"image": view}, y, {"image": present}, g, None, 4, 0,
                             experts_cache=cache)
    assert len(calls) == 2 * 4  # the fusion's experts came from the selection
    np.testing.assert_array_equal(got["image"], expected["image"])  # the very same numbers


def test_race_stops_scoring_clearly_beaten_candidates():
    y, g, views = _data(groups=True)
    views["good2"] = views["good"] + np.float32(0.3) * views["noise"]
    parts = _parts(views)
    names = ("noise", "weak", "good2", "good")
    full = select_encoder(parts, Candidates(names), y, g, cv=4, random_state=0,
                          race_margin=None)
    raced = select_encoder(parts, Candidates(names), y, g, cv=4, random_state=0,
                           race_margin=0.05)
    assert not full.dropped and all(len(v) == 4 for v in full.fold_accuracy.values())
    # noise and weak are far below the runner-up after two folds: two folds each
    assert raced.dropped == {"noise": 2, "weak": 2}
    assert raced.to_dict()["dropped_after_folds"] == {"noise": 2, "weak": 2}
    assert raced.chosen == full.chosen
    for n in ("good", "good2"):  # the survivors' scores are those of the full run
        assert raced.fold_accuracy[n] == full.fold_accuracy[n]
    for n in ("noise", "weak"):
        assert raced.fold_accuracy[n] == full.fold_accuracy[n][:2]
    # the log-loss rule and the plain one-SE rule score every candidate on every fold
    assert not select_encoder(parts, Candidates(names), y, g, cv=4, random_state=0,
                              scoring="log_loss", race_margin=0.05).dropped
    assert not select_encoder(parts, Candidates(names), y, g, cv=4, random_state=0,
                              max_accuracy_loss=None, race_margin=0.05).dropped


def test_outer_folds_reuse_experts_fitted_on_the_same_rows(monkeypatch):
    # leave-one-group-out outer folds with leave-one-group-out inner folds: outer fold 0's
    # inner fold "train on groups 2-5" is outer fold 1's too; with a cache sharing rows it
    # is fitted once, with the very same scores as without sharing
    import mmfuse.fusion.experts as common
    from mmfuse.fusion.experts import ExpertsCache, ModalityExpert

    y, _, views = _data()
    g = (np.arange(len(y)) // 4) % 6  # 6 groups, each holding every class
    parts = _parts({k: views[k] for k in ("noise", "good")})
    outer = [np.flatnonzero(g != k) for k in (0, 1)]

    def select(train, cache=None):
        sub = {n: p.subset(train) for n, p in parts.items()}
        return select_encoder(sub, Candidates(("noise", "good")), y[train], g[train], cv=5,
                              random_state=0, race_margin=None, rows=train,
                              experts_cache=cache)

    calls = []
    real_fit = ModalityExpert.fit
    monkeypatch.setattr(common.ModalityExpert, "fit",
                        lambda self, *a, **k: calls.append(1) or real_fit(self, *a, **k))
    alone = [select(train) for train in outer]
    assert len(calls) == 2 * 2 * 5  # outside the block: every fold of every outer fold
    calls.clear()
    evaluation = ExpertsCache.sharing_rows()
    shared = [select(train, evaluation.fold()) for train in outer]
    assert len(calls) == 2 * 5 + 2 * 4  # one inner training set in common
    calls.clear()
    select(outer[0], evaluation.fold())  # the same outer fold again: nothing to fit
    assert not calls
    for a, b in zip(alone, shared):
        assert a.chosen == b.chosen and a.fold_accuracy == b.fold_accuracy
        assert a.fold_log_loss == b.fold_log_loss
    evaluation = ExpertsCache.sharing_rows()  # without row ids nothing can be matched
    sub = {n: p.subset(outer[0]) for n, p in parts.items()}
    for _ in range(2):
        select_encoder(sub, Candidates(("noise", "good")), y[outer[0]], g[outer[0]],
                       cv=5, random_state=0, race_margin=None,
                       experts_cache=evaluation.fold())
    assert len(calls) == 2 * 2 * 5


# -- separate experts ("a|b") ---------------------------------------------------------------

def _parity_half(n=320, seed=1):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    a = rng.normal(size=(n, 4)).astype(np.float32)
    b = rng.normal(size=(n, 4)).astype(np.float32)
    a[:, 0] += 3.0 * (y % 2)   # a knows the parity, b the half: independent evidence
    b[:, 0] += 3.0 * (y // 2)
    return y, {"a": a, "b": b}


def test_separate_experts_are_scored_beside_the_pair_and_scored_as_fitted(monkeypatch):

    monkeypatch.setattr(selection, "SEPARATE_EXPERTS", True)  # opt-in for "auto"
    from mmfuse.fusion.experts import ModalityExpert
    from mmfuse.splits import inner_splits

    y, views = _parity_half()
    parts = _parts(views)
    sel = select_encoder(parts, Candidates(("a", "b"), pair=True), y, cv=4, random_state=0)
    assert list(sel.fold_scores)[-2:] == ["a|b", "a+b"]  # a tie goes to separate experts
    assert sel.costs["a|b"] == sel.costs["a+b"] == encoder_cost("a") + encoder_cost("b")
    # both parts help independently: a two-encoder form is chosen, the better inner mean
    acc = {n: float(np.mean(v)) for n, v in sel.fold_accuracy.items()}
    assert sel.chosen in ("a|b", "a+b") and acc["a|b"] > max(acc["a"], acc["b"]) + 0.2
    assert acc[sel.chosen] == max(acc["a|b"], acc["a+b"])
    # the score of "a|b" is that of the expert fitted on its view: SplitExperts per fold
    view, present, widths = candidate_view(parts, "a|b", None)
    assert widths == [4, 4]
    expected = []
    for train, test in inner_splits(y, None, 4, 0):
        expert = ModalityExpert(view_classifier("a|b", widths, None), 0).fit(
            view[train], y[train], present[train], 4)
        pred = expert.predict_proba(view[test], present[test]).argmax(axis=1)
        expected.append(float(np.mean(pred == y[test])))
    assert sel.fold_accuracy["a|b"] == expected


def test_separate_experts_must_pay_like_a_concatenation(monkeypatch):

    monkeypatch.setattr(selection, "SEPARATE_EXPERTS", True)  # opt-in for "auto"
    y, _, views = _data(n=240)
    parts = _parts({"good": views["good"], "noise": views["noise"]})
    sel = select_encoder(parts, Candidates(("good", "noise"), pair=True), y, cv=4,
                         random_state=0)
    assert {"good|noise", "good+noise"} <= set(sel.fold_scores)
    assert sel.chosen == "good"  # the noise encoder does not beat "good" by one SE
    monkeypatch.setattr(selection, "SEPARATE_EXPERTS", False)
    sel = select_encoder(parts, Candidates(("good", "noise"), pair=True), y, cv=4,
                         random_state=0)
    assert "good|noise" not in sel.fold_scores and "good+noise" in sel.fold_scores


def test_separate_experts_can_be_listed_and_hand_their_experts_to_the_fusion(monkeypatch):
    import mmfuse.fusion.experts as common
    from mmfuse.fusion.experts import ExpertsCache, ModalityExpert, out_of_fold_probas
    from mmfuse.fusion.linear import ANY_VIEW

    cands = parse_candidates(["hog", "hog|color-hist"], "image")
    assert cands.names == ("hog", "hog|color-hist") and not cands.pair
    with pytest.raises(InputError, match="must share one modality"):
        parse_candidates(["hog|tfidf"], "image")
    y, views = _parity_half()
    parts = _parts(views)
    view, present, widths = candidate_view(parts, "a|b", None)
    per_view = {ANY_VIEW: None, "image": view_classifier("a|b", widths, None)}
    expected = out_of_fold_probas({"image": view}, y, {"image": present}, None, per_view, 4, 0)
    calls = []
    real_fit = ModalityExpert.fit
    monkeypatch.setattr(common.ModalityExpert, "fit",
                        lambda self, *a, **k: calls.append(1) or real_fit(self, *a, **k))
    cache = ExpertsCache()
    sel = select_encoder(parts, Candidates(("a", "a|b")), y, cv=4, random_state=0,
                         column="image", experts_cache=cache)
    assert sel.chosen == "a|b" and len(calls) == 2 * 4
    got = out_of_fold_probas({"image": view}, y, {"image": present}, None, per_view, 4, 0,
                             experts_cache=cache)
    assert len(calls) == 2 * 4  # the fusion's experts came from the selection
    np.testing.assert_array_equal(got["image"], expected["image"])


def test_separate_experts_are_opt_in_for_auto():
    y, views = _parity_half()
    sel = select_encoder(_parts(views), Candidates(("a", "b"), pair=True), y, cv=4,
                         random_state=0)
    assert "a+b" in sel.fold_scores and "a|b" not in sel.fold_scores
