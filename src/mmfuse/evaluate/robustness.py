"""Robustness to missing modalities: accuracy while a growing fraction of one modality is
dropped at test time (and, optionally, at training time too).

The protocol is :func:`mmfuse.evaluate.evaluate`'s — the same outer splits, configurations
(each single modality, each fused strategy, the seed baseline) and per-fold fitting — with
one change: in each test fold, a fraction ``level`` of the samples that have the chosen
modality lose it (their row becomes missing). Which samples lose it is seeded and *nested*:
every sample dropped at 0.3 is also dropped at 0.5, so the curves differ only by the level.
Without ``train_missing`` each configuration is fitted once per fold and only the test rows
are masked; with it, the same fraction is also dropped from the training rows and every
level is refitted.
"""

from __future__ import annotations

import time
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from .._errors import InputError
from ..encoders.base import ItemError
from ..splits import seed_from
from ..views import Present, Views
from .crossval import DEFAULT_STRATEGIES, Config, fit_config, make_configs
from .engine import CrossValidation, FeatureTable, Fold, checked_inputs, usable_rows
from .folds import mean_ci95

DEFAULT_LEVELS = (0.0, 0.1, 0.3, 0.5)
BEST = "best"
Progress = Callable[[str, int, int], None]


@dataclass
class RobustnessRow:
    """One configuration's accuracy at every level (same order as ``RobustnessResult.levels``)."""

    name: str
    kind: str  # "single", "fused" or "baseline"
    modalities: list[str]
    fusion: str | None
    accuracy: list[float]
    accuracy_ci95: list[list[float]]
    fold_accuracy: list[list[float]] = field(default_factory=list)
    seconds: float = 0.0
    chosen: list[str] = field(default_factory=list)  # per fold, for fusion="auto"


@dataclass
class RobustnessResult:
    """Accuracy per configuration and missing level; ``to_dict()`` is the JSON section."""

    missing_modality: str
    levels: list[float]
    train_missing: bool
    n_samples: int
    n_classes: int
    cv: dict[str, Any]
    rows: list[RobustnessRow]
    random_state: Any = None
    errors: list[ItemError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def row(self, name: str) -> RobustnessRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows]}")

    def accuracy(self, name: str, level: float) -> float:
        """Mean accuracy of ``name`` with ``level`` of the modality missing."""
        return self.row(name).accuracy[self._level_index(level)]

    def best(self, level: float, kind: str | None = None) -> RobustnessRow:
        """The most accurate row at ``level`` (optionally among one ``kind``)."""
        i = self._level_index(level)
        rows = [r for r in self.rows if kind is None or r.kind == kind]
        if not rows:
            raise KeyError(f"no row of kind {kind!r}")
        return max(rows, key=lambda r: r.accuracy[i])

    def singles_ranked(self) -> list[RobustnessRow]:
        """Single-modality rows, best first, by accuracy with nothing missing."""
        i = self._level_index(0.0)
        return sorted((r for r in self.rows if r.kind == "single"),
                      key=lambda r: -r.accuracy[i])

    def _level_index(self, level: float) -> int:
        for i, lv in enumerate(self.levels):
            if abs(lv - float(level)) < 1e-9:
                return i
        raise KeyError(f"level {level} was not evaluated; levels: {self.levels}")

    def to_dict(self) -> dict[str, Any]:
        """The ``robustness`` section of the JSON report."""
        rows = []
        for r in self.rows:
            d = asdict(r)
            d.pop("fold_accuracy")
            if not d["chosen"]:
                d.pop("chosen")
            rows.append(d)
        return {
            "missing_modality": self.missing_modality,
            "levels": list(self.levels),
            "train_missing": self.train_missing,
            "n_samples": self.n_samples,
            "n_classes": self.n_classes,
            "cv": dict(self.cv),
            "random_state": self.random_state,
            "rows": rows,
            "best": {str(lv): self.best(lv).name for lv in self.levels},
            "notes": list(self.notes),
        }

    def to_frame(self) -> pd.DataFrame:
        """One row per configuration, one accuracy column per level."""
        return pd.DataFrame(
            [{"name": r.name, "kind": r.kind,
              **{f"{lv:g}": acc for lv, acc in zip(self.levels, r.accuracy)}}
             for r in self.rows]
        ).set_index("name")


# -- masking -----------------------------------------------------------------------------------

def _row_draws(n: int, modality: str, random_state: Any) -> np.ndarray:
    """One uniform draw per sample, fixed by (random_state, modality): the masking order."""
    seed = seed_from(random_state)
    seed = 0 if seed is None else seed
    return np.random.default_rng([seed, zlib.crc32(modality.encode())]).random(n)


