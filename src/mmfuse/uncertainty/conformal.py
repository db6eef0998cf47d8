"""Conformal prediction sets: a threshold on a non-conformity score, learned on out-of-fold
scores of the training rows, so that a set holds the true label with probability at least
``coverage`` (split conformal; pooled over grouped inner folds it is cross-conformal).

Scores of label ``y`` for a row with probabilities ``p`` (classes ranked by ``p``, highest
first):

- ``lac``: ``1 - p_y`` (smallest sets on average; a set may be empty);
- ``aps``: the mass of the classes ranked above ``y`` plus ``u * p_y``, with ``u`` in (0, 1)
  a fixed function of the row's probabilities (a hash of them rounded to 3 decimals: the
  float noise of another batch size, ~1e-8, does not move it), so that the sets are
  adaptive (larger where the model is unsure), exact on average, and the same on every
  call and in the service;
- ``raps``: ``aps`` plus ``0.01 * max(0, rank - 1)``: a penalty on long tails of unlikely
  labels.

The threshold is the ``ceil((n + 1) * coverage)``-th smallest of the n calibration scores
(infinite when that exceeds n: every label is in the set). Mondrian (class-conditional)
sets use one threshold per class, learned on the rows of that class, so that coverage holds
for each class. Thresholds are kept per missingness pattern (see
:mod:`mmfuse.uncertainty.fit`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._errors import InputError

SCORES = ("aps", "raps", "lac")
RAPS_PENALTY = 0.01
RAPS_K = 1


def check_coverage(coverage: float) -> float:
    if isinstance(coverage, bool) or not isinstance(coverage, (int, float, np.floating)) \
            or not 0.0 < float(coverage) < 1.0:
        raise InputError(f"coverage must be a number between 0 and 1 (e.g. 0.9) or None; got "
                         f"{coverage!r}")
    return float(coverage)


def check_score(score: str) -> str:
    if score not in SCORES:
        raise InputError(f"conformal_score must be one of {list(SCORES)}; got {score!r}")
    return score


def row_uniforms(proba: np.ndarray) -> np.ndarray:
    """One number in (0, 1) per row, a fixed hash of its probabilities rounded to 3
    decimals (APS's tie-break: independent of the label, the same on every call)."""
    q = np.round(np.asarray(proba, dtype=np.float64) * 1e3).astype(np.uint64)
    h = np.full(q.shape[0], 0x9E3779B97F4A7C15, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(q.shape[1]):  # splitmix64-style mixing, column by column
            h = (h ^ q[:, k]) * np.uint64(0xBF58476D1CE4E5B9)
            h = (h ^ (h >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
            h = h ^ (h >> np.uint64(29))
    return ((h >> np.uint64(11)).astype(np.float64) + 0.5) / float(2 ** 53)


def score_matrix(proba: np.ndarray, score: str) -> np.ndarray:
    """Scores (n, K) of every label of every row (lower: more conforming)."""
    proba = np.asarray(proba, dtype=np.float64)
    if score == "lac":
        return 1.0 - proba
    order = np.argsort(-proba, axis=1, kind="stable")
    ranked = np.take_along_axis(proba, order, axis=1)
    above = np.cumsum(ranked, axis=1) - ranked  # mass ranked strictly above
    s_ranked = above + row_uniforms(proba)[:, None] * ranked
    if score == "raps":
        s_ranked = s_ranked + RAPS_PENALTY * np.maximum(
            0, np.arange(1, proba.shape[1] + 1) - RAPS_K)[None, :]
    out = np.empty_like(s_ranked)
    np.put_along_axis(out, order, s_ranked, axis=1)
    return out


def quantile(scores: np.ndarray, coverage: float) -> float:
    """The conformal threshold: the ``ceil((n + 1) * coverage)``-th smallest score."""
    n = len(scores)
    k = int(np.ceil((n + 1) * coverage - 1e-9))
    if n == 0 or k > n:
        return float("inf")
    return float(np.partition(np.asarray(scores, dtype=np.float64), k - 1)[k - 1])


def thresholds(proba: np.ndarray, y: np.ndarray, coverage: float, score: str,
               mondrian: bool, folds: np.ndarray | None = None) -> np.ndarray:
    """One threshold (marginal) or one per class (Mondrian) from calibration rows.

    ``folds``: each row's inner fold; then the largest of the thresholds each fold gives
    on its own (*worst fold*): conservative, for groups that differ more than pooling
    them shows (the pooled threshold assumes the held-out groups exchangeable)."""
    if folds is not None:
        folds = np.asarray(folds)
        return np.max([thresholds(proba[folds == f], y[folds == f], coverage, score, mondrian)
                       for f in np.unique(folds)], axis=0)
    s = score_matrix(proba, score)[np.arange(len(y)), y]
    if not mondrian:
        return np.array([quantile(s, coverage)])
    return np.array([quantile(s[y == k], coverage) for k in range(proba.shape[1])])


@dataclass
class ConformalSets:
    """Fitted conformal thresholds: ``thresholds[pattern]`` holds one threshold (marginal)
    or one per class (Mondrian); ``n_calibration[pattern]`` the rows it was learned on."""

    coverage: float
    score: str
    mondrian: bool = False
    thresholds: dict = field(default_factory=dict)
    n_calibration: dict = field(default_factory=dict)

    def sets(self, proba: np.ndarray, patterns: np.ndarray) -> np.ndarray:
        """Boolean sets (n, K): label k is in row i's set when its score is within the
        threshold of the row's pattern (an unknown pattern: the largest threshold)."""
        s = score_matrix(proba, self.score)
        fallback = np.max(np.stack([np.broadcast_to(t, (s.shape[1],))
                                    for t in self.thresholds.values()]), axis=0)
        limit = np.empty_like(s)
        for pattern in np.unique(patterns):
            rows = patterns == pattern
            limit[rows] = np.broadcast_to(self.thresholds.get(str(pattern), fallback),
                                          (s.shape[1],))
        return s <= limit + 1e-12
