"""The seed's code as written: the reference row of every results table."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from ..views import Present, Views, dense
from .base import FusionStrategy, register_fusion
from .linear import fit_logistic_gram, gram_applicable


@register_fusion("seed-baseline", description="the seed: StandardScaler, fixed equal-weight sum, LogisticRegression",
                 reference=True, simple_rank=0)
class SeedBaseline(FusionStrategy):
    """StandardScaler per view, F = 0.5·f1 + 0.5·f2 (1/M each for M views), LogisticRegression.

    The seed sums raw feature vectors, which needs equal dimensions; views of different
    widths are zero-padded to the widest one (the smallest change that makes the seed's
    formula defined). This reference row stays the seed's code as written, cross terms
    between unrelated padded features included (``weighted`` with ``direct_sum=True``
    keeps views of different widths in their own columns instead). Missing rows are
    imputed at the mean (0 after scaling). Parameters are accepted for a common signature
    and ignored: the baseline is fixed on purpose. A sum
    wider than twice its rows (padded to a TF-IDF view) is fitted through an exact
    n-column factor of its Gram matrix: the same model, to the solver's tolerance
    (:func:`~mmfuse.fusion.linear.fit_logistic_gram`).
    """

    def __init__(self, classifier: Any = None, weights: Any = None, cv: int = 5,
                 random_state: Any = None):
        self.classifier = classifier
        self.weights = weights
        self.cv = cv
        self.random_state = random_state

    def _sum(self, views: Views, present: Present) -> np.ndarray:
        views = {m: dense(v) for m, v in views.items()}  # the seed's dense arithmetic
        width = max(v.shape[1] for v in views.values())
        # in the views' own precision, as the seed's 0.5·f1 + 0.5·f2 of float32 features
        # is: a float64 sum would double the memory every solver pass reads
        dtype = np.result_type(*(v.dtype for v in views.values()), np.float32)
        total = np.zeros((next(iter(views.values())).shape[0], width), dtype=dtype)
        for m in sorted(views):
            if present[m].all():  # the same values as below, without the zeros and copies
                z = self.scalers_[m].transform(views[m])
            else:
                z = np.zeros_like(views[m])
                if present[m].any():
                    z[present[m]] = self.scalers_[m].transform(views[m][present[m]])
            total[:, : z.shape[1]] += z / len(views)
        return total

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        # each view made dense once, for its scaler and the sum (a TF-IDF view is the
        # widest: expanding it twice cost a tenth of the fit)
        views = {m: dense(views[m]) for m in sorted(views)}
        self.scalers_ = {m: StandardScaler().fit(_present_rows(views[m], present[m]))
                         for m in sorted(views)}
        self.modality_weights_ = {m: 1.0 / len(views) for m in sorted(views)}
        f = self._sum(views, present)
        self.model_ = LogisticRegression(max_iter=1000)
        if gram_applicable(self.model_, f.shape[0], f.shape[1]):
            # F wider than twice its rows (padded to a TF-IDF view): the same model, fitted
            # through an exact n-column factor of F F^T (see fit_logistic_gram)
            fit_logistic_gram(self.model_, [f], y)
        else:
            self.model_.fit(f, y)

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        proba = self.model_.predict_proba(self._sum(views, present))
        out = np.zeros((len(proba), len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out


def _present_rows(x: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The rows of dense ``x`` that are present, C-ordered as a row selection makes them
    (so the scaler sums them in the same order): ``x`` itself when every row is."""
    if present.all() and x.flags.c_contiguous:
        return x
    return x[np.flatnonzero(present)]
