"""Cross-validation under differential privacy: every single modality and each DP fusion
strategy (:mod:`mmfuse.privacy.dp`) trained at budget ``epsilon`` on every outer training
fold, with the splits of :func:`mmfuse.evaluate.evaluate`."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from .._errors import InputError
from ..privacy.dp import (check_epsilon, check_private_encoders, fixed_weights,
                          make_private_fusion, private_fusions)
from .crossval import EvaluationResult, Row
from .engine import CrossValidation, Fold, checked_inputs, usable_rows
from .folds import mean_ci95


def evaluate_dp(X: Any, y: Any, *, epsilon: float, delta: float = 1e-5,
                encoders: Any = None, groups: Any = None,
                strategies: Any = None, weights: Any = "equal", cv: Any = 5,
                random_state: Any = 0, on_error: str = "raise",
                noise_seed: int | None = None, dp_model: str = "centroid",
                features: Any = None, progress: Any = None) -> Any:
    """Cross-validate every single modality and each DP fusion strategy at budget ``epsilon``.

    Each configuration is trained on every outer training fold with the full budget
    ``epsilon`` (a model per fold, as a user would train one model); single modalities are
    DP early fusion of one view. Splits are those of :func:`mmfuse.evaluate.evaluate`
    (grouped whenever groups exist). Returns an :class:`~mmfuse.evaluate.EvaluationResult`
    (no seed-baseline row: it learns weights). ``strategies``: by default every strategy
    with a DP version (:func:`mmfuse.privacy.dp.private_fusions`).
    """
    epsilon = check_epsilon(epsilon)
    table, y, groups, classes, y_enc = checked_inputs(X, y, features, encoders, groups,
                                                      on_error, progress)
    if getattr(table, "candidates", None):
        raise InputError("epsilon: choosing encoders learns from the data outside the privacy "
                         "budget; name one encoder per column")
    if table.stateful:
        col = sorted(table.stateful)[0]
        check_private_encoders({col: table.stateful[col][0]})
    strategies = private_fusions() if strategies is None else list(strategies)
    unknown = [s for s in strategies if s not in private_fusions()]
    if unknown:
        make_private_fusion(unknown[0], epsilon)  # raises the clear error
    usable, errors = usable_rows(table, on_error)
    mods = sorted(table.views)
    configs = [(m, "single", (m,), "early") for m in mods]
    if len(mods) > 1:
        configs += [(s, "fused", tuple(mods), s) for s in strategies]
    cv_run = CrossValidation.split(table, y_enc, groups, cv, random_state, usable)
    preds = {c[0]: np.full(len(y), -1, dtype=int) for c in configs}
    fold_acc: dict[str, list[float]] = {c[0]: [] for c in configs}
    fold_f1: dict[str, list[float]] = {c[0]: [] for c in configs}
    seconds = {c[0]: 0.0 for c in configs}
    work = partial(_dp_fold, configs=configs, epsilon=epsilon, delta=delta, weights=weights,
                   noise_seed=noise_seed, dp_model=dp_model)
    for fold in cv_run.run(work):
        for name, pred, secs, test in fold:
            seconds[name] += secs
            preds[name][test] = pred
            fold_acc[name].append(float(np.mean(pred == y_enc[test])))
            fold_f1[name].append(float(f1_score(y_enc[test], pred, average="macro",
                                                labels=np.unique(y_enc[test]),
                                                zero_division=0)))
    rows = []
    for name, kind, cmods, fusion in configs:
        acc, ci = mean_ci95(fold_acc[name])
        w = None
        if kind == "fused":
            w = fixed_weights(weights, list(cmods))
        rows.append(Row(name, kind, list(cmods), None if kind == "single" else fusion,
                        "equal" if isinstance(weights, str) else dict(weights), acc, ci,
                        float(np.mean(fold_f1[name])), round(seconds[name], 3),
                        fold_acc[name], w, fold_macro_f1=fold_f1[name],
                        fold_weights=[w] * len(fold_acc[name]),
                        weights_fallback=[None] * len(fold_acc[name])))
    cv_info = {**cv_run.cv_info, "epsilon": epsilon if math.isfinite(epsilon) else "inf",
               "delta": delta if dp_model == "centroid" else 0.0, "dp_model": dp_model}
    return EvaluationResult(len(y), len(classes), classes.tolist(), cv_info, rows, preds, y_enc,
                            errors, encoders=dict(table.encoder_names),
                            random_state=random_state)


def _dp_fold(fold: Fold, configs: Sequence[tuple[str, str, tuple[str, ...], str]],
             epsilon: float, delta: float, weights: Any, noise_seed: int | None,
             dp_model: str) -> list[tuple[str, np.ndarray, float, np.ndarray]]:
    """One outer fold: each configuration trained at budget ``epsilon`` on the training rows
    that have one of its modalities, then its labels for the test rows."""
    out = []
    train, test = fold.train, fold.test
    for name, _, cmods, fusion in configs:
        start = time.perf_counter()
        seed = None if noise_seed is None else int(noise_seed) + 1000 * fold.index
        model = make_private_fusion(fusion, epsilon, delta=delta,
                                    weights=weights if len(cmods) > 1 else "equal",
                                    noise_seed=seed, dp_model=dp_model)
        p = {m: fold.present[m] for m in cmods}
        keep = train[np.any(np.stack([p[m][train] for m in cmods]), axis=0)]
        model.fit({m: fold.views[m][keep] for m in cmods}, fold.y[keep],
                  {m: p[m][keep] for m in cmods})
        pred = model.predict({m: fold.views[m][test] for m in cmods},
                             {m: p[m][test] for m in cmods})
        out.append((name, pred, time.perf_counter() - start, test))
    return out
