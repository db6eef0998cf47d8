"""Late fusion: one classifier per modality, a weighted mean of their log-probabilities."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from ..views import Present, Views
from .base import FusionStrategy, register_fusion
from .experts import cross_fitted_experts, fit_experts, out_of_fold_probas, predict_cross_fitted
from .weights import check_weight_spec, normalise_weights, relative_weights

LOG_FLOOR = 1e-9


def pooled_log_scores(probas: dict[str, np.ndarray], weights: dict[str, float],
                      combine: str = "log") -> np.ndarray:
    """Fuse per-modality probabilities; NaN rows (missing modality) are left out.

    ``combine="log"``: sum of ``w_m * log p_m`` rescaled by (total weight / weight present),
    so a sample missing a modality keeps the same overall sharpness; ``"linear"``: the
    weighted arithmetic mean of probabilities over the present modalities.
    """
    mods = sorted(probas)
    n, k = next(iter(probas.values())).shape
    total = sum(weights[m] for m in mods)
    acc = np.zeros((n, k))
    w_present = np.zeros(n)
    for m in mods:
        p = probas[m]
        rows = ~np.isnan(p).any(axis=1)
        if combine == "log":
            acc[rows] += weights[m] * np.log(np.clip(p[rows], LOG_FLOOR, 1.0))
        else:
            acc[rows] += weights[m] * p[rows]
        w_present[rows] += weights[m]
    has = w_present > 0
    if combine == "log":
        acc[has] *= (total / w_present[has])[:, None]
        return acc
    acc[has] /= w_present[has][:, None]
    return np.log(np.clip(acc, LOG_FLOOR, None))


@register_fusion("late", description="one classifier per modality; weighted mean of log-probabilities",
                 takes_weights=True, meta_level=True, explanation="log-share", private=True,
                 simple_rank=2)
class LateFusion(FusionStrategy):
    """Late fusion with weights learned out-of-fold.

    Parameters
    ----------
    classifier : estimator, default=None
        Per-modality classifier (cloned); None means LogisticRegression.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        ``"cv"`` fits non-negative weights that minimise the out-of-fold log-loss of the
        fused prediction (their scale acts as a temperature) and keeps the best single
        modality instead when that is more accurate out-of-fold; ``"relative"``: out-of-fold
        accuracy above chance; ``"equal"``: 1/M; a dict gives them directly.
    cv : int, default=5
        Inner folds for the out-of-fold predictions (grouped when groups are given).
    combine : {"log", "linear"}, default="log"
        Pool log-probabilities (product of experts) or probabilities.
    random_state : int or None, default=None

    Attributes
    ----------
    experts_ : dict of per-modality fitted experts (with learned weights, the inner-fold
        experts averaged: :class:`~mmfuse.fusion.experts.CrossFitExpert`)
    modality_weights_ : dict, weights normalised to sum 1
    weight_scale_ : float, the sum of the raw weights (an inverse temperature)
    """

    def __init__(self, classifier: Any = None, weights: Any = "cv", cv: int = 5,
                 combine: str = "log", random_state: Any = None):
        self.classifier = classifier
        self.weights = weights
        self.cv = cv
        self.combine = combine
        self.random_state = random_state

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        spec = check_weight_spec(self.weights, list(views), ("cv", "relative", "equal"))
        oof = None
        if spec in ("cv", "relative"):
            oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                     self.random_state,
                                     experts_cache=self._experts_cache)
        self._fit_meta(oof if oof is not None else {m: None for m in views}, y, present, groups)
        if spec in ("cv", "relative"):
            # weights learned on out-of-fold probabilities: predict with the same inner-fold
            # experts, averaged, so the probabilities keep the calibration the weights (and
            # their scale, a temperature) were fitted to
            self.experts_ = cross_fitted_experts(views, y, present, groups, self.classifier,
                                                 self.cv, self.random_state,
                                                 experts_cache=self._experts_cache)
        else:
            self.experts_ = fit_experts(views, y, present, self.classifier, self.random_state,
                                        experts_cache=self._experts_cache)

    def _fit_meta(self, oof: dict[str, Any], y: np.ndarray, present: Present,
                  groups: Any) -> None:
        """Learn the weights from per-modality out-of-fold probabilities (the meta level)."""
        spec = check_weight_spec(self.weights, sorted(oof), ("cv", "relative", "equal"))
        self.prior_ = np.bincount(y, minlength=len(self.classes_)) / len(y)
        if spec == "equal":
            raw = {m: 1.0 / len(oof) for m in oof}
        elif isinstance(spec, dict):
            raw = normalise_weights(spec)
        else:
            raw = relative_weights(oof, y) if spec == "relative" else self._cv_weights(oof, y)
        self.raw_weights_ = raw
        self.weight_scale_ = float(sum(raw.values()))
        self.modality_weights_ = normalise_weights(raw)

    def _predict_meta(self, probas: dict[str, np.ndarray], present: Present) -> np.ndarray:
        scores = pooled_log_scores(probas, self.raw_weights_, self.combine)
        none = ~np.any(np.stack([present[m] for m in probas]), axis=0)
        out = softmax(scores, axis=1)
        out[none] = self.prior_
        return out

    def _cv_weights(self, oof: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
        mods = sorted(oof)
        n = len(y)

        def nll(w: np.ndarray) -> float:
            scores = pooled_log_scores(oof, dict(zip(mods, w)), self.combine)
            return float(-log_softmax(scores, axis=1)[np.arange(n), y].mean())

        start = np.ones(len(mods)) / len(mods)
        res = minimize(nll, start, method="L-BFGS-B", bounds=[(0.0, 10.0)] * len(mods))
        best = dict(zip(mods, np.maximum(res.x, 0.0)))
        if sum(best.values()) <= 0:
            best = dict(zip(mods, start))

        # Guard: the fused model must beat each single modality out-of-fold, else use the best one.
        def oof_accuracy(w: dict[str, float]) -> float:
            return float(np.mean(pooled_log_scores(oof, w, self.combine).argmax(1) == y))

        candidates = [best] + [{m: float(m == s) for m in mods} for s in mods]
        accs = [oof_accuracy(w) for w in candidates]
        self.oof_accuracy_ = dict(zip(["fused"] + mods, accs))
        return candidates[int(np.argmax(accs))]

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        return predict_cross_fitted(self.experts_, views, present, self._predict_meta)
