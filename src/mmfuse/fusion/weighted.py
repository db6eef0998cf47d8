"""The seed's weighted sum F(x) = α·f1(x) + β·f2(x) + … over views in a common space."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA

from .._errors import InputError
from ..views import Present, Views, dense
from .choice import one_se_choice
from .experts import cross_fitted_experts, out_of_fold_probas, predict_cross_fitted
from .linear import make_classifier
from .scaling import ViewScaler
from ..splits import fallback_reason, inner_splits
from .weights import check_weight_spec, normalise_weights, relative_weights, simplex_grid
from .._params import Options
from .base import FusionStrategy, register_fusion
from .late import LOG_FLOOR

PROJECTIONS = ("features", "class-scores", "pca")


def _class_scores(p: np.ndarray) -> np.ndarray:
    """Centred log-probabilities (logits up to a shift); NaN rows (missing) become 0."""
    out = np.zeros_like(p)
    has = ~np.isnan(p).any(axis=1)
    logp = np.log(np.clip(p[has], LOG_FLOOR, 1.0))
    out[has] = logp - logp.mean(axis=1, keepdims=True)
    return out


def weighted_sum(projected: dict[str, np.ndarray], present: Present,
                 weights: dict[str, float], direct: bool = False) -> np.ndarray:
    """Σ w_m z_m, rescaled per row by (total weight / weight of the modalities present).

    Blocks of different widths are zero-padded to the widest (the seed's formula on raw
    feature vectors: a narrower view adds into the leading columns), unless ``direct``:
    then each weighted block keeps its own columns, ``[w_1 z_1, ..., w_M z_M]`` (a direct
    sum, whose inner products are Σ w_m² <z_m, z'_m>, without the cross terms that
    padding makes between unrelated features). Blocks of one width are always summed.
    """
    mods = sorted(projected)
    total = sum(weights[m] for m in mods)
    n = projected[mods[0]].shape[0]
    if _summed(projected, direct):
        starts = dict.fromkeys(mods, 0)
        width = max(projected[m].shape[1] for m in mods)
    else:
        edges = np.cumsum([0] + [projected[m].shape[1] for m in mods])
        starts = dict(zip(mods, edges[:-1]))
        width = int(edges[-1])
    acc = np.zeros((n, width), dtype=np.float64)
    w_present = np.zeros(n)
    for m in mods:
        cols = slice(starts[m], starts[m] + projected[m].shape[1])
        acc[present[m], cols] += weights[m] * projected[m][present[m]]
        w_present[present[m]] += weights[m]
    has = w_present > 0
    acc[has] *= (total / w_present[has])[:, None]
    return acc


def _summed(projected: dict[str, np.ndarray], direct: bool) -> bool:
    """Whether :func:`weighted_sum` adds the blocks into shared columns."""
    return not direct or len({z.shape[1] for z in projected.values()}) <= 1


class _PairGram:
    """Inner products of the blocks of :func:`weighted_sum`, pair by pair, so that the Gram
    matrix of Σ w_m z_m (rows rescaled as there) costs a few n x n sums per weight vector."""

    def __init__(self, projected: dict[str, np.ndarray], present: Present,
                 direct: bool = False):
        self.mods = sorted(projected)
        self.present = present
        z = {m: np.where(present[m][:, None], projected[m], 0.0) for m in self.mods}
        summed = _summed(projected, direct)  # else a direct sum: no cross terms
        self.pairs = {}
        for a_i, a in enumerate(self.mods):
            for b in self.mods[a_i:] if summed else [a]:
                d = min(z[a].shape[1], z[b].shape[1])  # zero padding: overlap only
                self.pairs[a, b] = z[a][:, :d] @ z[b][:, :d].T

    def kernel(self, weights: dict[str, float]) -> np.ndarray:
        total = sum(weights[m] for m in self.mods)
        w_present = sum(weights[m] * self.present[m] for m in self.mods)
        r = np.where(w_present > 0, total / np.where(w_present > 0, w_present, 1.0), 1.0)
        k = np.zeros_like(next(iter(self.pairs.values())))
        for (a, b), g in self.pairs.items():
            wab = weights[a] * weights[b]
            if wab:
                k += wab * g if a == b else wab * (g + g.T)
        return k * r[:, None] * r[None, :]


def weight_grid(n_modalities: int, step: float | None = None) -> tuple[np.ndarray, int]:
    """The simplex grid the ``cv`` weight search scores (``step`` as in
    :class:`WeightedSumFusion`), equal weights included, and the equal point's index."""
    if step is None:
        step = {1: 1.0, 2: 0.25, 3: 1 / 3}.get(n_modalities, 0.5)
    else:
        if not (isinstance(step, (int, float)) and 0 < step <= 1):
            raise InputError(f"step must be a number in (0, 1] or None; got {step!r}")
        # the grid grows as (1/step)^(M-1): coarsen it so a search stays ~20 points
        step = {1: 1.0, 2: step, 3: max(step, 0.2)}.get(n_modalities, max(step, 0.25))
    grid = simplex_grid(n_modalities, step) if n_modalities > 1 else np.ones((1, 1))
    equal = np.full(n_modalities, 1.0 / n_modalities)
    if not np.isclose(grid, equal).all(axis=1).any():
        grid = np.vstack([equal, grid])
    return grid, int(np.flatnonzero(np.isclose(grid, equal).all(axis=1))[0])


