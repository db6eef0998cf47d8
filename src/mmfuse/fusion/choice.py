"""``auto``'s choice rule: the one-standard-error rule (Breiman et al., 1984) over
per-fold inner scores, simple candidates first."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._stats import one_se_rule, within_one_se

SINGLE_PREFIX = "single:"


def simple_labels() -> list[str]:
    """Candidates that combine the modalities without learning how: with the single
    modalities, the "simple" side of the one-standard-error rule. The strategies declare it
    at registration (``register_fusion(simple_rank=...)``), in this order of preference when
    the inner folds cannot tell them apart (see :func:`choose`): fewest coefficients first —
    the seed's one model on the sum of the standardised views has max_m d_m per class, early
    fusion's on their concatenation sum_m d_m — and one model before a product of
    per-modality models. A strategy that takes weights is simple with equal weights
    (``"late[equal]"``)."""
    from .base import fusions_with, list_fusions

    ranked = sorted((f["simple_rank"], f["name"]) for f in list_fusions()
                    if f.get("simple_rank") is not None)
    weighted = set(fusions_with(takes_weights=True))
    return [f"{n}[equal]" if n in weighted else n for _, n in ranked]


def one_se_choice(fold_scores: Mapping[str, np.ndarray], simple: Any) -> str:
    """The best candidate by mean per-fold score, unless it is not one of the ``simple``
    ones and does not beat the best simple one by more than one standard error of their
    paired per-fold differences (the one-standard-error rule of Breiman et al., 1984):
    then the best simple one.

    ``fold_scores`` maps candidate name -> per-fold scores (higher is better), in order of
    preference among exact ties (the first wins).
    """
    names = list(fold_scores)
    means = {n: float(np.mean(fold_scores[n])) for n in names}
    best = max(names, key=lambda n: (means[n], -names.index(n)))
    plain = [n for n in names if n in set(simple)]
    if best in plain or not plain:
        return best
    ref = max(plain, key=lambda n: (means[n], -names.index(n)))
    # the simple one unless the best beats it by more than one SE
    return one_se_rule(fold_scores, [ref, best], best=best, must_beat=True)


def tied_with(fold_scores: Mapping[str, np.ndarray], best: str, simple: Any) -> list[str]:
    """The simple candidates whose inner score is within one standard error (of the paired
    per-fold differences) of ``best``'s, ``best`` included, in name order."""
    out = []
    for n in sorted(set(simple) & set(fold_scores)):
        if n == best or within_one_se(fold_scores[n], fold_scores[best]):
            out.append(n)
    return out


def simple_order(names: Any) -> list[str]:
    """The simple candidates among ``names``: the equal-weight fusions in
    :func:`simple_labels`' order of preference, then the single modalities (by name)."""
    names = list(names)
    return ([n for n in simple_labels() if n in names]
            + sorted(n for n in names if n.startswith(SINGLE_PREFIX)))


def choose(fold_scores: Mapping[str, Any]) -> str:
    """``auto``'s choice from per-fold inner accuracies (candidate name -> scores, in order
    of preference among exact ties).

    The one-standard-error rule, on both sides:

    - a *learned* candidate (learned weights, stacking, a head, an ensemble) is chosen only
      when it beats the best simple candidate by more than one standard error of their
      paired per-fold differences (:func:`~mmfuse.fusion.choice.one_se_choice`);
    - otherwise, when the best simple candidate is an equal-weight fusion, the choice is
      the *first* equal-weight fusion in :func:`simple_labels`' order whose paired deficit to it
      is within one standard error and whose mean is not below the best single modality
      (Breiman's rule: the simplest model within one SE of the best). The inner folds
      train on fewer rows and groups than the refit, and which equal-weight fusion ranks
      first flips with training size (measured, benchmarks/RESULTS.md): a difference the
      inner folds cannot resolve is no reason to leave the seed's formula. A single
      modality is chosen only when it is the best simple candidate outright, so the
      choice is never below the best single modality on the inner folds.
    """
    scores = {n: np.asarray(v, float) for n, v in fold_scores.items()}
    simple = simple_order(scores)
    pick = one_se_choice(scores, set(simple))
    labels = simple_labels()
    if pick not in labels:
        return pick
    singles = [scores[n].mean() for n in simple if n.startswith(SINGLE_PREFIX)]
    floor = max(singles) if singles else -np.inf
    fusions = [n for n in simple if n in labels]  # (simple_order puts them first)
    return one_se_rule(scores, [n for n in fusions if scores[n].mean() >= floor], best=pick)
