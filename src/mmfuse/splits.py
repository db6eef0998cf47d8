"""Inner and outer cross-validation splits: stratified, grouped whenever groups exist. The
bottom layer of model selection: fusion strategies, the encoder choice and evaluation use
them alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from ._errors import InputError


class TooFewForInnerFolds(InputError):
    """The training rows cannot be split into inner folds that each hold every class (a
    class with one row, or fewer than 2 groups): nothing can be learned out-of-fold.
    :class:`~mmfuse.fusion.base.FusionStrategy` catches it and fits its equal-weight form
    (``weights_fallback_``)."""


def fallback_reason(y: np.ndarray, groups: Any = None) -> str:
    """What ``weights_fallback_`` says when learned weights fell back to equal weights."""
    counts = np.bincount(np.asarray(y))
    where = (f"{len(np.unique(groups))} groups, " if groups is not None else "")
    return (f"equal weights: too few training rows per class for inner folds "
            f"({len(y)} rows, {where}the rarest class has {int(counts[counts > 0].min())})")


def grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, random_state: Any
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Stratified grouped splits: ``(splits, kind)``, no group ever on both sides.

    The rules (the same for outer and inner splits):

    - ``n_splits >= number of groups`` -> leave one group out (one fold per group, the
      most a grouped split can make); kind ``"leave-one-group-out"``.
    - otherwise scikit-learn's ``StratifiedGroupKFold(shuffle=True)`` seeded with
      ``random_state``: groups are dealt to folds so that each fold's class mix is as
      close to the whole as the groups allow; kind ``"stratified-group"``.
    - a fold left without test rows (possible when a few groups hold most rows) is
      dropped, so fewer than ``n_splits`` folds may come back.

    A class found in a single group cannot be in a training fold when that group is
    tested; the split still holds (such rows are simply never predicted right), and the
    caller decides whether to warn. ``random_state=None`` means 0: grouped splits were
    deterministic before they were shuffled, and stay reproducible by default.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    dummy = np.zeros(len(y))
    n_groups = len(np.unique(groups))
    if n_splits >= n_groups:
        splitter: Any = LeaveOneGroupOut()
        kind = "leave-one-group-out"
    else:
        splitter = StratifiedGroupKFold(n_splits=int(n_splits), shuffle=True,
                                        random_state=seed_from(0 if random_state is None
                                                           else random_state))
        kind = "stratified-group"
    import warnings

    with warnings.catch_warnings():
        # "The least populated class in y has only N members": expected with groups
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = [(tr, te) for tr, te in splitter.split(dummy, y, groups=groups)
                  if len(te) and len(tr)]
    return splits, kind


def inner_splits(y: np.ndarray, groups: Any, n_splits: int, random_state: Any,
                 rows: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV splits over ``rows`` (indices into y), made like the outer ones.

    With groups: stratified grouped folds (:func:`grouped_splits`: shuffled
    ``StratifiedGroupKFold`` seeded with ``random_state``, leave one group out when there
    are no more groups than folds). Without: ``StratifiedKFold`` (shuffled, seeded) with
    at most as many folds as the smallest class has rows. Returned indices are positions in
    ``rows`` order; an empty list means too little data (fewer than 2 groups, or a class
    with a single row). Never an ungrouped split when groups exist (that would leak: see
    DESIGN.md, "Evaluation protocol").
    """
    rows = np.arange(len(y)) if rows is None else rows
    ys = y[rows]
    gs = None if groups is None else np.asarray(groups)[rows]
    k = inner_fold_count(ys, gs, n_splits)
    if k < 2:
        return []
    if gs is not None:
        return grouped_splits(ys, gs, n_splits, random_state)[0]
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed_from(random_state))
    return list(cv.split(np.zeros(len(ys)), ys))


def inner_fold_count(y: np.ndarray, groups: Any, n_splits: int) -> int:
    """At most how many inner folds :func:`inner_splits` makes of these rows (fewer than 2:
    none), known without drawing the splits (nothing random is consumed): with groups,
    ``min(n_splits, number of groups)``; without, ``min(n_splits, rows of the smallest
    class)``. ``y``: integer labels 0..k-1 or any labels."""
    if groups is not None:
        return min(int(n_splits), len(np.unique(np.asarray(groups))))
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return min(int(n_splits), int(counts.min())) if len(counts) else 0


def seed_from(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    return int(np.random.RandomState(random_state).randint(2**31 - 1))
