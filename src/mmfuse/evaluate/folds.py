"""Outer cross-validation splits and the interval reported for a mean over folds.

Outer splits are stratified, and grouped whenever groups exist (``StratifiedGroupKFold``
shuffled with the seed, or leave one group out); the fusion strategies' inner splits follow
the same rules (:mod:`mmfuse.splits`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from .._errors import InputError


def make_splits(y: np.ndarray, groups: Any, cv: Any, random_state: Any
                ) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, Any]]:
    """Outer splits: stratified and grouped whenever groups exist, stratified otherwise.

    ``cv`` is an int (folds), ``"loso"`` (leave one group out), a dict such as
    ``{"kind": "repeated-stratified", "n_splits": 5, "n_repeats": 2}``, or a splitter.

    With groups (kinds ``"group"``, ``"stratified-group"`` or none): ``"loso"`` or at least as
    many folds as groups -> leave one group out (``cv.kind = "leave-one-group-out"``);
    otherwise ``StratifiedGroupKFold(shuffle=True)`` seeded with ``random_state``
    (``"stratified-group"``); fewer than 2 groups is an error. A class found in a single
    group is named in a warning: it cannot be learned when that group is tested. Without
    groups: ``StratifiedKFold`` (shuffled, seeded; ``"stratified"``), an error when the
    smallest class has fewer rows than folds.
    """
    dummy = np.zeros(len(y))
    if hasattr(cv, "split") and not isinstance(cv, str):
        splits = list(cv.split(dummy, y, groups=groups))
        return splits, {"kind": type(cv).__name__, "n_splits": len(splits)}
    spec = dict(cv) if isinstance(cv, Mapping) else {"n_splits": cv}
    n_splits = spec.get("n_splits", 5)
    kind = spec.get("kind")
    if kind == "loso":
        n_splits = "loso"
    if groups is not None:
        from ..splits import grouped_splits

        if kind not in (None, "group", "stratified-group", "loso", "leave-one-group-out"):
            raise InputError(f"groups were given, so the split must be grouped; got kind {kind!r}"
                             f" (valid: stratified-group, loso)")
        groups = np.asarray(groups)
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            raise InputError(f"grouped cross-validation needs at least 2 groups; got {n_groups}")
        if n_splits != "loso" and (not isinstance(n_splits, (int, np.integer))
                                   or isinstance(n_splits, bool) or n_splits < 2):
            raise InputError(f"cv must be an integer >= 2 or 'loso'; got {n_splits!r}")
        k = n_groups if n_splits == "loso" else int(n_splits)
        lonely = [int(c) if isinstance(c, (np.integer, int)) else c for c in np.unique(y)
                  if len(np.unique(groups[y == c])) < 2]
        if lonely:
            import warnings

            warnings.warn(f"classes {lonely} occur in a single group each: no training fold "
                          f"holds them when their group is tested", UserWarning, stacklevel=2)
        splits, split_kind = grouped_splits(y, groups, k, random_state if random_state is not
                                            None else 0)
        return splits, {"kind": split_kind, "n_splits": len(splits)}
    if n_splits == "loso":
        raise InputError("cv='loso' needs a group column (e.g. --group speaker)")
    counts = np.unique(y, return_counts=True)[1]
    if counts.min() < int(n_splits):
        raise InputError(
            f"the smallest class has {counts.min()} samples, fewer than cv={n_splits} folds; "
            f"use fewer folds"
        )
    seed = 0 if random_state is None else random_state
    if kind == "repeated-stratified":
        n_repeats = int(spec.get("n_repeats", 2))
        splitter = RepeatedStratifiedKFold(n_splits=int(n_splits), n_repeats=n_repeats,
                                           random_state=seed)
        splits = list(splitter.split(dummy, y))
        return splits, {"kind": "repeated-stratified", "n_splits": int(n_splits),
                        "n_repeats": n_repeats}
    if kind not in (None, "stratified"):
        raise InputError(f"unknown cv kind {kind!r}; valid: group, stratified, repeated-stratified")
    splitter = StratifiedKFold(n_splits=int(n_splits), shuffle=True, random_state=seed)
    return list(splitter.split(dummy, y)), {"kind": "stratified", "n_splits": int(n_splits)}


def mean_ci95(scores: Sequence[float], upper: float | None = 1.0) -> tuple[float, list[float]]:
    """Mean over folds and a t-interval for it (degenerate for a single fold), cut to
    [0, ``upper``] (``upper=None``: a score without a ceiling, e.g. log-loss)."""
    a = np.asarray(scores, dtype=float)
    mean = float(a.mean())
    if len(a) < 2:
        return mean, [mean, mean]
    half = float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))
    return mean, [max(0.0, mean - half), mean + half if upper is None else min(upper, mean + half)]
