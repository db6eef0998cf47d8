"""The one cross-validation engine of :func:`~mmfuse.evaluate.evaluate`,
:func:`~mmfuse.evaluate.evaluate_robustness` and :func:`~mmfuse.evaluate.dp.evaluate_dp`.

A :class:`FeatureTable` holds a table's features, computed once where that cannot leak
(stateless encoders); :class:`CrossValidation` makes the outer splits and runs the folds:
per outer fold, the stateful encoders (TF-IDF...) are fit on the training rows only and a
column that chooses its encoder chooses it by inner CV on them; the fold's views then go
to the caller's work (:class:`Fold` -> anything), which fits and scores what it compares.
Folds run here, in this process or on joblib workers (``n_jobs``; Dask inside
:func:`mmfuse.distributed.fold_backend`), each with one BLAS thread, and come back in
order. The callers only say what to do in a fold and how to sum the folds up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .._params import check_on_error
from ..encoders.base import ItemError
from ..encoders.featurizer import Encoded, Featurizer, as_columns, build_encoders, resolve_encoders
from ..fusion.experts import ExpertsCache
from ..views import Present, Views
from .folds import make_splits

Progress = Callable[[str, int, int], None]


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
               random_state: Any, classifier: Any = None, *, experts_cache: Any = None
               ) -> tuple[Views, Present, dict[str, str], Any]:
        """:meth:`fold_views`, with each candidate column's encoder chosen by inner CV on
        the ``train`` rows only (:func:`mmfuse.encoder_choice.select_encoder`):
        ``(views, present, {column: chosen encoder}, classifier)``. ``classifier`` is the
        one given, or where a column chose separate experts (``"a|b"``) a per-view dict
        giving that column its :class:`~mmfuse.fusion.linear.SplitExperts`
        (:func:`~mmfuse.fusion.linear.classifier_for`), for the fold's strategies.
        ``experts_cache``: the fold's :class:`~mmfuse.fusion.experts.ExpertsCache`, which
        then holds the chosen encoders' inner-fold experts for the strategies fitted next
        on the same rows (None: nothing is shared)."""
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
                                       column=col, rows=train,
                                       experts_cache=experts_cache)
            chosen[col] = selection.chosen
            views[col], present[col], widths = candidate_view(parts, selection.chosen, train)
            own[col] = view_classifier(selection.chosen, widths, base)
        return views, present, chosen, with_view_classifiers(classifier, own)


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


@dataclass
class Fold:
    """One outer fold as the caller's work sees it: row positions in the table, the views
    of every row (stateful encoders fit on ``train``, candidate columns chosen on it) and
    what the fold's fits share."""

    index: int
    train: np.ndarray
    test: np.ndarray
    views: Views
    present: Present
    #: the encoded labels (0..K-1) and groups (or None) of every row of the table
    y: np.ndarray
    groups: Any
    #: the per-modality classifier: the one given, or a per-view dict where a column
    #: chose separate experts ("a|b")
    classifier: Any
    #: column -> the encoder it chose in this fold (None: no column chooses)
    chosen: dict[str, str] | None
    inner_cv: int
    random_state: Any
    table: FeatureTable
    #: what the fits of this fold share (the encoder choice's experts, each strategy's
    #: per-modality experts): hand it to each ``fit(..., experts_cache=)``
    experts_cache: ExpertsCache


@dataclass
class CrossValidation:
    """The outer folds of one table and label vector, and the loop over them.

    Build it with :meth:`split`; :meth:`run` hands each :class:`Fold` to a work function.
    """

    table: FeatureTable
    y: np.ndarray  # encoded labels 0..K-1
    groups: Any
    folds: list[tuple[np.ndarray, np.ndarray]]
    cv_info: dict[str, Any]
    classifier: Any = None
    inner_cv: int = 5
    random_state: Any = 0

    @classmethod
    def split(cls, table: FeatureTable, y: np.ndarray, groups: Any, cv: Any,
              random_state: Any, usable: np.ndarray | None = None, *, classifier: Any = None,
              inner_cv: int = 5) -> "CrossValidation":
        """Outer splits of :func:`~mmfuse.evaluate.folds.make_splits` (stratified, grouped
        whenever groups exist), each cut to the ``usable`` rows (those with a modality)."""
        splits, cv_info = make_splits(y, groups, cv, random_state)
        if usable is not None:
            splits = [(train[usable[train]], test[usable[test]]) for train, test in splits]
        return cls(table, y, groups, splits, cv_info, classifier, inner_cv, random_state)

    def run(self, work: Callable[[Fold], Any], *, n_jobs: int | None = 1,
            progress: Progress | None = None, stage: str = "cross-validation",
            done: int = 0, total: int | None = None) -> Iterator[Any]:
        """``work(fold)`` for every outer fold, in order (a generator: each result as soon
        as its fold is done). ``n_jobs``: folds in this many joblib workers (1: here, in
        order; None: joblib's active backend decides). ``work`` must be picklable to run
        on workers (a module-level function, or a ``functools.partial`` of one).
        ``progress(stage, done, total)`` before the first fold and after each, counting
        from ``done`` (a caller running the folds twice counts on across both runs)."""
        from joblib import Parallel, delayed, effective_n_jobs

        total = len(self.folds) if total is None else total
        if progress:
            progress(stage, done, total)
        # folds run here share fits on the same rows of this one table (leave-one-group-
        # out outer and inner folds train on the same groups twice; see ExpertsCache);
        # on workers, each fold has its own cache
        shared = ExpertsCache.sharing_rows() if effective_n_jobs(n_jobs) == 1 else None
        jobs = (delayed(_fold_job)(self, k, train, test, work, shared)
                for k, (train, test) in enumerate(self.folds))
        for k, out in enumerate(Parallel(n_jobs=n_jobs, return_as="generator")(jobs)):
            if progress:
                progress(stage, done + k + 1, total)
            yield out


def _fold_job(cv: CrossValidation, index: int, train: np.ndarray, test: np.ndarray,
              work: Callable[[Fold], Any], shared: ExpertsCache | None) -> Any:
    """One outer fold, start to finish: fold-fitted features, then the caller's work."""
    from threadpoolctl import threadpool_limits

    table = cv.table
    # one cache for the fold: the strategies reuse the encoder selection's experts, and
    # each other's
    cache = ExpertsCache() if shared is None else shared.fold()
    # one BLAS thread: the models are small, and oversubscribed BLAS threads are several
    # times slower than one
    with threadpool_limits(limits=1, user_api="blas"):
        chosen, classifier = None, cv.classifier
        if getattr(table, "candidates", None):
            # a column of separate experts ("a|b") has its own classifier in this fold
            views, present, chosen, classifier = table.choose(
                train, cv.y, cv.groups, cv.inner_cv, cv.random_state, classifier,
                experts_cache=cache)
        else:
            views, present = table.fold_views(train)
        return work(Fold(index, train, test, views, present, cv.y, cv.groups, classifier,
                         chosen, cv.inner_cv, cv.random_state, table, cache))
