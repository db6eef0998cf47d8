"""Honest evaluation: cross-validation that cannot leak, with every single modality, every
fused strategy and the seed baseline side by side.

Features from stateless encoders are extracted once (nothing is learned from data, so this
cannot leak); stateful encoders (TF-IDF) and everything the strategies learn (scalers,
weights, meta-models) are fit on each training fold only. Fold work is a pure function of
(views, fold, configuration) so it can later be shipped to Dask workers.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score

from .._params import check_on_error
from .._errors import InputError
from ..encoders.base import ItemError
from ..encoders.featurizer import Encoded, Featurizer, as_columns, build_encoders, resolve_encoders
from ..fusion.base import WeightsFallbackWarning
from ..uncertainty.evaluation import summarize
from ..views import Present, Views
from .folds import make_splits, mean_ci95

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


class FeatureTable:
    """Per-column features for a whole table, computed once where that cannot leak.

    Stateless encoders are embedded once (streamed, and cached on disk unless
    ``cache=None``); stateful ones keep their prepared items and are fit per training fold
    by :meth:`fold_views`.
    """

    def __init__(self, X: Any, encoders: Any, on_error: str = "raise",
                 progress: Progress | None = None, cache: Any = True, pooling: str = "mean"):
        check_on_error(on_error)
        from ..encoders.candidates import Candidates
        from ..encoders.featurizer import encode_candidates
        from ..encoders.parts import needed_encoders

        columns, self.n = as_columns(X)
        specs = resolve_encoders(encoders, columns)
        fixed = {c: s for c, s in specs.items() if not isinstance(s, Candidates)}
        # a cell holding several files is pooled (mean or max, mmfuse.encoders.cells)
        self.featurizer = Featurizer(build_encoders(fixed), pooling=pooling)
        self.encoder_names: dict[str, str] = {c: e.name
                                              for c, e in self.featurizer.encoders.items()}
        if fixed:
            self._encoded = self.featurizer.transform_deferred(columns, on_error=on_error,
                                                               cache=cache, progress=progress)
        else:
            self._encoded = Encoded({}, {}, [], deferred={})
        self.views: Views = dict(self._encoded.views)
        self.present: Present = dict(self._encoded.present)
        self.errors: list[ItemError] = list(self._encoded.errors)
        #: column -> (Candidates, {encoder: Part}) for columns that choose their encoder
        self.candidates: dict[str, tuple[Any, dict[str, Any]]] = {}
        not_cached = 0
        for col, spec in specs.items():
            if not isinstance(spec, Candidates):
                continue
            counts: dict[str, Any] = {}
            parts, errors = encode_candidates(needed_encoders(spec), columns, col,
                                              on_error=on_error, cache=cache,
                                              progress=progress, stats=counts,
                                              pooling=pooling)
            not_cached += counts.get("not_cached", 0)
            self.candidates[col] = (spec, parts)
            self.encoder_names[col] = "/".join(spec.names)
            # placeholder until a fold chooses; a row has the column if any encoder has it
            self.views[col] = np.full((self.n, 1), np.nan, np.float32)
            self.present[col] = np.logical_or.reduce([p.present for p in parts.values()])
            self.errors += errors
        self.views = dict(sorted(self.views.items()))
        self.errors.sort(key=lambda e: e.row)
        #: stateful encoders (unfitted) and their prepared items, fit per fold
        self.stateful: dict[str, tuple[Any, list[Any]]] = {
            c: (self.featurizer.encoders[c], p) for c, p in self._encoded.deferred.items()}
        #: features the on-disk cache failed to store (reported in the run's JSON)
        self.not_cached = self._encoded.not_cached + not_cached

    def fold_views(self, train: np.ndarray) -> tuple[Views, Present]:
        """Views for every row, with stateful encoders fit on the ``train`` rows only."""
        encoded = Encoded(self.views, self.present, deferred=self._encoded.deferred)
        return self.featurizer.fit_fold(encoded, train), self.present

    def choose(self, train: np.ndarray, y: np.ndarray, groups: Any, cv: int,
               random_state: Any, classifier: Any = None
               ) -> tuple[Views, Present, dict[str, str], Any]:
        """:meth:`fold_views`, with each candidate column's encoder chosen by inner CV on
        the ``train`` rows only (:func:`mmfuse.encoder_choice.select_encoder`):
        ``(views, present, {column: chosen encoder}, classifier)``. ``classifier`` is the
        one given, or where a column chose separate experts (``"a|b"``) a per-view dict
        giving that column its :class:`~mmfuse.fusion.linear.SplitExperts`
        (:func:`~mmfuse.fusion.linear.classifier_for`), for the fold's strategies."""
        from ..encoder_choice import select_encoder
        from ..encoders.parts import candidate_view, view_classifier
        from ..fusion.linear import classifier_for, with_view_classifiers

        views, present = self.fold_views(train)
        views, present = dict(views), dict(present)
        chosen: dict[str, str] = {}
        own: dict[str, Any] = {}
        g_train = None if groups is None else np.asarray(groups)[train]
        for col, (cands, parts) in self.candidates.items():
            sub = {name: part.subset(train) for name, part in parts.items()}
            base = classifier_for(classifier, col)
            selection = select_encoder(sub, cands, y[train], g_train, cv=cv,
                                       classifier=base, random_state=random_state,
                                       column=col, rows=train)
            chosen[col] = selection.chosen
            views[col], present[col], widths = candidate_view(parts, selection.chosen, train)
            own[col] = view_classifier(selection.chosen, widths, base)
        return views, present, chosen, with_view_classifiers(classifier, own)


