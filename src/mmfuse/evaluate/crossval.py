"""Honest evaluation: cross-validation that cannot leak, with every single modality, every
fused strategy and the seed baseline side by side.

Features from stateless encoders are extracted once (nothing is learned from data, so this
cannot leak); stateful encoders (TF-IDF) and everything the strategies learn (scalers,
weights, meta-models) are fit on each training fold only. The folds are run by the
cross-validation engine (:mod:`mmfuse.evaluate.engine`); a fold's work here
(:func:`fold_work`) fits and scores every configuration.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from .._errors import InputError
from ..encoders.base import ItemError
from ..fusion.base import WeightsFallbackWarning
from ..uncertainty.evaluation import summarize
from ..views import Present, Views
from .engine import CrossValidation, FeatureTable, Fold, checked_inputs, usable_rows
from .folds import mean_ci95

DEFAULT_STRATEGIES = ("early", "weighted", "late", "stacking")
BASELINE = "seed-baseline"
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Config:
    """One row of the results table."""

    name: str
    kind: str  # "single", "fused" or "baseline"
    modalities: tuple[str, ...]
    fusion: str
    weights: Any = None
    params: Mapping[str, Any] = field(default_factory=dict)
    uncertainty: Any = None  # an UncertaintySpec (evaluate's ``uncertainty``) or None


@dataclass
class Row:
    name: str
    kind: str
    modalities: list[str]
    fusion: str | None
    weights: Any
    accuracy: float
    accuracy_ci95: list[float]
    macro_f1: float
    seconds: float
    fold_accuracy: list[float] = field(default_factory=list)
    #: the fold mean of the learned weights (the results table's column)
    modality_weights: dict[str, float] | None = None
    chosen: list[str] = field(default_factory=list)  # per outer fold, for fusion="auto"
    fold_macro_f1: list[float] = field(default_factory=list)
    #: per outer fold: the weights the fitted strategy used (None: it has none)
    fold_weights: list[dict[str, float] | None] = field(default_factory=list)
    #: per outer fold: why learned weights fell back to equal ones (None: they did not)
    weights_fallback: list[str | None] = field(default_factory=list)
    uncertainty: dict[str, Any] | None = None  # log-loss, Brier, ECE, sets (per fold, CI)


@dataclass
class EvaluationResult:
    n_samples: int
    n_classes: int
    classes: list[Any]
    cv: dict[str, Any]
    rows: list[Row]
    predictions: dict[str, np.ndarray]
    y: np.ndarray
    errors: list[ItemError] = field(default_factory=list)
    feature_seconds: float = 0.0
    #: per outer fold, column -> encoder chosen by inner CV (when encoders gave candidates)
    chosen_encoders: list[dict[str, str]] = field(default_factory=list)
    #: column -> encoder (``a/b``: the candidates a column chose from), the seed, inner folds
    encoders: dict[str, str] = field(default_factory=dict)
    random_state: Any = None
    inner_cv: int | None = None
    #: how the folds were fitted: "in-memory", or "out-of-core" (streamed from a store)
    path: str = "in-memory"
    uncertainty: Any = None  # the UncertaintySpec measured, or None

    @property
    def best(self) -> Row:
        return max(self.rows, key=lambda r: (r.accuracy, r.macro_f1))

    @property
    def best_tied_with(self) -> str | None:
        """The runner-up's name when its 95% interval overlaps the best row's (the best is
        picked on the mean alone; these folds do not tell the two apart), else None."""
        ranked = sorted(self.rows, key=lambda r: (r.accuracy, r.macro_f1), reverse=True)
        if len(ranked) < 2:
            return None
        best, second = ranked[0], ranked[1]
        return second.name if best.accuracy_ci95[0] <= second.accuracy_ci95[1] else None

    def row(self, name: str) -> Row:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no row named {name!r}; rows: {[r.name for r in self.rows]}")

    def confusion(self, name: str | None = None) -> np.ndarray:
        """Confusion matrix (rows: true class) of the out-of-fold predictions of ``name``."""
        name = self.best.name if name is None else name
        pred = self.predictions[name]
        done = pred >= 0
        return confusion_matrix(self.y[done], pred[done], labels=np.arange(self.n_classes))

    def to_dict(self, argv: Sequence[str] | None = None) -> dict[str, Any]:
        """The JSON document of ``mmfuse run --json``: a full record of the run (see
        :func:`mmfuse.evaluate.record.run_record` and ``run.schema.json``)."""
        from .record import run_record

        return run_record(self, argv)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([asdict(r) for r in self.rows])


def make_configs(modalities: Sequence[str], strategies: Sequence[str] = DEFAULT_STRATEGIES,
                 weights: Any = "cv", singles: bool = True, baseline: bool = True,
                 fusion_params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Config]:
    """Every single modality, each strategy over all modalities, and the seed baseline.

    A strategy may name its weights in brackets, e.g. ``"late[equal]"`` next to ``"late"``
    (which takes ``weights``): that row is the strategy with those weights. A ``"weights"``
    entry in ``fusion_params[strategy]`` also wins over ``weights`` for that strategy.
    """
    from ..fusion import list_fusions

    mods = tuple(sorted(modalities))
    declared = {f["name"]: f for f in list_fusions()}  # what each strategy declares
    known = set(declared)
    parsed = []
    for s in strategies:
        name, w = s, None
        if isinstance(s, str) and s.endswith("]") and "[" in s:
            name, _, w = s[:-1].partition("[")
            if w not in ("equal", "relative", "cv"):
                raise InputError(f"unknown weights {w!r} in {s!r}; valid: equal, relative, cv")
        parsed.append((s, name, w))
    unknown = [s for s, name, _ in parsed if name not in known]
    if unknown:
        raise InputError(f"unknown fusion strategy {unknown}; valid: {sorted(known)}")
    params = fusion_params or {}
    configs = []
    if singles:
        configs += [Config(m, "single", (m,), "early", None) for m in mods]
    if len(mods) > 1:
        for s, name, w in parsed:
            if declared[name].get("reference"):
                continue  # the seed baseline: its own row below
            own = dict(params.get(name, {}))
            if "weights" in own:  # the strategy's own parameter wins over the run-wide one
                if w is not None:
                    raise InputError(
                        f"{s!r} names its weights twice: in brackets and in "
                        f"fusion_params[{name!r}]['weights']; give one")
                w = own.pop("weights")
            if w is None:
                w = declared[name].get("evaluation_weights", "given")
                w = weights if w == "given" else w
            configs.append(Config(s, "fused", mods, name, w, own))
        if baseline:
            configs += [Config(n, "baseline", mods, n, "equal") for n in sorted(known)
                        if declared[n].get("reference")]
    return configs


def run_fold(views: Views, present: Present, y: np.ndarray, groups: Any, train: np.ndarray,
             test: np.ndarray, configs: Sequence[Config], classifier: Any, cv: int,
             random_state: Any, table: Any = None, *, experts_cache: Any = None
             ) -> list[tuple[str, np.ndarray, float, Any, Any]]:
    """Fit every configuration on ``train`` and predict ``test``: (name, labels, seconds,
    modality weights, what ``auto`` chose or None). The configurations share one
    :class:`~mmfuse.fusion.experts.ExpertsCache` (``experts_cache``, else a new one)."""
    from ..fusion import create_fusion
    from ..fusion.experts import ExpertsCache

    cache = ExpertsCache() if experts_cache is None else experts_cache
    g_train = None if groups is None else np.asarray(groups)[train]
    return [_fit_predict(c, views, present, y, g_train, train, test, classifier, cv,
                         random_state, create_fusion, table, cache) for c in configs]


def fold_work(fold: Fold, configs: Sequence[Config]
              ) -> list[tuple[str, np.ndarray, float, Any, Any, np.ndarray, Any]]:
    """The evaluation's work in one outer fold (for :meth:`CrossValidation.run`): every
    configuration fitted and scored, each as :func:`run_fold`'s tuple plus the test rows
    and the encoders the fold chose."""
    return [(*r, fold.test, fold.chosen)
            for r in run_fold(fold.views, fold.present, fold.y, fold.groups, fold.train,
                              fold.test, configs, fold.classifier, fold.inner_cv,
                              fold.random_state, fold.table,
                              experts_cache=fold.experts_cache)]


def fit_config(c: Config, views: Views, present: Present, y: np.ndarray, g_train: Any,
               train: np.ndarray, classifier: Any, cv: int, random_state: Any,
               create_fusion: Callable | None = None, experts_cache: Any = None) -> Any:
    """Configuration ``c`` fitted on the ``train`` rows that carry at least one of its
    modalities (None when no training row does), sharing ``experts_cache`` (an
    :class:`~mmfuse.fusion.experts.ExpertsCache`, or None). Shared by evaluation and
    robustness."""
    if create_fusion is None:
        from ..fusion import create_fusion
    params = {"classifier": classifier, "cv": cv, "random_state": random_state, **c.params}
    if c.weights is not None:
        params["weights"] = c.weights
    p = {m: present[m][train] for m in c.modalities}
    keep = np.any(np.stack(list(p.values())), axis=0)  # rows with none of these modalities
    if not keep.any():
        return None
    strategy = create_fusion(c.fusion, **params)
    with warnings.catch_warnings():  # the result records it per fold (weights_fallback)
        warnings.simplefilter("ignore", WeightsFallbackWarning)
        strategy.fit({m: views[m][train][keep] for m in c.modalities}, y[train][keep],
                     {m: a[keep] for m, a in p.items()},
                     None if g_train is None else g_train[keep], experts_cache=experts_cache)
    return strategy


def _fit_predict(c: Config, views: Views, present: Present, y: np.ndarray, g_train: Any,
                 train: np.ndarray, test: np.ndarray, classifier: Any, cv: int,
                 random_state: Any, create_fusion: Callable, table: Any = None,
                 experts_cache: Any = None) -> tuple[str, np.ndarray, float, Any, Any]:
    start = time.perf_counter()
    strategy = fit_config(c, views, present, y, g_train, train, classifier, cv, random_state,
                          create_fusion, experts_cache)
    if strategy is None:
        raise InputError(f"{c.name}: no training row of a fold has any of {list(c.modalities)}")
    from ..uncertainty.evaluation import fold_scores

    pred, unc = fold_scores(strategy, c.uncertainty, views, present, y, g_train, train, test,
                            cv, random_state, table, experts_cache=experts_cache)
    return (c.name, pred, time.perf_counter() - start, strategy.modality_weights_,
            (getattr(strategy, "chosen_name_", None), getattr(strategy, "weights_fallback_", None),
             unc))


def evaluate(X: Any, y: Any, *, encoders: Any = None, groups: Any = None,
             strategies: Sequence[str] = DEFAULT_STRATEGIES, weights: Any = "cv",
             cv: Any = 5, classifier: Any = None, inner_cv: int = 5, random_state: Any = 0,
             on_error: str = "raise", singles: bool = True, baseline: bool = True,
             fusion_params: Mapping[str, Mapping[str, Any]] | None = None,
             progress: Progress | None = None, features: FeatureTable | None = None,
             n_jobs: int | None = None, uncertainty: Any = None) -> EvaluationResult:
    """Cross-validate every single modality, every fused strategy and the seed baseline.

    Parameters
    ----------
    X : DataFrame, dict of arrays, or 2-D array
        Raw samples (one column per modality) or pre-extracted views.
    y : array-like of labels
    encoders : dict or "auto", default=None
        As in :class:`~mmfuse.MultimodalClassifier`.
    groups : array-like or None, default=None
        Group of each sample (speaker, author): outer *and* inner splits are then grouped.
    strategies : sequence of str, default=("early", "weighted", "late", "stacking")
    weights : {"cv", "relative", "equal"} or dict, default="cv"
    cv : int, "loso", dict or splitter, default=5
    inner_cv : int, default=5
        Folds used inside each training fold to learn weights and meta-models.
    on_error : {"raise", "skip"}, default="raise"
        Unreadable items raise, or count as missing and are reported in ``result.errors``.
        A row left with no modality at all is excluded from scoring, and reported too.
    n_jobs : int or None, default=None
        Folds run in this many worker processes (joblib; -1 = one per core). Each fold
        uses one BLAS thread: the models are small, and oversubscribed BLAS threads are
        several times slower than one.
    features : FeatureTable, optional
        Features already extracted for X (then X is ignored).
    uncertainty : :class:`~mmfuse.uncertainty.evaluation.UncertaintySpec`, default=None
        Calibration and sets learned per training fold (log-loss, Brier, ECE: always).

    Returns
    -------
    EvaluationResult
    """
    started = time.perf_counter()
    table, y, groups, classes, y_enc = checked_inputs(X, y, features, encoders, groups,
                                                      on_error, progress)
    feature_seconds = time.perf_counter() - started
    usable, errors = usable_rows(table, on_error)
    configs = [replace(c, uncertainty=uncertainty) for c in make_configs(
        list(table.views), strategies, weights, singles, baseline, fusion_params)]
    cv_run = CrossValidation.split(table, y_enc, groups, cv, random_state, usable,
                                   classifier=classifier, inner_cv=inner_cv)
    preds = {c.name: np.full(len(y), -1, dtype=int) for c in configs}
    fold_acc: dict[str, list[float]] = {c.name: [] for c in configs}
    fold_f1: dict[str, list[float]] = {c.name: [] for c in configs}
    seconds = {c.name: 0.0 for c in configs}
    fold_weights: dict[str, list[Any]] = {c.name: [] for c in configs}
    fallback: dict[str, list[str | None]] = {c.name: [] for c in configs}
    unc: dict[str, list[Any]] = {c.name: [] for c in configs}
    chosen: dict[str, list[str]] = {c.name: [] for c in configs}
    chosen_encoders: list[dict[str, str]] = []
    for fold in cv_run.run(partial(fold_work, configs=configs), n_jobs=n_jobs,
                           progress=progress):
        for name, pred, secs, w, (pick, fell_back, u), test, enc_pick in fold:
            if enc_pick is not None and name == configs[0].name:
                chosen_encoders.append(enc_pick)
            if pick is not None:
                chosen[name].append(pick)
            preds[name][test] = pred
            fold_acc[name].append(float(np.mean(pred == y_enc[test])))
            fold_f1[name].append(float(f1_score(y_enc[test], pred, average="macro",
                                                labels=np.unique(y_enc[test]),
                                                zero_division=0)))
            seconds[name] += secs
            fold_weights[name].append(dict(w) if w else None)
            fallback[name].append(fell_back)
            unc[name].append(u)

    rows = []
    for c in configs:
        acc, ci = mean_ci95(fold_acc[c.name])
        mw, fw = None, [None] * len(fold_weights[c.name])
        if any(fold_weights[c.name]) and c.kind != "single":
            # a dropped modality has no weight: 0
            fw = [None if w is None else {m: float(w.get(m, 0.0)) for m in c.modalities}
                  for w in fold_weights[c.name]]
            mw = {m: float(np.mean([w[m] for w in fw if w is not None])) for m in c.modalities}
        rows.append(Row(c.name, c.kind, list(c.modalities), None if c.kind == "single" else c.fusion,
                        c.weights if isinstance(c.weights, (str, type(None))) else dict(c.weights),
                        acc, ci, float(np.mean(fold_f1[c.name])), round(seconds[c.name], 3),
                        fold_acc[c.name], mw, chosen[c.name], fold_f1[c.name], fw,
                        fallback[c.name], summarize(unc[c.name])))
    return EvaluationResult(len(y), len(classes), classes.tolist(), cv_run.cv_info, rows, preds, y_enc,
                            errors, feature_seconds, chosen_encoders, dict(table.encoder_names),
                            random_state, inner_cv, uncertainty=uncertainty)
