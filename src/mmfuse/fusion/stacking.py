"""Stacking: a meta-classifier on out-of-fold per-modality probabilities plus presence flags."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from ..views import Present, Views
from .choice import SINGLE_PREFIX, one_se_choice
from .._stats import one_se_rule
from .experts import cross_fitted_experts, fit_experts, out_of_fold_probas, predict_cross_fitted
from .imputer import BlockImputer
from .linear import make_classifier
from ..splits import inner_splits
from .weights import normalise_weights
from .._params import Boolean
from .base import FusionStrategy, register_fusion
from .late import LOG_FLOOR


def _meta_model(C: float) -> Any:
    """Standardised log-probabilities -> logistic regression: the log-probabilities reach
    log(1e-9) ~ -21, and unscaled they make L-BFGS crawl (measured: seconds per fit on a
    few hundred rows) and the penalty mean something different per column."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=C))


def fallback_modalities(fallback: str | None, modalities: Any) -> list[str]:
    """The modalities whose experts, fitted on every training row, a stacking fallen back
    to ``fallback`` (``meta_fallback_``) predicts with: every one for the equal-weight mean,
    that one for a single modality, none without a fallback."""
    if not fallback:
        return []
    return list(modalities) if fallback == "equal" else [fallback.removeprefix(SINGLE_PREFIX)]


@register_fusion("stacking", description="meta-classifier on out-of-fold per-modality probabilities",
                 evaluation_weights=None, meta_level=True, cost="medium")