def drop_fraction(present: np.ndarray, rows: np.ndarray, fraction: float,
                  draws: np.ndarray) -> np.ndarray:
    """A copy of ``present`` in which ``round(fraction * k)`` of the ``k`` rows of ``rows``
    that have the modality lose it: those with the smallest ``draws`` (so levels nest)."""
    out = present.copy()
    have = rows[present[rows]]
    k = int(round(fraction * len(have)))
    if k:
        out[have[np.argsort(draws[have], kind="stable")[:k]]] = False
    return out


def _masked(views: Views, present: Present, modality: str, rows: np.ndarray, fraction: float,
            draws: np.ndarray) -> tuple[Views, Present]:
    """Views/present with ``fraction`` of ``rows`` missing ``modality`` (their row set to NaN)."""
    if fraction <= 0:
        return views, present
    mask = drop_fraction(present[modality], rows, fraction, draws)
    from ..views import blank_rows

    # nothing of a dropped row can leak through (NaN rows; zero rows in a sparse view)
    view = blank_rows(views[modality], present[modality] & ~mask)
    return {**views, modality: view}, {**present, modality: mask}


# -- fitting ------------------------------------------------------------------------------------

class _Prior:
    """Stands in for a configuration that cannot be fitted (its modalities are all gone)."""

    def __init__(self, y: np.ndarray):
        self.label = int(np.bincount(y).argmax())

    def predict(self, views: Views, present: Present) -> np.ndarray:
        return np.full(next(iter(views.values())).shape[0], self.label)


def fit_configs(views: Views, present: Present, y: np.ndarray, groups: Any, train: np.ndarray,
                configs: Sequence[Config], classifier: Any, cv: int, random_state: Any,
                notes: list[str] | None = None, *, experts_cache: Any = None
                ) -> dict[str, tuple[Any, float]]:
    """Fit every configuration on the ``train`` rows: name -> (fitted strategy, seconds).

    As in :func:`mmfuse.evaluate.crossval.run_fold`, training rows that have none of a
    configuration's modalities are left out of its fit, and the configurations share
    their per-modality experts through one :class:`~mmfuse.fusion.experts.ExpertsCache`
    (``experts_cache``, else a new one).
    """
    from ..fusion import create_fusion
    from ..fusion.experts import ExpertsCache

    cache = ExpertsCache() if experts_cache is None else experts_cache
    g_train = None if groups is None else np.asarray(groups)[train]
    return {c.name: _fit_config(c, views, present, y, g_train, train, classifier, cv,
                                random_state, notes, create_fusion, cache) for c in configs}


def _fit_config(c: Config, views: Views, present: Present, y: np.ndarray, g_train: Any,
                train: np.ndarray, classifier: Any, cv: int, random_state: Any,
                notes: list[str] | None, create_fusion: Callable,
                experts_cache: Any = None) -> tuple[Any, float]:
    start = time.perf_counter()
    with warnings.catch_warnings():
        # reported once in the notes instead of once per fold and level
        warnings.filterwarnings("ignore", message="modalities missing for every training")
        strategy = fit_config(c, views, present, y, g_train, train, classifier, cv,
                              random_state, create_fusion, experts_cache)
    if strategy is None:
        if notes is not None:
            notes.append(f"{c.name}: no training row has {list(c.modalities)} in a fold; "
                         f"it predicts the majority class there")
        return _Prior(y[train]), 0.0
    dropped = getattr(strategy, "dropped_modalities_", None)
    if dropped and notes is not None:
        notes.append(f"{c.name}: {dropped} missing from every training row of a fold, "
                     f"dropped there")
    return strategy, time.perf_counter() - start


def _predict(fitted: Mapping[str, tuple[Any, float]], configs: Sequence[Config], views: Views,
             present: Present, test: np.ndarray) -> dict[str, np.ndarray]:
    out = {}
    for c in configs:
        strategy = fitted[c.name][0]
        out[c.name] = strategy.predict({m: views[m][test] for m in c.modalities},
                                       {m: present[m][test] for m in c.modalities})
    return out


def _check_levels(levels: Any) -> list[float]:
    if isinstance(levels, str):
        try:
            levels = [float(v) for v in levels.split(",") if v.strip()]
        except ValueError:
            raise InputError(f"missing levels must be numbers like '0,0.1,0.3,0.5'; "
                             f"got {levels!r}") from None
    try:
        values = sorted({float(v) for v in levels})
    except (TypeError, ValueError):
        raise InputError(f"missing levels must be numbers in [0, 1]; got {levels!r}") from None
    bad = [v for v in values if not 0.0 <= v <= 1.0]
    if bad or not values:
        raise InputError(f"missing levels must be fractions in [0, 1]; got {list(levels)}")
    return sorted(set(values) | {0.0})  # 0 is the reference every curve starts from


