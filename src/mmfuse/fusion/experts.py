"""Per-modality experts: one scaler + classifier per modality, their out-of-fold
probabilities and cross-fitted (inner-fold) experts, shared within :func:`shared_experts`."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from ..views import Present, Views, is_sparse
from .linear import aligned_proba, classifier_for, make_classifier
from .scaling import ViewScaler
from ..splits import TooFewForInnerFolds, inner_splits

# Several strategies fitted on the same training fold need the same per-modality experts and
# out-of-fold probabilities. Inside `shared_experts()` they are computed once; outside it
# (the default) nothing is remembered, so no state leaks between fits.
_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mmfuse_memo", default=None)


@contextlib.contextmanager
def shared_experts() -> Iterator[None]:
    """Reuse per-modality experts and out-of-fold probabilities within this block (a block
    inside another one shares the outer memo: keys are content digests, so that is safe)."""
    outer = _MEMO.get()
    token = _MEMO.set({} if outer is None else outer)
    try:
        yield
    finally:
        _MEMO.reset(token)


# Within one evaluation (one table of features, one label vector), two outer folds can
# train an inner expert on the very same rows: with leave-one-group-out outer and inner
# folds, outer fold k's inner fold "every group but k and g" is outer fold g's inner fold
# "every group but g and k". Inside `shared_rows()`, a fit keyed by the rows' ids in that
# table (or by the training data itself) is kept and reused for the same rows (the same
# fit, bit for bit: the rows, their features and labels are the same).
_ROWS: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mmfuse_rows",
                                                                     default=None)


@contextlib.contextmanager
def shared_rows() -> Iterator[None]:
    """Reuse fits on the same rows of one table within this block (see :func:`reuse_fit`).
    The caller guarantees that every fit keyed by row ids inside the block sees the same
    features and labels for a given row id (one evaluation of one table)."""
    token = _ROWS.set({})
    try:
        yield
    finally:
        _ROWS.reset(token)


def reuse_fit(key: tuple, fit: Any, *arrays: Any) -> Any:
    """``fit()``, or inside :func:`shared_rows` what an earlier call with the same ``key``
    and ``arrays`` returned. ``key`` and the content of ``arrays`` (training rows' ids, or
    their data; digested only inside a block, where it costs a pass over them) must name
    everything the fit depends on."""
    memo = _ROWS.get()
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


def _memo(key: tuple, compute: Any) -> Any:
    memo = _MEMO.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


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
                       classifier: Any, n_splits: int, random_state: Any) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of each modality's expert (NaN where the modality is missing).

    Inner splits are shared by all modalities and made like the outer ones (stratified,
    grouped when groups are given). Within :func:`shared_experts` they are computed once
    per training set, whichever strategy asks first.
    """
    return {m: r[0] for m, r in _cross_fit(views, y, present, groups, classifier, n_splits,
                                            random_state).items()}


def cross_fitted_experts(views: Views, y: np.ndarray, present: Present, groups: Any,
                         classifier: Any, n_splits: int, random_state: Any
                         ) -> dict[str, CrossFitExpert]:
    """The experts behind :func:`out_of_fold_probas` (same splits, same memo), averaged."""
    return {m: CrossFitExpert(r[1]) for m, r in _cross_fit(views, y, present, groups,
                                                           classifier, n_splits,
                                                           random_state).items()}


def _cross_fit_key(modality: str, x: Any, present: np.ndarray, base: tuple) -> tuple:
    return ("oof", modality, _digest(x, present)) + base


def _cross_fit_base(y: np.ndarray, groups: Any, classifier: Any, n_splits: int,
                    random_state: Any) -> tuple:
    return (repr(classifier), n_splits, repr(random_state), _digest(y, groups))


def _cross_fit(views, y, present, groups, classifier, n_splits, random_state):
    # each view's expert has its own classifier (a per-view dict: see classifier_for)
    n_classes = int(y.max()) + 1
    return {m: _memo(_cross_fit_key(m, x, present[m],
                                    _cross_fit_base(y, groups, classifier_for(classifier, m),
                                                    n_splits, random_state)),
                     lambda m=m, x=x: _oof_one(x, y, present[m], groups,
                                               classifier_for(classifier, m), n_splits,
                                               random_state, n_classes))
            for m, x in views.items()}


def recall_cross_fit(modality: str, x: Any, y: np.ndarray, present: np.ndarray, groups: Any,
                     classifier: Any, n_splits: int, random_state: Any
                     ) -> tuple[np.ndarray, list[ModalityExpert]] | None:
    """What :func:`out_of_fold_probas` and :func:`cross_fitted_experts` would reuse for
    one modality inside :func:`shared_experts` (``(oof, experts)``), or None."""
    memo = _MEMO.get()
    if memo is None:
        return None
    base = _cross_fit_base(y, groups, classifier_for(classifier, modality), n_splits,
                           random_state)
    return memo.get(_cross_fit_key(modality, x, present, base))


def remember_cross_fit(modality: str, x: Any, y: np.ndarray, present: np.ndarray,
                       groups: Any, classifier: Any, n_splits: int, random_state: Any,
                       oof: np.ndarray, experts: list[ModalityExpert]) -> None:
    """Store one modality's out-of-fold probabilities and inner-fold experts, computed by
    the caller exactly as :func:`out_of_fold_probas` would (``ModalityExpert`` fitted on
    each of ``inner_splits(y, groups, n_splits, random_state)``), so that a strategy fitted
    next on the same view, labels and groups inside :func:`shared_experts` reuses them
    (the encoder selection scores candidates fold by fold, then hands over the chosen
    one's experts). Outside :func:`shared_experts` nothing is kept."""
    memo = _MEMO.get()
    if memo is None:
        return
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
                random_state: Any) -> dict[str, ModalityExpert]:
    n_classes = int(y.max()) + 1
    return {m: _memo(("expert", m, _digest(x, present[m]), repr(classifier_for(classifier, m)),
                      repr(random_state), _digest(y)),
                     lambda m=m, x=x: ModalityExpert(classifier_for(classifier, m), random_state)
                     .fit(x, y, present[m], n_classes))
            for m, x in views.items()}
