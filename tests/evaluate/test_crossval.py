import numpy as np

import pytest

from conftest import VocabEncoder, make_views, number_frame
from mmfuse import InputError
from mmfuse.evaluate import evaluate, make_configs

JSON_ROW_KEYS = {"name", "kind", "modalities", "fusion", "weights", "accuracy", "accuracy_ci95",
                 "macro_f1", "seconds", "fold_accuracy", "fold_macro_f1", "modality_weights",
                 "fold_weights", "weights_fallback", "uncertainty"}


def test_table_has_singles_every_strategy_and_the_baseline():
    views, y = make_views(n=300)
    # (weighted on class scores: in the seed's padded feature space, its default, the two
    # views' informative columns collide, as they do for the seed baseline)
    result = evaluate(views, y, cv=3, fusion_params={"weighted": {"projection": "class-scores"}})
    names = [r.name for r in result.rows]
    assert names == ["a", "b", "early", "weighted", "late", "stacking", "seed-baseline"]
    kinds = {r.name: r.kind for r in result.rows}
    assert kinds["a"] == "single" and kinds["late"] == "fused" and kinds["seed-baseline"] == "baseline"
    doc = result.to_dict()
    assert set(doc) == {"format", "format_version", "versions", "command", "seed", "n_samples",
                        "n_classes", "classes", "cv", "inner_cv", "encoders", "rows", "best",
                        "best_tied_with", "weights_fallback", "path"}
    assert doc["path"] == "in-memory"
    assert doc["cv"] == {"kind": "stratified", "n_splits": 3}
    assert all(set(r) == JSON_ROW_KEYS for r in doc["rows"])
    assert doc["best"] in names
    for r in result.rows:
        assert r.accuracy_ci95[0] <= r.accuracy <= r.accuracy_ci95[1]
    # each view sees half the label; the learned fusions must beat both singles
    best_single = max(result.row("a").accuracy, result.row("b").accuracy)
    for name in ("late", "stacking", "weighted"):
        assert result.row(name).accuracy > best_single + 0.15


def test_stateful_encoders_are_fit_on_training_folds_only():
    df, y = number_frame(n=120)
    VocabEncoder.fitted_on.clear()
    evaluate(df, y, encoders={"left": "test-vocab", "right": "test-number"}, cv=4,
             strategies=["late"], baseline=False)
    # once per outer fold, on the 90 training rows only (never on all 120)
    assert VocabEncoder.fitted_on == [90, 90, 90, 90]


def test_skip_reports_bad_items_and_excludes_empty_rows():
    df, y = number_frame(n=120)
    df.loc[5, "left"] = "bad"
    df.loc[6, ["left", "right"]] = None
    enc = {"left": "test-number", "right": "test-number"}
    with pytest.raises(InputError, match="row 5, column 'left'"):
        evaluate(df, y, encoders=enc, cv=3)
    result = evaluate(df, y, encoders=enc, cv=3, on_error="skip", strategies=["late"])
    assert [(e.row, e.column) for e in result.errors] == [(5, "left"), (6, None)]
    assert (result.predictions["late"][6] == -1) and (result.predictions["late"][5] >= 0)


def test_confusion_matrix_of_best():
    views, y = make_views(n=200)
    result = evaluate(views, y, cv=2, strategies=["late"])
    cm = result.confusion()
    assert cm.shape == (4, 4) and cm.sum() == 200


def test_configs_reject_unknown_strategy():
    with pytest.raises(InputError, match="unknown fusion strategy \\['nope'\\]"):
        make_configs(["a", "b"], ["late", "nope"])
    assert [c.name for c in make_configs(["a"], ["late"])] == ["a"]  # nothing to fuse


def test_auto_reports_its_choice_per_outer_fold():
    views, y = make_views(n=240)
    result = evaluate(views, y, cv=3, strategies=["late", "auto"],
                      fusion_params={"auto": {"neural": False, "cv": 3}}, n_jobs=1)
    auto = result.row("auto")
    assert len(auto.chosen) == 3 and all(isinstance(c, str) and c for c in auto.chosen)
    assert result.row("late").chosen == []
    rows = {r["name"]: r for r in result.to_dict()["rows"]}
    assert rows["auto"]["chosen"] == auto.chosen and "chosen" not in rows["late"]


