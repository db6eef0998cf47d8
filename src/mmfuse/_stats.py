"""The paired one-standard-error comparison every choice in mmfuse uses (Breiman et al.,
1984): the encoder choice (:mod:`mmfuse.encoders.selection`), ``auto``'s fusion choice
(:mod:`mmfuse.fusion.choice`) and stacking's fallback (:mod:`mmfuse.fusion.stacking`)."""

from __future__ import annotations

from collections.abc import Sequence

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
