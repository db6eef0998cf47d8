"""Per-modality experts: one scaler + classifier per modality, their out-of-fold
probabilities and cross-fitted (inner-fold) experts, shared between fits through an
:class:`ExpertsCache` passed explicitly (``fit(..., experts_cache=)``)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..views import Present, Views, is_sparse
from .linear import aligned_proba, classifier_for, make_classifier
from .scaling import ViewScaler
from ..splits import TooFewForInnerFolds, inner_splits


class ExpertsCache:
    """Per-modality experts and out-of-fold probabilities shared by the fits it is handed to.

    Several strategies fitted on the same training rows need the same per-modality experts
    and out-of-fold probabilities: given one cache (``strategy.fit(...,
    experts_cache=cache)``, and the same keyword on the functions of this module, the
    encoder choice and the uncertainty fit), they are computed once, whichever asks
    first. Keys are content digests of everything a fit depends on, so sharing is safe
    across strategies, folds and levels; with no cache (the default) nothing is
    remembered and no state passes between fits.

    ``rows``: fits keyed by the ids of their training rows in one table (see
    :func:`reuse_fit`), shared by every cache of one evaluation (:meth:`fold`). Within one
    evaluation (one table of features, one label vector), two outer folds can train an
    inner expert on the very same rows: with leave-one-group-out outer and inner folds,
    outer fold k's inner fold "every group but k and g" is outer fold g's inner fold
    "every group but g and k". The creator of ``rows`` guarantees that every fit keyed by
    row ids sees the same features and labels for a given row id. None: nothing is kept
    by rows.

    Created per outer fold by the evaluation engine (:mod:`mmfuse.evaluate.engine`), for
    one fit by :meth:`mmfuse.MultimodalClassifier.fit`, and by ``auto`` for its
    candidates when it is given none.
    """

    def __init__(self, rows: dict | None = None):
        self.memo: dict[tuple, Any] = {}
        self.rows = rows

    @classmethod
    def sharing_rows(cls) -> "ExpertsCache":
        """A cache whose :meth:`fold` caches share fits on the same rows of one table."""
        return cls(rows={})

    def fold(self) -> "ExpertsCache":
        """A fresh cache for one outer fold, sharing this one's fits by rows."""
        return ExpertsCache(self.rows)

    def get(self, key: tuple, compute: Any) -> Any:
        """``compute()``, or what it gave for ``key`` before in this cache."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


def reuse_fit(key: tuple, fit: Any, *arrays: Any,
              experts_cache: ExpertsCache | None = None) -> Any:
    """``fit()``, or, with a cache that shares rows (:meth:`ExpertsCache.sharing_rows`),
    what an earlier call with the same ``key`` and ``arrays`` returned. ``key`` and the
    content of ``arrays`` (training rows' ids, or their data; digested only when rows are
    shared, where it costs a pass over them) must name everything the fit depends on."""
    memo = None if experts_cache is None else experts_cache.rows
    if memo is None:
        return fit()
    full = key + (_digest(*arrays),)
    if full not in memo:
        memo[full] = fit()
    return memo[full]


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
        elif is_sparse(a):
            a = a.tocsr()
            h.update(str(("csr", a.shape, a.dtype.str)).encode())
            for part in (a.indptr, a.indices, a.data):
                h.update(np.ascontiguousarray(part).tobytes())
        else:
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def _memo(key: tuple, compute: Any, experts_cache: ExpertsCache | None) -> Any:
    return compute() if experts_cache is None else experts_cache.get(key, compute)


class ModalityExpert:
    """Scaler + classifier for one modality, trained on the rows that have it."""

    def __init__(self, classifier: Any, random_state: Any = None):
        self.classifier = classifier
        self.random_state = random_state

    def fit(self, x: Any, y: np.ndarray, present: np.ndarray, n_classes: int):
        self.n_classes_ = n_classes
        self.scaler_ = ViewScaler().fit(x, present)
        rows = np.flatnonzero(present)
        self.prior_ = np.bincount(y, minlength=n_classes) / len(y)
        if len(np.unique(y[rows])) < 2:  # too few labels for a model: predict the prior
            self.model_ = None
            return self
        z = self.scaler_.transform(x[rows], present[rows])
        self.model_ = make_classifier(self.classifier, self.random_state, z)
        self.model_.fit(z, y[rows])
        return self

    def predict_proba(self, x: Any, present: np.ndarray) -> np.ndarray:
        """Probabilities for every row; rows without the modality get NaN."""
        out = np.full((x.shape[0], self.n_classes_), np.nan)
        if present.any():
            if self.model_ is None:
                out[present] = self.prior_
            else:
                rows = np.flatnonzero(present)
                z = self.scaler_.transform(x[rows], present[rows])
                out[rows] = aligned_proba(self.model_, z, self.n_classes_)
        return out


class CrossFitExpert:
    """One modality's inner-fold experts, averaged at prediction (k-fold bagging).

    The out-of-fold probabilities a meta level (weights, a stacking meta-model, a
    weighted-sum classifier) is trained on come from these very experts, each trained on
    the groups of its inner training fold. Predicting with their average, rather than with
    one expert refit on every training row, gives the meta level inputs calibrated like the
    ones it was fitted on: a refit expert has seen more groups and is more confident, which
    is exactly what a learned combination misreads under group shift.

    Parameters
    ----------
    experts : list of ModalityExpert
        Fitted experts, one per inner fold.
    """

    def __init__(self, experts: list[ModalityExpert]):
        self.experts = experts

    @property
    def n_classes_(self) -> int:
        return self.experts[0].n_classes_

    def predict_proba(self, x: Any, present: np.ndarray) -> np.ndarray:
        """Mean of the fold experts' probabilities; rows without the modality get NaN."""
        out = np.full((x.shape[0], self.n_classes_), np.nan)
        if present.any():
            rows = np.flatnonzero(present)
            xr, pr = x[rows], present[rows]
            out[rows] = np.mean([e.predict_proba(xr, pr) for e in self.experts], axis=0)
        return out


