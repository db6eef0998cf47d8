"""The one-standard-error rule (Breiman et al., 1984) every choice in mmfuse uses:
:func:`one_se_rule`, on the paired per-fold comparisons :func:`beats_by_one_se` and
:func:`within_one_se`: the encoder choice, ``auto``'s fusion choice, its ensemble, the
weighted strategy's weights and stacking's fallback."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def paired_gap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the paired per-fold differences ``a - b`` (the standard
    error is 0 with one fold)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if d.shape != np.shape(b) or d.ndim != 1 or not len(d):
        raise ValueError(f"paired scores must be two equal-length lists; got {len(a)} and "
                         f"{len(b)}")
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
    return float(d.mean()), se


#: A gain is established only on at least this many paired folds: the standard error of
#: two differences rests on one degree of freedom (its 95% t-quantile is 12.7), so on two
#: folds (leave one group out over three groups, inner folds of two) nothing beats the
#: simpler choice (measured on icons-theme, leave one theme out: learned candidates chosen
#: on two inner folds lost to the best single modality on the held-out theme).
MIN_FOLDS = 3


def beats_by_one_se(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a``'s per-fold scores beat ``b``'s by more than one standard error of the
    paired differences (higher is better), on at least :data:`MIN_FOLDS` folds."""
    mean, se = paired_gap(a, b)
    return len(a) >= MIN_FOLDS and mean > se


def within_one_se(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when ``a`` is below ``b`` by at most one standard error of the paired differences
    (``b - a`` has mean <= its standard error)."""
    mean, se = paired_gap(b, a)
    return mean <= se + 1e-12


def one_se_rule(fold_scores: Mapping[str, Sequence[float]], order: Sequence[str], *,
                best: str | None = None, must_beat: bool = False) -> str:
    """The one-standard-error rule: the first candidate of ``order`` (simplest first) whose
    per-fold scores are within one standard error of ``best``'s (the paired differences;
    higher is better); ``best`` itself when none is.

    ``fold_scores`` maps candidate name -> per-fold scores. ``best`` defaults to the
    candidate of ``order`` with the highest mean score (exact ties: the first in
    ``order``). Within one SE is :func:`within_one_se`; with ``must_beat``, a simpler
    candidate is kept unless ``best`` establishes its gain (:func:`beats_by_one_se`: more
    than one SE, on at least :data:`MIN_FOLDS` folds), the form of the rule where a more
    complex candidate must pay for itself.
    """
    order = list(order)
    if best is None:
        if not order:
            raise ValueError("no candidate to choose from")
        best = max(order, key=lambda n: (float(np.mean(fold_scores[n])), -order.index(n)))
    for n in order:
        if (not beats_by_one_se(fold_scores[best], fold_scores[n]) if must_beat
                else within_one_se(fold_scores[n], fold_scores[best])):
            return n
    return best