# -- the evaluation -----------------------------------------------------------------------------

def evaluate_robustness(X: Any, y: Any, *, encoders: Any = None, groups: Any = None,
                        strategies: Sequence[str] = DEFAULT_STRATEGIES,
                        missing_levels: Any = DEFAULT_LEVELS, missing_modality: str = BEST,
                        train_missing: bool = False, weights: Any = "cv", cv: Any = 5,
                        classifier: Any = None, inner_cv: int = 5, random_state: Any = 0,
                        on_error: str = "raise", singles: bool = True, baseline: bool = True,
                        fusion_params: Mapping[str, Mapping[str, Any]] | None = None,
                        progress: Progress | None = None,
                        features: FeatureTable | None = None) -> RobustnessResult:
    """Cross-validated accuracy of every configuration as one modality goes missing.

    Parameters
    ----------
    X : DataFrame, dict of arrays, 2-D array or FeatureTable
        Raw samples, pre-extracted views, or features already computed (e.g. the
        ``FeatureTable`` of an :func:`~mmfuse.evaluate.evaluate` run, so nothing is
        extracted twice).
    y : array-like of labels
    encoders, groups, strategies, weights, cv, classifier, inner_cv, on_error, singles,
    baseline, fusion_params, progress, features
        As in :func:`mmfuse.evaluate.evaluate` (the outer and inner splits are grouped when
        groups are given).
    missing_levels : sequence of float or str, default=(0, 0.1, 0.3, 0.5)
        Fractions of the samples that have ``missing_modality`` which lose it; ``"0,0.5"``
        works too. 0 is always included.
    missing_modality : str, default="best"
        The modality to drop; ``"best"`` means the single modality most accurate with
        nothing missing in this same run (the hardest case).
    train_missing : bool, default=False
        Drop the same fraction from the training rows too (every level is then refitted).
    random_state : int or None, default=0
        Seeds the splits, the strategies and which samples are dropped.

    Returns
    -------
    RobustnessResult
        ``rows[i].accuracy[j]`` is the mean accuracy of configuration i at ``levels[j]``
        with a 95% CI over folds; ``to_dict()`` gives the JSON ``robustness`` section.

    Examples
    --------
    >>> res = evaluate_robustness(views, y, missing_modality="text")  # doctest: +SKIP
    >>> res.accuracy("late", 0.5)  # doctest: +SKIP
    """
    if features is None and isinstance(X, FeatureTable):
        features = X
    table, y, groups, classes, y_enc = checked_inputs(X, y, features, encoders, groups,
                                                      on_error, progress)
    levels = _check_levels(missing_levels)
    modalities = sorted(table.views)
    if missing_modality == BEST:
        if not singles:
            raise InputError("missing_modality='best' needs the single-modality rows "
                             "(singles=True) to know which modality is best")
        targets = modalities
    elif missing_modality in table.views:
        targets = [missing_modality]
    else:
        raise InputError(f"missing_modality must be one of {modalities} or 'best'; "
                         f"got {missing_modality!r}")

    usable, errors = usable_rows(table, on_error)
    configs = make_configs(modalities, strategies, weights, singles, baseline, fusion_params)
    cv_run = CrossValidation.split(table, y_enc, groups, cv, random_state, usable,
                                   classifier=classifier, inner_cv=inner_cv)
    draws = {m: _row_draws(len(y), m, random_state) for m in targets}
    return _run(cv_run, configs, levels, targets, missing_modality, modalities, train_missing,
                draws, progress, len(classes), errors)


#: what one fold gives back: seconds per configuration, what ``auto`` chose, the accuracy
#: per (dropped modality, level) and configuration, and notes
FoldScores = tuple[dict[str, float], dict[str, str], dict[tuple[str, float], dict[str, float]],
                   list[str]]