def predict_cross_fitted(experts: Mapping[str, Any], views: Views, present: Present,
                         meta: Any) -> np.ndarray:
    """``meta(probas, present)`` on each inner fold's experts, averaged over the folds.

    With cross-fitted experts (all from the same inner splits), fold ``j``'s experts give
    every modality's probabilities exactly as one out-of-fold row saw them (the same
    single-expert calibration, the same fold for every modality), so the meta level runs
    on inputs like its training inputs; the meta outputs are then averaged, as k-fold
    bagging averages whole models. Other experts are used as they are.
    """
    mods = sorted(views)
    folds = {len(experts[m].experts) for m in mods if isinstance(experts[m], CrossFitExpert)}
    if len(folds) != 1 or not all(isinstance(experts[m], CrossFitExpert) for m in mods):
        return meta({m: experts[m].predict_proba(views[m], present[m]) for m in mods}, present)
    outs = [meta({m: experts[m].experts[j].predict_proba(views[m], present[m]) for m in mods},
                 present) for j in range(folds.pop())]
    return np.mean(outs, axis=0)


def out_of_fold_probas(views: Views, y: np.ndarray, present: Present, groups: Any,
                       classifier: Any, n_splits: int, random_state: Any, *,
                       experts_cache: ExpertsCache | None = None) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of each modality's expert (NaN where the modality is missing).

    Inner splits are shared by all modalities and made like the outer ones (stratified,
    grouped when groups are given). With an ``experts_cache`` they are computed once per
    training set, whichever strategy given that cache asks first.
    """
    return {m: r[0] for m, r in _cross_fit(views, y, present, groups, classifier, n_splits,
                                            random_state, experts_cache).items()}


def cross_fitted_experts(views: Views, y: np.ndarray, present: Present, groups: Any,
                         classifier: Any, n_splits: int, random_state: Any, *,
                         experts_cache: ExpertsCache | None = None
                         ) -> dict[str, CrossFitExpert]:
    """The experts behind :func:`out_of_fold_probas` (same splits, same cache), averaged."""
    return {m: CrossFitExpert(r[1]) for m, r in _cross_fit(views, y, present, groups,
                                                           classifier, n_splits,
                                                           random_state,
                                                           experts_cache).items()}


def _cross_fit_key(modality: str, x: Any, present: np.ndarray, base: tuple) -> tuple:
    return ("oof", modality, _digest(x, present)) + base


def _cross_fit_base(y: np.ndarray, groups: Any, classifier: Any, n_splits: int,
                    random_state: Any) -> tuple:
    return (repr(classifier), n_splits, repr(random_state), _digest(y, groups))


def _cross_fit(views, y, present, groups, classifier, n_splits, random_state, experts_cache):
    # each view's expert has its own classifier (a per-view dict: see classifier_for)
    n_classes = int(y.max()) + 1
    return {m: _memo(_cross_fit_key(m, x, present[m],
                                    _cross_fit_base(y, groups, classifier_for(classifier, m),
                                                    n_splits, random_state)),
                     lambda m=m, x=x: _oof_one(x, y, present[m], groups,
                                               classifier_for(classifier, m), n_splits,
                                               random_state, n_classes),
                     experts_cache)
            for m, x in views.items()}


def recall_cross_fit(modality: str, x: Any, y: np.ndarray, present: np.ndarray, groups: Any,
                     classifier: Any, n_splits: int, random_state: Any, *,
                     experts_cache: ExpertsCache | None = None
                     ) -> tuple[np.ndarray, list[ModalityExpert]] | None:
    """What :func:`out_of_fold_probas` and :func:`cross_fitted_experts` would reuse for
    one modality from ``experts_cache`` (``(oof, experts)``), or None."""
    if experts_cache is None:
        return None
    memo = experts_cache.memo
    base = _cross_fit_base(y, groups, classifier_for(classifier, modality), n_splits,
                           random_state)
    return memo.get(_cross_fit_key(modality, x, present, base))


def remember_cross_fit(modality: str, x: Any, y: np.ndarray, present: np.ndarray,
                       groups: Any, classifier: Any, n_splits: int, random_state: Any,
                       oof: np.ndarray, experts: list[ModalityExpert], *,
                       experts_cache: ExpertsCache | None = None) -> None:
    """Store one modality's out-of-fold probabilities and inner-fold experts, computed by
    the caller exactly as :func:`out_of_fold_probas` would (``ModalityExpert`` fitted on
    each of ``inner_splits(y, groups, n_splits, random_state)``), so that a strategy fitted
    next on the same view, labels and groups with the same ``experts_cache`` reuses them
    (the encoder selection scores candidates fold by fold, then hands over the chosen
    one's experts). Without a cache nothing is kept."""
    if experts_cache is None:
        return
    memo = experts_cache.memo
    base = _cross_fit_base(y, groups, classifier_for(classifier, modality), n_splits,
                           random_state)
    memo.setdefault(_cross_fit_key(modality, x, present, base), (oof, experts))


def _oof_one(x: Any, y: np.ndarray, present: np.ndarray, groups: Any, classifier: Any,
             n_splits: int, random_state: Any, n_classes: int
             ) -> tuple[np.ndarray, list[ModalityExpert]]:
    splits = inner_splits(y, groups, n_splits, random_state)
    if not splits:
        raise TooFewForInnerFolds(
            "too few samples (or groups) per class to learn fusion weights out-of-fold; "
            "use weights='equal' or more data"
        )
    oof = np.full((len(y), n_classes), np.nan)
    experts = []
    for train, test in splits:
        expert = ModalityExpert(classifier, random_state)
        expert.fit(x[train], y[train], present[train], n_classes)
        oof[test] = expert.predict_proba(x[test], present[test])
        experts.append(expert)
    return oof, experts


def fit_experts(views: Views, y: np.ndarray, present: Present, classifier: Any,
                random_state: Any, *, experts_cache: ExpertsCache | None = None
                ) -> dict[str, ModalityExpert]:
    """One expert per modality fitted on every row that has it (shared through
    ``experts_cache``, as :func:`out_of_fold_probas`)."""
    n_classes = int(y.max()) + 1
    return {m: _memo(("expert", m, _digest(x, present[m]), repr(classifier_for(classifier, m)),
                      repr(random_state), _digest(y)),
                     lambda m=m, x=x: ModalityExpert(classifier_for(classifier, m), random_state)
                     .fit(x, y, present[m], n_classes), experts_cache)
            for m, x in views.items()}