def grid_choice(scores: np.ndarray, i_equal: int) -> int:
    """The grid point chosen from per-inner-fold accuracies ``scores`` (points x folds):
    the best, unless it does not beat equal weights by more than one standard error of
    the paired per-fold differences (the one-SE rule)."""
    names = [str(i) for i in range(len(scores))]
    return int(one_se_choice(dict(zip(names, scores)), {names[i_equal]}))


def _kernel_factor(k: np.ndarray, train: np.ndarray, test: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Features G with G G^T = K on the training rows, and the test rows in the same basis:
    an L2-penalised linear model fitted on G predicts exactly as one fitted on F (its
    coefficients lie in the span of the training rows, where the penalty is unchanged)."""
    vals, vecs = np.linalg.eigh(k[np.ix_(train, train)])
    keep = vals > max(float(vals.max()), 0.0) * 1e-10
    vals, vecs = vals[keep], vecs[:, keep]
    root = np.sqrt(vals)
    return vecs * root, (k[np.ix_(test, train)] @ vecs) / root


@register_fusion("weighted", description="weighted sum of views projected to a common space",
                 takes_weights=True, meta_level=True, explanation="log-share", cost="medium")
class WeightedSumFusion(FusionStrategy):
    """F(x) = Σ_m w_m · P_m(x_m), then one classifier on F.

    With equal weights and the default projection this is exactly the seed baseline
    (``seed-baseline``): each view standardised, the vectors summed (zero-padded to the
    widest), a logistic regression on the sum. ``weights="cv"`` is the seed's weighting
    learned honestly: the weights are searched on the simplex by grouped inner CV, and
    equal weights are kept unless another point is clearly better (one-SE rule).

    Parameters
    ----------
    classifier : estimator, default=None
        Used both for the per-modality projections (``"class-scores"``) and on F.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        ``"cv"`` searches a simplex grid (step ``step``, equal weights always included) by
        inner-CV accuracy, and keeps equal weights unless the best grid point beats them
        by more than one standard error of the per-fold differences (the one-SE rule:
        under group shift a weight tuned on a few inner folds is mostly noise).
    projection : {"features", "class-scores", "pca"}, default="features"
        The common space. ``"features"``: the seed's — each view standardised (dense,
        centred, unit variance per column; missing rows at the mean) and zero-padded to
        the widest view (or a direct sum, ``direct_sum``). ``"class-scores"``: each view
        is mapped to the K class scores of its own classifier (out-of-fold on training
        rows, so the classifier on F never sees over-fitted scores; at prediction the
        inner-fold classifiers are averaged, so F is calibrated as in training, see
        :class:`~mmfuse.fusion.experts.CrossFitExpert`). ``"pca"``: each standardised
        view is reduced by whitened PCA to the same dimension ``dim``.
    dim : int, default=64
        PCA dimension (capped by the smallest view and the sample count).
    step : float or None, default=None
        Grid step of the weight search; None means 1/4 for two modalities, 1/3 for three
        and 1/2 for more (5, 10 and 10 points for 2, 3 and 4 modalities), scored on 3
        inner folds. Under the one-SE rule a finer grid mostly adds fits: a point must
        beat equal weights clearly to be chosen, and neighbouring points rarely do.
    cv : int, default=5
    random_state : int or None, default=None
    direct_sum : bool, default=False
        With ``projection="features"``, keep views of different widths in their own
        columns, ``F = [w_1 z_1, ..., w_M z_M]`` (a direct sum: the kernel is Σ w_m² K_m),
        instead of zero-padding them onto the widest view's leading columns, which adds
        unrelated features together (13 tabular columns onto the first 13 HOG ones) and
        gives the kernel cross terms between them. Views of one width are summed either
        way. Off by default (measured, see the Notes).

    Notes
    -----
    Why the default space is the seed's features, not class scores (measured, see
    benchmarks/RESULTS.md): on the class scores the classifier on F learns a K x K map
    between classes from out-of-fold scores of a few inner groups, and on unseen groups
    it lost 5-10 points to the seed baseline on tuxpaint and tuxpaint-grouped, while a
    plain softmax of those scores is late fusion (``late``). On the features, weights
    multiply whole views and one classifier is shared by all of them, as in the seed.

    Why the padded sum stays the default although a sum across unrelated spaces means
    nothing (measured: benchmarks/RESULTS.md, "Feature space of early and weighted
    fusion", and the tabular section): with equal weights the direct sum was at or above
    the padded sum on four of the five bundled datasets (up to 2 points), but with the
    default learned weights it gained on tuxpaint-grouped only (and lost half a point on
    tuxpaint), and on tuxpaint-tabular it raised the fit *without* the tabular view more
    than the fit with it. A view that carries no signal is harmless in a direct sum, so the
    one-SE rule keeps its equal weight and it keeps a small share of each prediction
    (the explain toy's pure-noise view then moves about a tenth of the log-odds), where
    padding, by corrupting the informative columns, makes the weight search drop it.
    """

    _parameter_constraints = {**FusionStrategy._parameter_constraints,
                              "projection": [Options(PROJECTIONS)]}

    def __init__(self, classifier: Any = None, weights: Any = "cv",
                 projection: str = "features", dim: int = 64, step: float | None = None,
                 cv: int = 5, random_state: Any = None, direct_sum: bool = False):
        self.classifier = classifier
        self.weights = weights
        self.projection = projection
        self.dim = dim
        self.step = step
        self.cv = cv
        self.random_state = random_state
        self.direct_sum = direct_sum

    def _direct(self) -> bool:
        # (a model saved before the parameter existed has none: the padded sum)
        direct = getattr(self, "direct_sum", False)
        if not isinstance(direct, (bool, np.bool_)):
            raise InputError(f"direct_sum must be True or False; got {direct!r}")
        return bool(direct)

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        self._direct()  # a bad direct_sum fails before any work
        self.projection_ = self.projection  # the equal-weight fallback may use another
        spec = check_weight_spec(self.weights, list(views), ("cv", "relative", "equal"))
        mods = sorted(views)
        oof = None
        if self.projection == "class-scores":
            oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                     self.random_state,
                                     experts_cache=self._experts_cache)
            self._fit_meta(oof, y, present, groups)
            self.experts_ = cross_fitted_experts(views, y, present, groups, self.classifier,
                                                 self.cv, self.random_state,
                                                 experts_cache=self._experts_cache)
            return
        elif self.projection == "features":
            from sklearn.preprocessing import StandardScaler

            self.scalers_ = {}
            for m in mods:
                rows = np.flatnonzero(present[m])
                self.scalers_[m] = StandardScaler().fit(dense(views[m][rows]))
            projected = {m: self._feature_project(m, views[m], present[m]) for m in mods}
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
                                         self.random_state,
                                         experts_cache=self._experts_cache)
            weights = relative_weights(oof, y)
        else:
            weights = self._search_weights(projected, present, y, groups)
        self.modality_weights_ = weights
        self.model_ = make_classifier(self.classifier, self.random_state)
        self.model_.fit(weighted_sum(projected, present, weights, self._direct()), y)

    def has_meta_level(self) -> bool:
        """Only on class scores is the weighting a meta level over expert probabilities."""
        return self.projection == "class-scores"

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
        grid, i_equal = weight_grid(len(mods), self.step)
        splits = inner_splits(y, groups, min(self.cv, 3), self.random_state)
        if not splits:
            if len(mods) > 1:
                self.weights_fallback_ = fallback_reason(y, groups)
            return {m: 1.0 / len(mods) for m in mods}
        scores = np.zeros((len(grid), len(splits)))
        widths = [z.shape[1] for z in projected.values()]
        width = max(widths) if _summed(projected, self._direct()) else sum(widths)
        if self.classifier is None and width > 2 * max(len(tr) for tr, _ in splits):
            # wide F (the seed's padded features with TF-IDF): the default L2 logistic
            # regression depends on F only through inner products, so each grid point is
            # fitted on an exact n-column factor of the Gram matrix F F^T, itself a
            # weighted sum of per-pair Gram matrices computed once. Only when F is at
            # least twice as wide as it is tall: the factor's columns are scaled by the
            # square roots of the eigenvalues, which conditions L-BFGS worse than
            # standardised features (measured on sign-av, 1,764 columns for ~1,100 rows:
            # 50 s per search against ~8 s fitting F directly)
            gram = _PairGram(projected, present, self._direct())
            for i, w in enumerate(grid):
                k = gram.kernel(dict(zip(mods, w)))
                for j, (train, test) in enumerate(splits):
                    g_tr, g_te = _kernel_factor(k, train, test)
                    model = make_classifier(None, self.random_state).fit(g_tr, y[train])
                    scores[i, j] = float(np.mean(model.predict(g_te) == y[test]))
        else:
            # one model per inner fold; a logistic regression is warm-started from the
            # previous grid point (neighbouring weights give neighbouring solutions; for
            # other estimators warm_start can mean something else, e.g. adding trees)
            from sklearn.linear_model import LogisticRegression

            models = [make_classifier(self.classifier, self.random_state) for _ in splits]
            for model in models:
                if isinstance(model, LogisticRegression):
                    model.set_params(warm_start=True)
            for i, w in enumerate(grid):
                f = weighted_sum(projected, present, dict(zip(mods, w)), self._direct())
                for j, (train, test) in enumerate(splits):
                    models[j].fit(f[train], y[train])
                    scores[i, j] = float(np.mean(models[j].predict(f[test]) == y[test]))
        pick = grid_choice(scores, i_equal)
        self.weight_search_ = {"grid": grid, "fold_accuracy": scores}
        return {m: float(w) for m, w in zip(mods, grid[pick])}

    def _feature_project(self, m: str, x: Any, present: np.ndarray) -> np.ndarray:
        out = np.zeros((x.shape[0], self.scalers_[m].n_features_in_))
        rows = np.flatnonzero(present)
        if len(rows):
            out[rows] = self.scalers_[m].transform(dense(x[rows]))
        return out

    def _pca_project(self, m: str, x: np.ndarray, present: np.ndarray) -> np.ndarray:
        z = self.scalers_[m].transform(x, present)
        out = self.pcas_[m].transform(z)
        out[~present] = 0.0
        return out

    def _project(self, views: Views, present: Present) -> dict[str, np.ndarray]:
        if self._projection() == "class-scores":
            return {m: _class_scores(self.experts_[m].predict_proba(views[m], present[m]))
                    / self.score_scale_[m] for m in views}
        if self._projection() == "features":
            return {m: self._feature_project(m, views[m], present[m]) for m in views}
        return {m: self._pca_project(m, dense(views[m]), present[m]) for m in views}

    def _projection(self) -> str:
        return getattr(self, "projection_", self.projection)

    def _fit_equal_weights(self, views: Views, y: np.ndarray, present: Present,
                           groups: Any) -> bool:
        """Equal weights; class scores (learned out-of-fold) give way to the standardised
        features: the seed's equal-weight formula."""
        learned, projection = self.weights, self.projection
        self.weights = "equal"
        if projection == "class-scores":
            self.projection = "features"
        try:
            self._fit(views, y, present, groups)
        finally:
            self.weights, self.projection = learned, projection
        return True

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        if self._projection() == "class-scores":
            return predict_cross_fitted(self.experts_, views, present, self._predict_meta)
        f = weighted_sum(self._project(views, present), present, self.modality_weights_,
                         self._direct())
        proba = self.model_.predict_proba(f)
        out = np.zeros((len(f), len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out
