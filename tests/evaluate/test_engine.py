"""The one cross-validation engine: evaluation, robustness and the DP evaluation loop over
outer folds through it, and nowhere else."""

import ast
from functools import partial
from pathlib import Path

import numpy as np

import mmfuse.evaluate as evaluate_pkg
from conftest import VocabEncoder, make_views, number_frame
from mmfuse.evaluate.engine import CrossValidation, FeatureTable, usable_rows

EVALUATE = Path(evaluate_pkg.__file__).parent
#: what only the engine may do: split, run folds on workers, featurize a fold
ENGINE_ONLY = {"make_splits", "grouped_splits", "inner_splits", "Parallel", "delayed",
               "threadpool_limits", "fold_views", "choose", "fit_fold", "StratifiedKFold",
               "StratifiedGroupKFold", "LeaveOneGroupOut", "RepeatedStratifiedKFold"}


def _called_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name):
                names.add(f.id)
            elif isinstance(f, ast.Attribute) and not (
                    isinstance(f.value, ast.Name) and f.value.id == "CrossValidation"):
                names.add(f.attr)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith("folds"):
            names |= {a.name for a in node.names} & ENGINE_ONLY
    return names


def test_crossval_robustness_and_dp_leave_the_fold_loop_to_the_engine():
    for module in ("crossval.py", "robustness.py", "dp.py"):
        called = _called_names(EVALUATE / module)
        assert not called & ENGINE_ONLY, (module, sorted(called & ENGINE_ONLY))
        source = (EVALUATE / module).read_text()
        assert "CrossValidation.split(" in source and ".run(" in source, module
    # and the engine is the one that does it
    engine = _called_names(EVALUATE / "engine.py")
    assert {"make_splits", "Parallel", "fold_views", "choose"} <= engine


def _record(fold):
    return fold.index, fold.train, fold.test, {m: v.copy() for m, v in fold.views.items()}


def test_run_hands_each_fold_its_training_fitted_views_in_order():
    df, y = number_frame(n=120)
    VocabEncoder.fitted_on.clear()
    table = FeatureTable(df, {"left": "test-vocab", "right": "test-number"})
    usable, _ = usable_rows(table, "raise")
    _, y_enc = np.unique(y, return_inverse=True)
    cv = CrossValidation.split(table, y_enc, None, 3, 0, usable)
    calls = []
    out = list(cv.run(_record, progress=lambda *a: calls.append(a)))
    assert [o[0] for o in out] == [0, 1, 2]
    assert calls == [("cross-validation", k, 3) for k in range(4)]
    # the stateful encoder is fit on each fold's training rows only
    assert VocabEncoder.fitted_on == [len(train) for _, train, _, _ in out]
    for _, train, test, views in out:
        assert not set(train) & set(test)
        expected, _ = table.fold_views(train)
        np.testing.assert_array_equal(views["left"], expected["left"])
    # a second pass counts on from where the first stopped
    calls.clear()
    list(cv.run(_record, progress=lambda *a: calls.append(a), stage="x", done=3, total=6))
    assert calls == [("x", k, 6) for k in range(3, 7)]


def _fold_sum(fold, scale):
    return scale * float(np.sum(fold.views["a"][fold.train]))


def test_run_on_workers_gives_what_it_gives_here():
    views, y = make_views(n=90)
    table = FeatureTable(views, None)
    cv = CrossValidation.split(table, y, None, 3, 0)
    here = list(cv.run(partial(_fold_sum, scale=2.0)))
    assert here == list(cv.run(partial(_fold_sum, scale=2.0), n_jobs=2))


def test_strategies_in_one_fold_share_the_experts_of_the_fold(monkeypatch):
    import mmfuse.fusion.experts as experts
    from mmfuse.evaluate import evaluate

    views, y = make_views(n=150)
    fits = []
    real = experts.ModalityExpert.fit
    monkeypatch.setattr(experts.ModalityExpert, "fit",
                        lambda self, *a, **k: fits.append(1) or real(self, *a, **k))

    def count(strategies):
        fits.clear()
        res = evaluate(views, y, cv=3, inner_cv=3, strategies=strategies, singles=False,
                       baseline=False, n_jobs=1)
        return len(fits), res

    n_late, late = count(["late"])
    n_stacking, _ = count(["stacking"])
    n_both, both = count(["late", "stacking"])
    assert n_late == 3 * 2 * 3  # per outer fold: each modality's expert on 3 inner folds
    # stacking fits the same inner experts, plus experts on every row where it falls back
    # to a simple combination; with the fold's cache late's experts are all reused
    assert n_stacking >= n_late
    assert n_both == n_stacking
    assert both.row("late").fold_accuracy == late.row("late").fold_accuracy
