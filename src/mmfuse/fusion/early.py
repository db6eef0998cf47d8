"""Early fusion: standardise each view, concatenate, one classifier."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._errors import InputError
from ..views import Present, Views, is_sparse
from .experts import fit_experts, out_of_fold_probas
from .imputer import BlockImputer
from .linear import classifier_for, fit_logistic_gram, gram_applicable, make_classifier
from .scaling import ViewScaler, leading_variance
from ..splits import fallback_reason, inner_splits
from .weights import check_weight_spec, normalise_weights, relative_weights, simplex_grid
from .base import FusionStrategy, register_fusion


#: The named ``block_scaling`` modes (True means "variance").
BLOCK_SCALINGS = ("variance", "mfa")


def _hstack(blocks: list) -> Any:
    if any(is_sparse(b) for b in blocks):
        from scipy import sparse

        return sparse.hstack([b if is_sparse(b) else sparse.csr_matrix(b) for b in blocks],
                             format="csr")
    return np.hstack(blocks)


@register_fusion("early", description="standardise each view, concatenate, one classifier",
                 evaluation_weights="equal", takes_weights=True, private=True, simple_rank=1)
class EarlyFusion(FusionStrategy):
    """Feature-level fusion.

    Parameters
    ----------
    classifier : estimator, default=None
        None means LogisticRegression.
    weights : {"equal", "relative", "cv"} or dict, default="equal"
        Each standardised block is multiplied by sqrt(M·w_m) (equal weights change nothing).
        ``"cv"`` searches a coarse simplex grid (step 0.25) by inner CV of the whole model.
    block_scaling : {False, True, "variance", "mfa"}, default=False
        How each standardised block is weighted against the others before the weights
        above. False: not at all, a block's total variance is its width d_m, so a view's
        share of the design grows with its width (2,000 HOG or TF-IDF columns outweigh 13
        tabular ones).

        - ``True`` or ``"variance"``: every view gets the same total variance, whatever its
          width: the block is multiplied by sqrt(D / (M·d_m)), D being the total width of
          the M views, so each carries D/M (views of one width are unchanged).
        - ``"mfa"``: Multiple Factor Analysis weighting (Escofier & Pagès): each block is
          divided by its leading singular value, the square root of the largest eigenvalue
          λ_m of its covariance on the training rows that have it, so every view's first
          principal direction has the same variance. Under the L2 penalty a direction of
          variance s² costs about 1/s² of coefficient norm, so this prices each view's
          leading direction alike, without handing a weak low-dimensional view the weight
          of a wide one as ``"variance"`` does: a view's total variance becomes
          d_m/λ_m, its "effective number of directions".

        Both keep the design's total variance at D (one common factor rescales all
        blocks), so the classifier's ``C`` keeps its meaning. The factors are learned on
        the training rows only (``block_factors_``). Neither is the default: measured on
        the bundled datasets (benchmarks/RESULTS.md, "Feature space of early and weighted
        fusion"), ``"variance"`` gained under a point where a narrow view is the strongest
        (tuxpaint-tabular) and lost almost 2 points where the wide view is (sign-av: 104
        MFCC columns then weigh as much as 1,764 HOG ones). ``"mfa"`` did better on every
        dataset than ``"variance"`` and gained on four of five (about 3 points on
        tuxpaint-tabular, 1.6 on tuxpaint-grouped, no interval above 0), but still lost
        1.2 points on sign-av, more than the half point a new default may lose anywhere.
    cv : int, default=5
    random_state : int or None, default=None
    impute : bool, default=True
        Learned imputation: a row missing a modality gets that block predicted from the
        blocks it has (:class:`~mmfuse.fusion.imputer.BlockImputer`, fit on training rows);
        False leaves it at the training mean (0 after scaling).

    Rows missing a modality also get presence flags (when training rows miss some), so the
    classifier can learn that a block is absent.

    Sparse views (TF-IDF) stay sparse: their rows are scaled to L2 norm ``sqrt(d)`` (never
    centred; the block then carries the total variance of a standardised dense block of
    its width), and the concatenation is a sparse matrix.

    Attributes
    ----------
    block_factors_ : dict of str to float
        The factor each scaled block is multiplied by for ``block_scaling`` (1.0 each
        without it), learned at fit.
    modality_weights_ : dict of str to float
        The weights used.
    """

    def __init__(self, classifier: Any = None, weights: Any = "equal",
                 block_scaling: Any = False, cv: int = 5, random_state: Any = None,
                 impute: bool = True):
        self.classifier = classifier
        self.weights = weights
        self.block_scaling = block_scaling
        self.cv = cv
        self.random_state = random_state
        self.impute = impute

    def _design(self, views: Views, present: Present, weights: dict[str, float]) -> np.ndarray:
        return _hstack(self._blocks(views, present, weights))

    def _blocks(self, views: Views, present: Present, weights: dict[str, float]) -> list:
        """The design's column blocks: each scaled view, then the presence flags."""
        mods = sorted(views)
        scaled = {m: self.scalers_[m].transform(views[m], present[m]) for m in mods}
        if getattr(self, "imputer_", None) is not None:
            scaled = self.imputer_.transform(scaled, present)
        factors = getattr(self, "block_factors_", None)
        if factors is None:  # a model file saved before block_factors_ existed
            factors = self._block_factors(scaled, present)
        blocks = []
        for m in mods:
            factor = np.sqrt(len(mods) * weights[m]) * factors[m]
            blocks.append(scaled[m] * np.float32(factor))
        if self.presence_flags_:
            blocks.append(np.stack([present[m] for m in mods], axis=1).astype(np.float32))
        return blocks

    def _scaling(self) -> str | None:
        """The ``block_scaling`` mode: None, "variance" or "mfa"."""
        mode = self.block_scaling
        if mode is False:
            return None
        if mode is True:
            return "variance"
        if isinstance(mode, str) and mode in BLOCK_SCALINGS:
            return mode
        valid = ", ".join(["False", "True"] + [repr(v) for v in BLOCK_SCALINGS])
        raise InputError(f"block_scaling must be one of {valid}; got {mode!r}")

    def _block_factors(self, scaled: dict, present: Present) -> dict[str, float]:
        """Each scaled block's factor for ``block_scaling`` (from the training rows at fit;
        without "mfa" only the blocks' widths are read)."""
        mods = sorted(scaled)
        mode = self._scaling()
        width = {m: scaled[m].shape[1] for m in mods}
        total = sum(width.values())
        if mode is None or total == 0:
            return {m: 1.0 for m in mods}
        if mode == "variance":
            # total variance D/M per block (a sparse block's rows, at norm sqrt(d_m), go to
            # norm sqrt(D/M) alike)
            return {m: float(np.sqrt(total / (len(mods) * max(width[m], 1)))) for m in mods}
        # mfa: each block's leading direction to variance 1 (dividing by sqrt(λ_m)), then
        # one common factor c so the total variance Σ c²·d_m/λ_m stays D
        lam = {m: leading_variance(scaled[m], present[m]) for m in mods}
        common = np.sqrt(total / sum(width[m] / lam[m] for m in mods))
        return {m: float(common / np.sqrt(lam[m])) for m in mods}

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        mods = sorted(views)
        spec = check_weight_spec(self.weights, mods, ("equal", "relative", "cv"))
        mode = self._scaling()  # a bad value fails before any work
        self.scalers_ = {m: ViewScaler().fit(views[m], present[m]) for m in mods}
        impute = self.impute and len(mods) > 1
        # the scaled training blocks, where something learns from them (the imputer, the
        # "mfa" factors); the other factors need only the widths (auto's inner folds fit
        # early fusion without an imputer, and skip this pass over the data)
        scaled = ({m: self.scalers_[m].transform(views[m], present[m]) for m in mods}
                  if impute or mode == "mfa" else views)
        self.block_factors_ = self._block_factors(scaled, present)
        self.imputer_ = BlockImputer().fit(scaled, present) if impute else None
        del scaled
        self.presence_flags_ = len(mods) > 1 and not all(present[m].all() for m in mods)
        if spec == "equal":
            weights = {m: 1.0 / len(mods) for m in mods}
        elif isinstance(spec, dict):
            weights = normalise_weights(spec)
        elif spec == "relative":
            oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                     self.random_state,
                                     experts_cache=self._experts_cache)
            weights = relative_weights(oof, y)
        else:
            weights = self._search_weights(views, present, y, groups)
        self.modality_weights_ = weights
        if self._is_the_expert(views, present, spec):
            # one view, every row present, nothing scaled or weighted: the design and the
            # model are the view's per-modality expert's (same scaler, same classifier on
            # the same rows), so fits given the same ExpertsCache share it (the
            # evaluation's single-modality row and a late fusion's refit on those rows)
            [(m, expert)] = fit_experts(views, y, present, self.classifier, self.random_state,
                                        experts_cache=self._experts_cache).items()
            self.scalers_, self.model_ = {m: expert.scaler_}, expert.model_
            return
        blocks = self._blocks(views, present, weights)
        self.model_ = make_classifier(self.classifier, self.random_state)
        if len(blocks) > 1 and gram_applicable(self.model_, len(y),
                                               sum(b.shape[1] for b in blocks)):
            # a wide design of several views (TF-IDF next to HOG): the same model, fitted
            # through an exact n-column factor of its Gram matrix (fit_logistic_gram),
            # without building the sparse concatenation of dense blocks (measured on
            # tuxpaint: 2.9 s -> 2.0 s per fit). One view alone is fitted directly: a
            # sparse TF-IDF view costs less per iteration than the n-column factor, and a
            # dense one needs no concatenation (HOG alone on tuxpaint-grouped: 0.27 s
            # directly, 0.37 s through the factor)
            fit_logistic_gram(self.model_, blocks, y)
        else:
            design = _hstack(blocks)
            self.model_ = make_classifier(self.classifier, self.random_state, design)
            self.model_.fit(design, y)

    def _is_the_expert(self, views: Views, present: Present, spec: Any) -> bool:
        """Whether this fit is exactly its one view's per-modality expert
        (:class:`~mmfuse.fusion.experts.ModalityExpert`): one view, every training row
        present (no missing-row zeros, no presence flags), equal weights, a block factor of
        1 (``block_scaling`` False or "variance"), and the same classifier as the expert's."""
        [m] = views if len(views) == 1 else [None]
        return (m is not None and bool(np.all(present[m])) and spec == "equal"
                and self._scaling() in (None, "variance") and self.block_factors_[m] == 1.0
                and classifier_for(self.classifier, m) is classifier_for(self.classifier, None))

    def _search_weights(self, views, present, y, groups) -> dict[str, float]:
        mods = sorted(views)
        grid = simplex_grid(len(mods), 0.25) if len(mods) > 1 else np.ones((1, 1))
        splits = inner_splits(y, groups, self.cv, self.random_state)
        if not splits or len(grid) == 1:
            if len(grid) == 1:
                return dict(zip(mods, grid[0]))
            self.weights_fallback_ = fallback_reason(y, groups)
            return {m: 1 / len(mods) for m in mods}
        scores = []
        for w in grid:
            x = self._design(views, present, dict(zip(mods, w)))
            correct = 0
            for train, test in splits:
                model = make_classifier(self.classifier, self.random_state,
                                        x).fit(x[train], y[train])
                correct += int(np.sum(model.predict(x[test]) == y[test]))
            scores.append(correct)
        return {m: float(w) for m, w in zip(mods, grid[int(np.argmax(scores))])}

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        x = self._design(views, present, self.modality_weights_)
        proba = self.model_.predict_proba(x)
        out = np.zeros((x.shape[0], len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out
