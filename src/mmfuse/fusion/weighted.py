"""The seed's weighted sum F(x) = α·f1(x) + β·f2(x) + … over views in a common space."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from .._errors import InputError
from ..views import Present, Views, dense
from ._common import (ViewScaler, check_weight_spec, cross_fitted_experts, inner_splits,
                      make_classifier, normalise_weights, one_se_choice, out_of_fold_probas,
                      predict_cross_fitted, relative_weights, simplex_grid)
from .base import FusionStrategy, register_fusion
from .late import LOG_FLOOR

PROJECTIONS = ("class-scores", "pca")


def _class_scores(p: np.ndarray) -> np.ndarray:
    """Centred log-probabilities (logits up to a shift); NaN rows (missing) become 0."""
    out = np.zeros_like(p)
    has = ~np.isnan(p).any(axis=1)
    logp = np.log(np.clip(p[has], LOG_FLOOR, 1.0))
    out[has] = logp - logp.mean(axis=1, keepdims=True)
    return out


def weighted_sum(projected: dict[str, np.ndarray], present: Present,
                 weights: dict[str, float]) -> np.ndarray:
    """Σ w_m z_m, rescaled per row by (total weight / weight of the modalities present)."""
    mods = sorted(projected)
    total = sum(weights[m] for m in mods)
    acc = np.zeros_like(projected[mods[0]], dtype=np.float64)
    w_present = np.zeros(acc.shape[0])
    for m in mods:
        acc[present[m]] += weights[m] * projected[m][present[m]]
        w_present[present[m]] += weights[m]
    has = w_present > 0
    acc[has] *= (total / w_present[has])[:, None]
    return acc


@register_fusion("weighted", description="weighted sum of views projected to a common space")
class WeightedSumFusion(FusionStrategy):
    """F(x) = Σ_m w_m · P_m(x_m), then one classifier on F.

    Parameters
    ----------
    classifier : estimator, default=None
        Used both for the per-modality projections (``"class-scores"``) and on F.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        ``"cv"`` searches a simplex grid (step ``step``, equal weights always included) by
        inner-CV accuracy, and keeps equal weights unless the best grid point beats them
        by more than one standard error of the per-fold differences (the one-SE rule:
        under group shift a weight tuned on a few inner folds is mostly noise).
    projection : {"class-scores", "pca"}, default="class-scores"
        The common space. ``"class-scores"``: each view is mapped to the K class scores of
        its own classifier (out-of-fold on training rows, so the classifier on F never sees
        over-fitted scores; at prediction the inner-fold classifiers are averaged, so F is
        calibrated as in training, see :class:`~mmfuse.fusion._common.CrossFitExpert`); ``"pca"``: each standardised view is reduced by whitened PCA to
        the same dimension ``dim``.
    dim : int, default=64
        PCA dimension (capped by the smallest view and the sample count).
    step : float, default=0.1
        Grid step of the weight search (at least 0.2 for three modalities and 0.25 for
        more, so the search stays around 20 points; scored on 3 inner folds).
    cv : int, default=5
    random_state : int or None, default=None
    """

    def __init__(self, classifier: Any = None, weights: Any = "cv",
                 projection: str = "class-scores", dim: int = 64, step: float = 0.1,
                 cv: int = 5, random_state: Any = None):
        self.classifier = classifier
        self.weights = weights
        self.projection = projection
        self.dim = dim
        self.step = step
        self.cv = cv
        self.random_state = random_state

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        if self.projection not in PROJECTIONS:
            raise InputError(f"projection must be one of {PROJECTIONS}; got {self.projection!r}")
        spec = check_weight_spec(self.weights, list(views), ("cv", "relative", "equal"))
        mods = sorted(views)
        oof = None
        if self.projection == "class-scores":
            oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                     self.random_state)
            self._fit_meta(oof, y, present, groups)
            self.experts_ = cross_fitted_experts(views, y, present, groups, self.classifier,
                                                 self.cv, self.random_state)
            return
        else:
            views = {m: dense(v) for m, v in views.items()}
            n_present = min(int(present[m].sum()) for m in mods)
            k = max(1, min(self.dim, min(v.shape[1] for v in views.values()), n_present - 1))
            self.scalers_, self.pcas_ = {}, {}
            projected = {}
            for m in mods:
                self.scalers_[m] = ViewScaler().fit(views[m], present[m])
                z = self.scalers_[m].transform(views[m], present[m])
                self.pcas_[m] = PCA(n_components=k, whiten=True,
                                    random_state=self.random_state).fit(z[present[m]])
                projected[m] = self._pca_project(m, views[m], present[m])

        if spec == "equal":
            weights = {m: 1.0 / len(mods) for m in mods}
        elif isinstance(spec, dict):
            weights = normalise_weights(spec)
        elif spec == "relative":
            if oof is None:
                oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                         self.random_state)
            weights = relative_weights(oof, y)
        else:
            weights = self._search_weights(projected, present, y, groups)
        self.modality_weights_ = weights
        self.model_ = make_classifier(self.classifier, self.random_state)
        self.model_.fit(weighted_sum(projected, present, weights), y)

    def _fit_meta(self, oof: dict[str, np.ndarray], y: np.ndarray, present: Present,
                  groups: Any) -> None:
        """Class-score projection: weights and the classifier on F, from per-modality
        out-of-fold probabilities (the meta level)."""
        spec = check_weight_spec(self.weights, sorted(oof), ("cv", "relative", "equal"))
        mods = sorted(oof)
        projected = {m: _class_scores(oof[m]) for m in mods}
        # One scale per modality so that a weight means the same for every view: a
        # modality whose scores barely move would otherwise get any weight for free.
        self.score_scale_ = {m: float(projected[m][present[m]].std()) or 1.0 for m in mods}
        projected = {m: projected[m] / self.score_scale_[m] for m in mods}
        if spec == "equal":
            weights = {m: 1.0 / len(mods) for m in mods}
        elif isinstance(spec, dict):
            weights = normalise_weights(spec)
        elif spec == "relative":
            weights = relative_weights(oof, y)
        else:
            weights = self._search_weights(projected, present, y, groups)
        self.modality_weights_ = weights
        self.model_ = make_classifier(self.classifier, self.random_state)
        self.model_.fit(weighted_sum(projected, present, weights), y)

    def _predict_meta(self, probas: dict[str, np.ndarray], present: Present) -> np.ndarray:
        projected = {m: _class_scores(probas[m]) / self.score_scale_[m] for m in probas}
        f = weighted_sum(projected, present, self.modality_weights_)
        proba = self.model_.predict_proba(f)
        out = np.zeros((len(f), len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out

    def _search_weights(self, projected, present, y, groups) -> dict[str, float]:
        mods = sorted(projected)
        # the grid grows as (1/step)^(M-1): coarsen it so a search stays ~20 points
        step = {1: 1.0, 2: self.step, 3: max(self.step, 0.2)}.get(len(mods), max(self.step, 0.25))
        grid = simplex_grid(len(mods), step) if len(mods) > 1 else np.ones((1, 1))
        equal = np.full(len(mods), 1.0 / len(mods))
        if not np.isclose(grid, equal).all(axis=1).any():
            grid = np.vstack([equal, grid])
        splits = inner_splits(y, groups, min(self.cv, 3), self.random_state)
        if not splits:
            return {m: 1.0 / len(mods) for m in mods}
        scores = []
        for w in grid:
            weights = dict(zip(mods, w))
            f = weighted_sum(projected, present, weights)
            fold_acc = []
            for train, test in splits:
                model = make_classifier(self.classifier, self.random_state).fit(f[train], y[train])
                fold_acc.append(float(np.mean(model.predict(f[test]) == y[test])))
            scores.append(fold_acc)
        scores = np.asarray(scores)
        names = [str(i) for i in range(len(grid))]
        i_equal = int(np.flatnonzero(np.isclose(grid, equal).all(axis=1))[0])
        pick = int(one_se_choice(dict(zip(names, scores)), {names[i_equal]}))
        self.weight_search_ = {"grid": grid, "fold_accuracy": scores}
        return {m: float(w) for m, w in zip(mods, grid[pick])}

    def _pca_project(self, m: str, x: np.ndarray, present: np.ndarray) -> np.ndarray:
        z = self.scalers_[m].transform(x, present)
        out = self.pcas_[m].transform(z)
        out[~present] = 0.0
        return out

    def _project(self, views: Views, present: Present) -> dict[str, np.ndarray]:
        if self.projection == "class-scores":
            return {m: _class_scores(self.experts_[m].predict_proba(views[m], present[m]))
                    / self.score_scale_[m] for m in views}
        return {m: self._pca_project(m, dense(views[m]), present[m]) for m in views}

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        if self.projection == "class-scores":
            return predict_cross_fitted(self.experts_, views, present, self._predict_meta)
        f = weighted_sum(self._project(views, present), present, self.modality_weights_)
        proba = self.model_.predict_proba(f)
        out = np.zeros((len(f), len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out