def _complete_training(fold: Fold, configs: Sequence[Config], levels: list[float],
                       targets: list[str], train_missing: bool,
                       draws: dict[str, np.ndarray]) -> FoldScores:
    """Pass 1 in one fold: fit on the complete training rows; score level 0 and (unless
    ``train_missing``) every level, each target modality dropped from the test rows."""
    notes: list[str] = []
    views, present, test = fold.views, fold.present, fold.test
    fitted = fit_configs(views, present, fold.y, fold.groups, fold.train, configs,
                         fold.classifier, fold.inner_cv, fold.random_state, notes,
                         experts_cache=fold.experts_cache)
    chosen = {name: s.chosen_name_ for name, (s, _) in fitted.items()
              if hasattr(s, "chosen_name_")}
    base = _predict(fitted, configs, views, present, test)
    acc = {}
    for t in targets:
        acc[(t, 0.0)] = _accuracy(base, fold.y, test)
        if train_missing:
            continue
        for lv in levels[1:]:
            v, p = _masked(views, present, t, test, lv, draws[t])
            acc[(t, lv)] = _accuracy(_predict(fitted, configs, v, p, test), fold.y, test)
    return {n: secs for n, (_, secs) in fitted.items()}, chosen, acc, notes


def _missing_training(fold: Fold, configs: Sequence[Config], levels: list[float],
                      target: str, draws: dict[str, np.ndarray]) -> FoldScores:
    """Pass 2 in one fold (``train_missing``): every level above 0 refitted with the same
    fraction of ``target`` dropped from the training and, separately, the test rows."""
    notes: list[str] = []
    seconds = {c.name: 0.0 for c in configs}
    acc = {}
    for lv in levels[1:]:
        # the fraction is taken in the training and in the test rows separately
        v, p = _masked(fold.views, fold.present, target, fold.train, lv, draws[target])
        v, p = _masked(v, p, target, fold.test, lv, draws[target])
        fitted = fit_configs(v, p, fold.y, fold.groups, fold.train, configs, fold.classifier,
                             fold.inner_cv, fold.random_state, notes,
                             experts_cache=fold.experts_cache)
        for name, (_, secs) in fitted.items():
            seconds[name] += secs
        acc[(target, lv)] = _accuracy(_predict(fitted, configs, v, p, fold.test), fold.y,
                                      fold.test)
    return seconds, {}, acc, notes


def _accuracy(preds: Mapping[str, np.ndarray], y: np.ndarray, test: np.ndarray
              ) -> dict[str, float]:
    return {name: float(np.mean(pred == y[test])) for name, pred in preds.items()}


def _run(cv_run: CrossValidation, configs: list[Config], levels: list[float],
         targets: list[str], missing_modality: str, modalities: list[str],
         train_missing: bool, draws: dict[str, np.ndarray], progress: Progress | None,
         n_classes: int, errors: list[ItemError]) -> RobustnessResult:
    """The folds of :func:`evaluate_robustness`, its arguments already checked."""
    notes: list[str] = []
    # scores[target][level][config] -> accuracy per fold
    scores = {t: {lv: {c.name: [] for c in configs} for lv in levels} for t in targets}
    seconds = {c.name: 0.0 for c in configs}
    chosen: dict[str, list[str]] = {c.name: [] for c in configs}
    n_folds = len(cv_run.folds)
    n_steps = n_folds * (2 if train_missing else 1)

    def record(fold: FoldScores) -> None:
        secs, picks, acc, fold_notes = fold
        for name, s in secs.items():
            seconds[name] += s
        for name, pick in picks.items():
            chosen[name].append(pick)
        for (t, lv), by_name in acc.items():
            for name, a in by_name.items():
                scores[t][lv][name].append(a)
        notes.extend(fold_notes)

    # pass 1: fit on complete training rows; level 0, and every level unless train_missing
    for fold in cv_run.run(partial(_complete_training, configs=configs, levels=levels,
                                   targets=targets, train_missing=train_missing, draws=draws),
                           progress=progress, stage="robustness", total=n_steps):
        record(fold)
    target = targets[0]
    if missing_modality == BEST:
        target = max(modalities, key=lambda m: (np.mean(scores[m][0.0][m]), -modalities.index(m)))
    if train_missing:
        # pass 2: the same fraction missing in training too, refitted per level
        for fold in cv_run.run(partial(_missing_training, configs=configs, levels=levels,
                                       target=target, draws=draws),
                               progress=progress, stage="robustness", done=n_folds,
                               total=n_steps):
            record(fold)

    rows = []
    for c in configs:
        accs, cis, folds = [], [], []
        for lv in levels:
            fold_acc = scores[target][lv][c.name]
            mean, ci = mean_ci95(fold_acc)
            accs.append(mean)
            cis.append(ci)
            folds.append(fold_acc)
        rows.append(RobustnessRow(c.name, c.kind, list(c.modalities),
                                  None if c.kind == "single" else c.fusion, accs, cis, folds,
                                  round(seconds[c.name], 3), chosen[c.name]))
    return RobustnessResult(target, levels, bool(train_missing), len(cv_run.y), n_classes,
                            cv_run.cv_info, rows, cv_run.random_state, errors,
                            sorted(set(notes)))