def run_fold(views: Views, present: Present, y: np.ndarray, groups: Any, train: np.ndarray,
             test: np.ndarray, configs: Sequence[Config], classifier: Any, cv: int,
             random_state: Any, table: Any = None) -> list[tuple[str, np.ndarray, float, Any, Any]]:
    """Fit every configuration on ``train`` and predict ``test``: (name, labels, seconds,
    modality weights, what ``auto`` chose or None)."""
    from ..fusion import create_fusion
    from ..fusion.experts import shared_experts

    g_train = None if groups is None else np.asarray(groups)[train]
    out = []
    with shared_experts():
        for c in configs:
            out.append(_fit_predict(c, views, present, y, g_train, train, test, classifier, cv,
                                    random_state, create_fusion, table))
    return out


def fold_job(table: FeatureTable, y: np.ndarray, groups: Any, train: np.ndarray,
             test: np.ndarray, configs: Sequence[Config], classifier: Any, cv: int,
             random_state: Any) -> list[tuple[str, np.ndarray, float, Any, Any, np.ndarray]]:
    """One outer fold, start to finish: fold-fitted features, then every configuration."""
    from threadpoolctl import threadpool_limits

    from ..fusion.experts import shared_experts

    # one memo for the fold: the strategies reuse the encoder selection's experts
    with threadpool_limits(limits=1, user_api="blas"), shared_experts():
        chosen = None
        if getattr(table, "candidates", None):
            # a column of separate experts ("a|b") has its own classifier in this fold
            views, present, chosen, classifier = table.choose(train, y, groups, cv,
                                                              random_state, classifier)
        else:
            views, present = table.fold_views(train)
        return [(*r, test, chosen) for r in run_fold(views, present, y, groups, train, test,
                                                      configs, classifier, cv, random_state,
                                                      table)]


def _run_folds(table, y, groups, folds, configs, classifier, cv, random_state, n_jobs, progress):
    from joblib import Parallel, delayed

    total = len(folds)
    if progress:
        progress("cross-validation", 0, total)
    jobs = (delayed(fold_job)(table, y, groups, train, test, configs, classifier, cv,
                              random_state) for train, test in folds)
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    for done, fold in enumerate(parallel(jobs), start=1):
        if progress:
            progress("cross-validation", done, total)
        yield from fold


def fit_config(c: Config, views: Views, present: Present, y: np.ndarray, g_train: Any,
               train: np.ndarray, classifier: Any, cv: int, random_state: Any,
               create_fusion: Callable | None = None) -> Any:
    """Configuration ``c`` fitted on the ``train`` rows that carry at least one of its
    modalities (None when no training row does). Shared by evaluation and robustness."""
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
                     None if g_train is None else g_train[keep])
    return strategy