def test_strategy_with_bracketed_weights_is_its_own_row():
    configs = make_configs(["a", "b"], ["late", "late[equal]", "early"], weights="cv")
    by_name = {c.name: c for c in configs}
    assert by_name["late"].weights == "cv" and by_name["late[equal]"].weights == "equal"
    assert by_name["late[equal]"].fusion == "late"
    with pytest.raises(InputError, match="unknown weights 'best'"):
        make_configs(["a", "b"], ["late[best]"])
    with pytest.raises(InputError, match="unknown fusion strategy"):
        make_configs(["a", "b"], ["magic[equal]"])


def test_weights_in_fusion_params_win_over_the_run_wide_weights():
    configs = make_configs(["a", "b"], ["late", "weighted", "early"], weights="cv",
                           fusion_params={"weighted": {"weights": "equal", "step": 0.5}})
    by_name = {c.name: c for c in configs}
    assert by_name["weighted"].weights == "equal"
    assert by_name["weighted"].params == {"step": 0.5}  # no second 'weights' to override
    assert by_name["late"].weights == "cv"
    with pytest.raises(InputError, match="names its weights twice"):
        make_configs(["a", "b"], ["late[cv]"], fusion_params={"late": {"weights": "equal"}})


def test_outer_folds_share_fits_on_the_same_inner_training_rows(monkeypatch):
    # leave-one-group-out outer folds, leave-one-group-out inner folds: outer fold k's inner
    # fold "all groups but k and g" is outer fold g's too, so auto's feature-level
    # candidates are fitted once per pair of groups, with the same results as without
    import numpy as np

    import mmfuse.fusion.experts as experts
    from mmfuse.fusion.baseline import SeedBaseline
    from mmfuse.fusion.early import EarlyFusion

    views, y = make_views(n=240)
    groups = (np.arange(len(y)) // 4) % 6

    def run():
        calls = []
        for cls in (EarlyFusion, SeedBaseline):
            real = cls._fit
            monkeypatch.setattr(cls, "_fit", lambda self, *a, real=real, **k:
                                calls.append(type(self).__name__) or real(self, *a, **k))
        result = evaluate(views, y, groups=groups, cv="loso", strategies=["auto"],
                          singles=False, baseline=False, n_jobs=1,
                          fusion_params={"auto": {"neural": False, "cv": 5}})
        monkeypatch.undo()
        return result, calls

    shared, shared_calls = run()
    # folds that share no rows cache: each fold's cache starts empty
    monkeypatch.setattr(experts.ExpertsCache, "sharing_rows", classmethod(lambda cls: cls()))
    alone, alone_calls = run()
    assert alone.cv["kind"] == "leave-one-group-out" and alone.cv["n_splits"] == 6
    for name in ("EarlyFusion", "SeedBaseline"):
        # 6 outer x 5 inner folds, 15 distinct inner training sets
        assert alone_calls.count(name) - shared_calls.count(name) == 15
    assert shared.row("auto").fold_accuracy == alone.row("auto").fold_accuracy
    assert shared.row("auto").chosen == alone.row("auto").chosen
    np.testing.assert_array_equal(shared.predictions["auto"], alone.predictions["auto"])


def test_best_tied_with_names_an_overlapping_runner_up():
    from mmfuse.evaluate.crossval import EvaluationResult, Row

    def row(name, acc, low, high, f1=0.5):
        return Row(name, "fused", ["a"], name, None, acc, [low, high], f1, 0.0)

    def result(*rows):
        return EvaluationResult(10, 2, [0, 1], {"kind": "stratified", "n_splits": 5},
                                list(rows), {}, np.zeros(10))

    tied = result(row("a", 0.80, 0.70, 0.90), row("b", 0.85, 0.78, 0.92),
                  row("c", 0.60, 0.50, 0.70))
    assert tied.best.name == "b" and tied.best_tied_with == "a"
    assert tied.to_dict()["best_tied_with"] == "a"
    apart = result(row("a", 0.70, 0.65, 0.75), row("b", 0.85, 0.80, 0.90))
    assert apart.best_tied_with is None and apart.to_dict()["best_tied_with"] is None
    touching = result(row("a", 0.70, 0.65, 0.80), row("b", 0.85, 0.80, 0.90))
    assert touching.best_tied_with == "a"
    assert result(row("a", 0.9, 0.8, 1.0)).best_tied_with is None