class StackingFusion(FusionStrategy):
    """Stacked generalisation over modalities (the scikit-learn StackingClassifier rule,
    with grouped inner splits and missing modalities handled).

    Parameters
    ----------
    classifier : estimator, default=None
        Per-modality classifier (cloned); None means LogisticRegression.
    meta_classifier : estimator, default=None
        Fitted on out-of-fold log-probabilities and presence flags; None means a
        LogisticRegression whose penalty ``C`` is chosen among ``meta_Cs`` by the same
        inner splits (grouped like the outer ones), preferring the strongest penalty within
        one standard error of the best (a meta-model with K·M inputs per class over-fits a
        handful of training groups easily).
    meta_Cs : tuple of float, default=(0.01, 0.1, 1.0)
        Candidate inverse penalties of the default meta-model, strongest first.
    weights : ignored, default="cv"
        Stacking learns its own combination; kept so every strategy shares one signature.
    cv : int, default=5
    random_state : int or None, default=None
    impute : bool, default=True
        Learned imputation: a missing modality's log-probabilities are predicted from the
        other modalities' (:class:`~mmfuse.fusion.imputer.BlockImputer`, fit on the
        out-of-fold training probabilities); False uses the class prior. The presence flags
        are meta-features either way.
    fallback : bool, default=True
        The one-standard-error rule inside stacking: the default meta-model is kept only
        when, on the inner splits that choose its penalty, it beats the best *simple*
        combination of the same out-of-fold probabilities — the equal-weight mean of
        log-probabilities (late fusion with equal weights) or one modality alone — by more
        than one standard error of the paired per-fold differences; otherwise stacking
        predicts with that simple combination (``meta_fallback_`` names it). Between the
        simple ones, parsimony: the equal-weight mean replaces the best single modality
        only when it beats it by more than one standard error (an extra modality must pay
        for itself, as an extra encoder must in the encoder choice: on unseen groups a
        modality can be much weaker than on the inner folds). A meta-model
        with K·M inputs per class fits the training groups' quirks, and on unseen groups it
        fell below the best single modality (see benchmarks/RESULTS.md); a learned
        combination must show it pays, as in ``auto``. Only for the default meta-model.

    Attributes
    ----------
    experts_, meta_ : per-modality experts (the inner-fold experts averaged, so the
        meta-model sees inputs calibrated like its out-of-fold training inputs; after a
        fallback, the experts the simple combination uses are fitted on every training
        row, as late fusion's equal form and a single modality fit them)
        and the meta-classifier
    meta_C_ : float or None, the penalty chosen for the default meta-model
    meta_fallback_ : str or None
        ``"equal"`` or ``"single:<modality>"`` when the one-SE fallback replaced the
        meta-model (see ``fallback``), else None.
    meta_fold_scores_ : dict of str -> list of float
        Per-inner-fold accuracy of the meta-model and of each simple combination, on the
        splits that decided the fallback (empty when there were none).
    imputer_ : BlockImputer or None
    modality_weights_ : dict, share of the meta-classifier's absolute coefficients per modality
    """

    _parameter_constraints = {**FusionStrategy._parameter_constraints,
                              "fallback": [Boolean()]}

    def __init__(self, classifier: Any = None, meta_classifier: Any = None, weights: Any = "cv",
                 cv: int = 5, random_state: Any = None, impute: bool = True,
                 meta_Cs: tuple[float, ...] = (0.01, 0.1, 1.0), fallback: bool = True):
        self.classifier = classifier
        self.fallback = fallback
        self.meta_classifier = meta_classifier
        self.meta_Cs = meta_Cs
        self.weights = weights
        self.cv = cv
        self.random_state = random_state
        self.impute = impute

    def _meta_features(self, probas: dict[str, np.ndarray], fit_imputer: bool = False
                       ) -> np.ndarray:
        logps, flags = {}, {}
        for m in sorted(probas):
            p = probas[m]
            has = ~np.isnan(p).any(axis=1)
            logp = np.tile(np.log(self.prior_), (len(p), 1))
            logp[has] = np.log(np.clip(p[has], LOG_FLOOR, 1.0))
            logps[m], flags[m] = logp, has
        if fit_imputer:
            self.imputer_ = (BlockImputer().fit(logps, flags)
                             if self.impute and len(probas) > 1 else None)
        if getattr(self, "imputer_", None) is not None:
            # a missing modality's log-probabilities, predicted from the others' (learned
            # out-of-fold), rather than the class prior
            logps = self.imputer_.transform(logps, flags)
        cols = []
        for m in sorted(probas):
            cols += [logps[m], flags[m][:, None].astype(float)]
        return np.hstack(cols)

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        k = len(self.classes_)
        self.prior_ = np.clip(np.bincount(y, minlength=k) / len(y), LOG_FLOOR, 1.0)
        oof = out_of_fold_probas(views, y, present, groups, self.classifier, self.cv,
                                 self.random_state,
                                 experts_cache=self._experts_cache)
        self._fit_meta(oof, y, present, groups)
        fallback = getattr(self, "meta_fallback_", None)
        # the equal-weight fallback refits every modality's expert below: the inner-fold
        # experts would all be replaced
        self.experts_ = {} if fallback == "equal" else cross_fitted_experts(
            views, y, present, groups, self.classifier, self.cv, self.random_state,
            experts_cache=self._experts_cache)
        if fallback is not None:
            # With no meta-model, stacking predicts as the simple combination it fell back
            # to does on its own: late fusion with equal weights, or one modality's model,
            # from experts fitted on every training row. The inner-fold experts, averaged,
            # exist to give a meta-model inputs like its out-of-fold training inputs; with
            # no meta-model they only cost accuracy (each saw a fraction of the training
            # groups: half of them with two).
            used = fallback_modalities(fallback, views)
            self.experts_.update(fit_experts({m: views[m] for m in used}, y,
                                             {m: present[m] for m in used},
                                             self.classifier, self.random_state,
                                             experts_cache=self._experts_cache))

    def _fit_equal_weights(self, views: Views, y: np.ndarray, present: Present,
                           groups: Any) -> bool:
        """No out-of-fold probabilities to stack: the experts, fitted on every training
        row, pooled with equal weights (late fusion's equal form); ``meta_`` is None."""
        k = len(self.classes_)
        self.prior_ = np.clip(np.bincount(y, minlength=k) / len(y), LOG_FLOOR, 1.0)
        self.meta_, self.meta_C_, self.imputer_ = None, None, None
        self.meta_fallback_ = "equal"  # predicts with late fusion's equal weights
        self.meta_fold_scores_: dict[str, list[float]] = {}
        self.modality_weights_ = {m: 1.0 / len(views) for m in sorted(views)}
        self.experts_ = fit_experts(views, y, present, self.classifier, self.random_state,
                                    experts_cache=self._experts_cache)
        return True

    def _fit_meta(self, oof: dict[str, np.ndarray], y: np.ndarray, present: Present,
                  groups: Any) -> None:
        """The meta-model on per-modality out-of-fold probabilities (the meta level)."""
        k = len(self.classes_)
        self.prior_ = np.clip(np.bincount(y, minlength=k) / len(y), LOG_FLOOR, 1.0)
        meta_x = self._meta_features(oof, fit_imputer=True)
        self.meta_C_ = None
        self.meta_fallback_ = None
        self.meta_fold_scores_: dict[str, list[float]] = {}
        if self.meta_classifier is None:
            # 3 inner folds at most, as for weighted's grid: this choice is nested in every
            # inner fold of auto, and a penalty path needs fewer folds than a model choice
            splits = inner_splits(y, groups, min(self.cv, 3), self.random_state)
            self.meta_C_ = self._choose_C(meta_x, y, splits)
            self.meta_ = _meta_model(self.meta_C_)
            if self.fallback and self.meta_fold_scores_:
                self.meta_fallback_ = self._simple_fallback(oof, y, splits)
        else:
            self.meta_ = make_classifier(self.meta_classifier, self.random_state)
        self.meta_.fit(meta_x, y)
        final = self.meta_[-1] if hasattr(self.meta_, "steps") else self.meta_
        coef = getattr(final, "coef_", None)
        if coef is not None and hasattr(self.meta_, "steps"):
            coef = coef / self.meta_[0].scale_  # back to the unscaled meta-features
        if self.meta_fallback_ is not None:
            used = fallback_modalities(self.meta_fallback_, oof)
            self.modality_weights_ = normalise_weights({m: float(m in used) for m in oof})
        elif coef is not None:
            # A modality's weight is how much its block moves the meta-model's scores
            # (spread of its contribution over the training rows), not the raw coefficient
            # size: a near-constant input can carry big coefficients and change nothing.
            width = k + 1
            spread = {}
            for i, m in enumerate(sorted(oof)):
                cols = slice(i * width, (i + 1) * width)
                spread[m] = float((meta_x[:, cols] @ coef[:, cols].T).std(axis=0).mean())
            self.modality_weights_ = normalise_weights(spread)
        else:
            self.modality_weights_ = None

    def _choose_C(self, meta_x: np.ndarray, y: np.ndarray, splits: list) -> float:
        Cs = [float(c) for c in self.meta_Cs]
        if not Cs or any(not np.isfinite(c) or c <= 0 for c in Cs):
            from .._errors import InputError

            raise InputError(f"meta_Cs must be positive numbers; got {self.meta_Cs!r}")
        if not splits:
            return Cs[0]
        Cs = sorted(Cs)  # strongest penalty first: preferred among ties
        acc = np.zeros((len(Cs), len(splits)))
        for j, (train, test) in enumerate(splits):
            # the penalty path on one fold: each C warm-starts from the previous solution
            model = _meta_model(Cs[0])
            model[-1].set_params(warm_start=True)
            for i, c in enumerate(Cs):
                model[-1].set_params(C=c)
                model.fit(meta_x[train], y[train])
                acc[i, j] = float(np.mean(model.predict(meta_x[test]) == y[test]))
        scores = {str(c): acc[i] for i, c in enumerate(Cs)}
        self.meta_C_scores_ = {float(k): float(v.mean()) for k, v in scores.items()}
        best = max(scores, key=lambda k: scores[k].mean())
        # the strongest penalty within one standard error of the best
        pick = best
        for k in scores:
            if one_se_choice({best: scores[best], k: scores[k]}, {k}) == k:
                pick = k
                break
        self.meta_fold_scores_ = {"meta": scores[pick].tolist()}
        return float(pick)

    def _simple_fallback(self, oof: dict[str, np.ndarray], y: np.ndarray, splits: list
                         ) -> str | None:
        """The simple combination stacking falls back to, or None when the meta-model beats
        the best of them by more than one standard error (on the penalty's inner splits)."""
        for name in ["equal"] + [SINGLE_PREFIX + m for m in sorted(oof)]:
            proba = self._simple_proba(name, oof)
            self.meta_fold_scores_[name] = [
                float(np.mean(proba[test].argmax(axis=1) == y[test]))
                for _, test in splits]
        # simple candidates in order of preference: the equal-weight mean first
        scores = self.meta_fold_scores_
        pick = one_se_choice(scores, set(scores) - {"meta"})
        if pick != "equal":
            return None if pick == "meta" else pick
        # parsimony: the equal-weight mean uses every modality, so it replaces the best one
        # alone only when it beats it by more than one standard error
        singles = [n for n in scores if n.startswith(SINGLE_PREFIX)]
        best = max(singles, key=lambda n: (float(np.mean(scores[n])), -singles.index(n)))
        return one_se_rule(scores, [best, "equal"], best="equal", must_beat=True)

    def _simple_proba(self, name: str, probas: dict[str, np.ndarray]) -> np.ndarray:
        """Probabilities of a simple combination: the equal-weight mean of log-probabilities
        over the present modalities (``"equal"``: late fusion's equal weights) or one
        modality's (a row that lacks it
        gets the equal-weight mean of the others; a row with none gets the prior)."""
        from scipy.special import softmax

        from .late import pooled_log_scores

        mods = sorted(probas)
        scores = pooled_log_scores(probas, dict.fromkeys(mods, 1.0 / len(mods)))
        if name != "equal":
            m = name.removeprefix(SINGLE_PREFIX)
            has = ~np.isnan(probas[m]).any(axis=1)
            scores[has] = np.log(np.clip(probas[m][has], LOG_FLOOR, 1.0))
        out = softmax(scores, axis=1)
        none = np.all([np.isnan(probas[m]).any(axis=1) for m in mods], axis=0)
        out[none] = self.prior_ / self.prior_.sum()
        return out

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        return predict_cross_fitted(self.experts_, views, present, self._predict_meta)

    def _predict_meta(self, probas: dict[str, np.ndarray], present: Present) -> np.ndarray:
        if getattr(self, "meta_fallback_", None) is not None:
            return self._simple_proba(self.meta_fallback_, probas)
        proba = self.meta_.predict_proba(self._meta_features(probas))
        out = np.zeros((len(proba), len(self.classes_)))
        out[:, np.asarray(self.meta_.classes_, dtype=int)] = proba
        return out