def _fit_predict(c: Config, views: Views, present: Present, y: np.ndarray, g_train: Any,
                 train: np.ndarray, test: np.ndarray, classifier: Any, cv: int,
                 random_state: Any, create_fusion: Callable, table: Any = None
                 ) -> tuple[str, np.ndarray, float, Any, Any]:
    start = time.perf_counter()
    strategy = fit_config(c, views, present, y, g_train, train, classifier, cv, random_state,
                          create_fusion)
    if strategy is None:
        raise InputError(f"{c.name}: no training row of a fold has any of {list(c.modalities)}")
    from ..uncertainty.evaluation import fold_scores

    pred, unc = fold_scores(strategy, c.uncertainty, views, present, y, g_train, train, test,
                            cv, random_state, table)
    return (c.name, pred, time.perf_counter() - start, strategy.modality_weights_,
            (getattr(strategy, "chosen_name_", None), getattr(strategy, "weights_fallback_", None),
             unc))


def checked_inputs(X: Any, y: Any, features: FeatureTable | None, encoders: Any, groups: Any,
                   on_error: str, progress: Progress | None
                   ) -> tuple[FeatureTable, np.ndarray, Any, np.ndarray, np.ndarray]:
    """Validate ``y`` and ``groups`` against the features (built from ``X`` unless given):
    ``(table, y, groups, classes, encoded y)``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"y must be 1-D; got shape {y.shape}")
    table = features or FeatureTable(X, encoders, on_error, progress)
    if len(y) != table.n:
        raise InputError(f"X has {table.n} samples but y has {len(y)} labels")
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(y):
            raise InputError(f"groups has {len(groups)} entries; expected {len(y)}")
    classes, y_enc = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise InputError(f"need at least 2 classes; y has only {classes.tolist()}")
    return table, y, groups, classes, y_enc


def usable_rows(table: FeatureTable, on_error: str) -> tuple[np.ndarray, list[ItemError]]:
    """Rows with at least one modality, and the table's errors plus one per other row (or an
    error with ``on_error="raise"``)."""
    usable = np.any(np.stack(list(table.present.values())), axis=0)
    errors = list(table.errors)
    if not usable.all():
        rows = np.flatnonzero(~usable).tolist()
        if on_error == "raise":
            raise InputError(f"row {rows[0]} has no modality at all ({len(rows)} such rows)")
        errors += [ItemError(r, None, "", "no modality left: excluded from evaluation")
                   for r in rows]
    return usable, errors


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
    from ..fusion.experts import shared_rows

    started = time.perf_counter()
    table, y, groups, classes, y_enc = checked_inputs(X, y, features, encoders, groups,
                                                      on_error, progress)
    feature_seconds = time.perf_counter() - started
    usable, errors = usable_rows(table, on_error)
    configs = [replace(c, uncertainty=uncertainty) for c in make_configs(
        list(table.views), strategies, weights, singles, baseline, fusion_params)]
    splits, cv_info = make_splits(y_enc, groups, cv, random_state)
    preds = {c.name: np.full(len(y), -1, dtype=int) for c in configs}
    fold_acc: dict[str, list[float]] = {c.name: [] for c in configs}
    fold_f1: dict[str, list[float]] = {c.name: [] for c in configs}
    seconds = {c.name: 0.0 for c in configs}
    fold_weights: dict[str, list[Any]] = {c.name: [] for c in configs}
    fallback: dict[str, list[str | None]] = {c.name: [] for c in configs}
    unc: dict[str, list[Any]] = {c.name: [] for c in configs}
    chosen: dict[str, list[str]] = {c.name: [] for c in configs}
    folds = [(train[usable[train]], test[usable[test]]) for train, test in splits]
    chosen_encoders: list[dict[str, str]] = []
    # one table, one label vector: outer folds in this process share the encoder
    # selection's experts fitted on the same rows (leave-one-group-out outer and inner
    # folds train on the same groups twice; see mmfuse.fusion.experts.shared_rows)
    with shared_rows():
        for name, pred, secs, w, (pick, fell_back, u), test, enc_pick in _run_folds(
                table, y_enc, groups, folds, configs, classifier, inner_cv, random_state,
                n_jobs, progress):
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
    return EvaluationResult(len(y), len(classes), classes.tolist(), cv_info, rows, preds, y_enc,
                            errors, feature_seconds, chosen_encoders, dict(table.encoder_names),
                            random_state, inner_cv, uncertainty=uncertainty)
