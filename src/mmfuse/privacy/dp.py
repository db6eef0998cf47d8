"""Differentially private fusion: linear models trained with (epsilon, delta)-DP (diffprivlib).

What is private, and how
------------------------
Everything the model learns from the training rows is learned under one budget
``(epsilon, delta)``, accounted by diffprivlib's ``BudgetAccountant``:

* **Features** come from data-independent encoders only (pretrained networks, hog, mfcc,
  ``hashing``...): an encoder that learns from the data (``tfidf`` vocabulary or SVD,
  ``tfidf-hashed``'s idf) is an error. Pre-extracted (passthrough) views are trusted to be
  data-independent too: that is the caller's promise.
* **Scaling** is data-independent: each view's rows are L2-normalised (a missing modality
  is a zero row), and early fusion concatenates ``sqrt(w_m)``-scaled blocks, so every
  design row has norm <= 1. No mean or variance is read from the data.
* **Classifiers** (``dp_model``):

  - ``"centroid"`` (default): :class:`DPCentroidClassifier`, noisy per-class sums of the
    unit rows (diffprivlib's analytic Gaussian mechanism, L2 sensitivity 1, so the noise
    does not grow with the dimension; Laplace, pure epsilon-DP, when ``delta=0``), scored
    by the dot product with each class direction.
  - ``"logistic"``: :class:`DPLogisticRegression`, diffprivlib's objective-perturbation
    logistic regression (Chaudhuri, Monteleoni & Sarwate, 2011), one-vs-rest, pure
    epsilon-DP. Its noise grows with the dimension: on 1,376-d embeddings and ~1,400 rows
    it is near chance at epsilon = 8 (``benchmarks/bench_privacy.py``).

  Late fusion trains one model per modality on the same people, so each gets
  ``(epsilon / M, delta / M)`` (sequential composition); early fusion trains one model
  with all of it.
* **Weights** are fixed (``"equal"`` or a dict given by the user). Learning weights,
  stacking, ``auto`` or a neural head would spend budget on data-driven choices: DP mode
  refuses them rather than under-report the budget. The class prior used for rows with no
  modality is uniform (the training counts would leak).

The noise is drawn from the operating system's entropy unless ``noise_seed`` is set: a
known seed lets anyone recompute and subtract the noise, so seeds are for tests and
benchmarks only. The set of class labels is treated as public, as diffprivlib does.

Needs ``pip install "mmfuse[privacy]"`` (diffprivlib). This module imports it only when a
model is fitted.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_array, check_is_fitted

from .._errors import InputError, require
from ..views import Present, Views
from ..fusion.base import FusionStrategy



def private_fusions() -> list[str]:
    """The fusion strategies with a DP version: those registered with ``private=True``."""
    from ..fusion.base import fusions_with

    return fusions_with(private=True)


def import_diffprivlib() -> Any:
    """diffprivlib, imported (with the ``pip install`` line when it is missing).

    diffprivlib 0.6.6 imports two constants that scikit-learn >= 1.8 no longer exports from
    ``sklearn.tree._tree`` (used only by its decision trees, not by anything here); they are
    put back with their old values before the import.
    """
    try:
        import sklearn.tree._tree as tree

        for name, value in (("DOUBLE", np.float64), ("DTYPE", np.float32)):
            if not hasattr(tree, name):
                setattr(tree, name, value)
    except ImportError:  # pragma: no cover
        pass
    return require("diffprivlib", "privacy")


def check_epsilon(epsilon: Any) -> float:
    """A valid privacy budget: a positive float (``inf``: no noise, for comparison only)."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float, np.integer, np.floating)):
        raise InputError(f"epsilon must be a positive number; got {epsilon!r}")
    epsilon = float(epsilon)
    if not epsilon > 0 or math.isnan(epsilon):
        raise InputError(f"epsilon must be > 0; got {epsilon!r}")
    return epsilon


def check_private_encoders(encoders: Mapping[str, Any]) -> None:
    """Refuse encoders that learn from the training data (their state would not be DP)."""
    from ..encoders.featurizer import is_passthrough

    for col, enc in sorted(encoders.items()):
        if is_passthrough(enc):  # pre-extracted features: the caller's responsibility
            continue
        if not enc.stateless:
            hint = {"text": "'hashing' (or a pretrained text encoder such as minilm)",
                    "image": "hog or a pretrained image encoder",
                    "audio": "mfcc or a pretrained audio encoder"}.get(enc.modality, "")
            raise InputError(
                f"differential privacy needs encoders that learn nothing from the data, but "
                f"column {col!r} uses {enc.name!r}, which is fit on the training rows (e.g. a "
                f"vocabulary, idf weights or an SVD); use {hint} for this column"
            )


def unit_rows(x: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
    """Rows scaled to unit L2 norm (data-independent); missing and all-zero rows become 0."""
    x = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
    if present is not None:
        out[~np.asarray(present, dtype=bool)] = 0.0
    return out


class DPLogisticRegression(ClassifierMixin, BaseEstimator):
    """Epsilon-DP logistic regression (one-vs-rest, objective perturbation via diffprivlib).

    diffprivlib's own ``LogisticRegression`` class does not construct with scikit-learn
    >= 1.8; this wrapper calls its private solver (``_logistic_regression_path``, the same
    mechanism) and spends the budget on a ``BudgetAccountant``.

    Parameters
    ----------
    epsilon : float, default=1.0
        Budget of the whole model, split equally over the one-vs-rest problems. ``inf``
        fits the same model without noise (for comparison; not private).
    data_norm : float, default=1.0
        Rows are clipped to this L2 norm before fitting: a bound fixed in advance, never
        read from the data.
    C : float, default=1.0
        Inverse regularisation strength.
    max_iter : int, default=100
    noise_seed : int or None, default=None
        Seed of the noise. None (the default) draws it from OS entropy; a known seed voids
        the guarantee (tests and benchmarks only).

    Attributes
    ----------
    classes_, coef_ (n_models, n_features), intercept_ (n_models,), epsilon_spent_
    """

    _model_file_safe = True

    def __init__(self, epsilon: float = 1.0, data_norm: float = 1.0, C: float = 1.0,
                 max_iter: int = 100, noise_seed: int | None = None):
        self.epsilon = epsilon
        self.data_norm = data_norm
        self.C = C
        self.max_iter = max_iter
        self.noise_seed = noise_seed

    def fit(self, X: Any, y: Any) -> "DPLogisticRegression":
        epsilon = check_epsilon(self.epsilon)
        if not self.data_norm > 0:
            raise ValueError(f"data_norm must be > 0; got {self.data_norm!r}")
        X = check_array(X, dtype=np.float64)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise InputError(f"need at least 2 classes; got {self.classes_.tolist()}")
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.maximum(norms / self.data_norm, 1.0)  # clip to data_norm
        positives = self.classes_[1:] if len(self.classes_) == 2 else self.classes_
        coefs = []
        if math.isinf(epsilon):
            from sklearn.linear_model import LogisticRegression

            for cls in positives:
                model = LogisticRegression(C=self.C, max_iter=max(self.max_iter, 1000))
                model.fit(X, (y == cls).astype(int))
                coefs.append(np.append(model.coef_[0], model.intercept_[0]))
            self.epsilon_spent_ = math.inf
        else:
            import_diffprivlib()
            from diffprivlib.models.logistic_regression import _logistic_regression_path

            rng = np.random.RandomState(self.noise_seed) if self.noise_seed is not None else None
            per_model = epsilon / len(positives)
            with warnings.catch_warnings():
                # scipy's iprint deprecation inside diffprivlib; convergence is approximate
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", UserWarning)
                from sklearn.exceptions import ConvergenceWarning

                warnings.simplefilter("ignore", ConvergenceWarning)
                for cls in positives:
                    coef, _, _ = _logistic_regression_path(
                        X, y, epsilon=per_model, data_norm=float(self.data_norm),
                        pos_class=cls, Cs=[float(self.C)], fit_intercept=True,
                        max_iter=int(self.max_iter), tol=1e-4, random_state=rng,
                        check_input=False)
                    coefs.append(coef[0])
            self.epsilon_spent_ = epsilon
        coefs = np.asarray(coefs)
        self.coef_ = coefs[:, :-1]
        self.intercept_ = coefs[:, -1]
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        X = check_array(X, dtype=np.float64)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X = X / np.maximum(norms / self.data_norm, 1.0)
        return X @ self.coef_.T + self.intercept_

    def predict_proba(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        p = 1.0 / (1.0 + np.exp(-np.clip(scores, -500, 500)))
        if len(self.classes_) == 2:
            return np.hstack([1 - p, p])
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.full_like(p, 1 / p.shape[1]), where=total > 0)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class DPCentroidClassifier(ClassifierMixin, BaseEstimator):
    """Nearest class direction under DP: noisy per-class sums of unit-norm rows.

    Each training row (clipped to L2 norm 1) is added to its class's sum; adding or
    removing one row changes the stacked sums by at most 1 in L2 norm, so the Gaussian
    mechanism (diffprivlib's ``GaussianAnalytic``, sensitivity 1) makes them
    (epsilon, delta)-DP whatever the dimension; with ``delta=0`` the Laplace mechanism
    (L1 sensitivity ``sqrt(d)``) gives pure epsilon-DP instead, at a cost that grows with
    the dimension. A row is scored by its dot product with each class's noisy sum
    direction (a linear model), and ``softmax(temperature * score)`` gives probabilities.
    No class count is used (it would cost budget): the classes are equally likely a priori.

    Parameters
    ----------
    epsilon : float, default=1.0
        ``inf``: no noise (for comparison; not private).
    delta : float, default=1e-5
        0 for pure epsilon-DP (Laplace).
    temperature : float, default=20.0
        Fixed in advance (learning it would spend budget).
    noise_seed : int or None, default=None
        None (the default): secret noise; a known seed voids the guarantee.

    Attributes
    ----------
    classes_, coef_ (n_classes, n_features): unit class directions, epsilon_spent_,
    delta_spent_
    """

    _model_file_safe = True

    def __init__(self, epsilon: float = 1.0, delta: float = 1e-5, temperature: float = 20.0,
                 noise_seed: int | None = None):
        self.epsilon = epsilon
        self.delta = delta
        self.temperature = temperature
        self.noise_seed = noise_seed

    def fit(self, X: Any, y: Any) -> "DPCentroidClassifier":
        epsilon = check_epsilon(self.epsilon)
        delta = check_delta(self.delta)
        X = _clip_rows(check_array(X, dtype=np.float64), 1.0)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise InputError(f"need at least 2 classes; got {self.classes_.tolist()}")
        sums = np.stack([X[y == c].sum(axis=0) for c in self.classes_])
        if math.isinf(epsilon):
            noisy = sums
            self.epsilon_spent_, self.delta_spent_ = math.inf, 0.0
        else:
            import_diffprivlib()
            from diffprivlib.mechanisms import GaussianAnalytic, Laplace

            rng = np.random.RandomState(self.noise_seed) if self.noise_seed is not None else None
            if delta > 0:
                mech = GaussianAnalytic(epsilon=epsilon, delta=delta, sensitivity=1.0,
                                        random_state=rng)
            else:
                mech = Laplace(epsilon=epsilon, sensitivity=math.sqrt(X.shape[1]),
                               random_state=rng)
            noisy = np.array([mech.randomise(float(v)) for v in sums.ravel()]).reshape(sums.shape)
            self.epsilon_spent_, self.delta_spent_ = epsilon, delta
        norms = np.linalg.norm(noisy, axis=1, keepdims=True)
        self.coef_ = np.divide(noisy, norms, out=np.zeros_like(noisy), where=norms > 0)
        self.n_features_in_ = X.shape[1]
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "coef_")
        return _clip_rows(check_array(X, dtype=np.float64), 1.0) @ self.coef_.T

    def predict_proba(self, X: Any) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self.temperature * self.decision_function(X), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


def _clip_rows(X: np.ndarray, bound: float) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms / bound, 1.0)


def check_delta(delta: Any) -> float:
    """A valid delta: a number in [0, 1)."""
    if isinstance(delta, bool) or not isinstance(delta, (int, float, np.integer, np.floating)):
        raise InputError(f"delta must be a number in [0, 1); got {delta!r}")
    delta = float(delta)
    if not 0 <= delta < 1:
        raise InputError(f"delta must be in [0, 1); got {delta!r}")
    return delta


DP_MODELS = ("centroid", "logistic")


def fixed_weights(weights: Any, modalities: list[str]) -> dict[str, float]:
    """The normalised modality weights a DP strategy may use: fixed in advance ('equal' or a
    dict), never learned from the data (that would spend privacy budget)."""
    from ..fusion.weights import check_weight_spec, normalise_weights

    if isinstance(weights, str) and weights != "equal":
        raise InputError(
            f"under differential privacy the modality weights must be fixed in advance "
            f"('equal' or a dict); got {weights!r}: learning them from the data would spend "
            f"privacy budget"
        )
    spec = check_weight_spec(weights, modalities, ("equal",))
    if spec == "equal":
        return {m: 1.0 / len(modalities) for m in modalities}
    return normalise_weights(spec)


class _PrivateFusion(FusionStrategy):
    """Shared parameters and budget bookkeeping of the DP strategies."""

    def __init__(self, epsilon: float = 1.0, delta: float = 1e-5, weights: Any = "equal",
                 dp_model: str = "centroid", C: float = 1.0, max_iter: int = 100,
                 temperature: float = 20.0, noise_seed: int | None = None):
        self.epsilon = epsilon
        self.delta = delta
        self.weights = weights
        self.dp_model = dp_model
        self.C = C
        self.max_iter = max_iter
        self.temperature = temperature
        self.noise_seed = noise_seed

    def _fit_model(self, x: np.ndarray, y: np.ndarray, epsilon: float, delta: float,
                   accountant: Any, offset: int = 0) -> Any:
        """A DP model fitted with (``epsilon``, ``delta``), spent on ``accountant`` (which
        refuses to go over the budget)."""
        seed = None if self.noise_seed is None else int(self.noise_seed) + offset
        if self.dp_model == "logistic":  # objective perturbation: pure epsilon-DP
            model = DPLogisticRegression(epsilon=epsilon, data_norm=1.0, C=self.C,
                                         max_iter=self.max_iter, noise_seed=seed)
            delta = 0.0
        else:
            model = DPCentroidClassifier(epsilon=epsilon, delta=delta,
                                         temperature=self.temperature, noise_seed=seed)
        if accountant is not None:
            accountant.check(epsilon, delta)
        model.fit(x, y)
        if accountant is not None:
            accountant.spend(epsilon, delta)
        return model

    def _start(self) -> tuple[float, float, Any]:
        epsilon = check_epsilon(self.epsilon)
        delta = check_delta(self.delta)
        if self.dp_model not in DP_MODELS:
            raise InputError(f"dp_model must be one of {list(DP_MODELS)}; got {self.dp_model!r}")
        # rows with no modality get a uniform prior: the training counts are not private
        self.class_prior_ = np.full(len(self.classes_), 1.0 / len(self.classes_))
        accountant = None
        if not math.isinf(epsilon):
            accountant = import_diffprivlib().BudgetAccountant(
                epsilon=epsilon, delta=delta if self.dp_model == "centroid" else 0.0)
        return epsilon, delta, accountant

    def _finish(self, accountant: Any) -> None:
        if accountant is None:
            self.epsilon_spent_, self.delta_spent_ = math.inf, 0.0
        else:
            self.epsilon_spent_, self.delta_spent_ = (float(v) for v in accountant.total())


class DPEarlyFusion(_PrivateFusion):
    """Early fusion under epsilon-DP: unit-norm views, ``sqrt(w_m)``-scaled and concatenated
    (rows of norm <= 1), one DP logistic regression with the whole budget.

    Parameters
    ----------
    epsilon : float, default=1.0
    weights : "equal" or dict, default="equal"
        Fixed modality weights.
    C : float, default=1.0
    max_iter : int, default=100
    noise_seed : int or None, default=None
        See :class:`DPLogisticRegression` (None: secret noise).
    """

    def _design(self, views: Views, present: Present) -> np.ndarray:
        return np.hstack([unit_rows(views[m], present[m]) * math.sqrt(self.modality_weights_[m])
                          for m in sorted(views)])

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        epsilon, delta, accountant = self._start()
        self.modality_weights_ = fixed_weights(self.weights, sorted(views))
        self.model_ = self._fit_model(self._design(views, present), y, epsilon, delta,
                                      accountant)
        self._finish(accountant)

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        proba = self.model_.predict_proba(self._design(views, present))
        out = np.zeros((proba.shape[0], len(self.classes_)))
        out[:, np.asarray(self.model_.classes_, dtype=int)] = proba
        return out


class DPLateFusion(_PrivateFusion):
    """Late fusion under epsilon-DP: one DP logistic regression per modality on its
    unit-norm view, each with ``epsilon / M``; fixed-weight mean of log-probabilities.

    Parameters as for :class:`DPEarlyFusion`.
    """

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        epsilon, delta, accountant = self._start()
        mods = sorted(views)
        self.modality_weights_ = fixed_weights(self.weights, mods)
        share = epsilon / len(mods)  # sequential composition: the same people in every view
        self.experts_ = {}
        for i, m in enumerate(mods):
            rows = np.flatnonzero(present[m])
            if len(np.unique(y[rows])) < 2:
                raise InputError(f"modality {m!r} is present in training rows of fewer than 2 "
                                 f"classes; a DP model cannot be fitted to it")
            self.experts_[m] = self._fit_model(unit_rows(views[m][rows]), y[rows], share,
                                               delta / len(mods), accountant, offset=i)
        self._finish(accountant)

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        from scipy.special import softmax

        from ..fusion.late import pooled_log_scores

        n = next(iter(views.values())).shape[0]
        probas = {}
        for m, model in self.experts_.items():
            p = np.full((n, len(self.classes_)), np.nan)
            rows = np.flatnonzero(present[m])
            if len(rows):
                raw = model.predict_proba(unit_rows(views[m][rows]))
                block = np.zeros((len(rows), len(self.classes_)))
                block[:, np.asarray(model.classes_, dtype=int)] = raw
                p[rows] = block
            probas[m] = p
        return softmax(pooled_log_scores(probas, self.modality_weights_), axis=1)


def make_private_fusion(name: str, epsilon: float, *, delta: float = 1e-5,
                        classifier: Any = None, weights: Any = "equal", cv: Any = None,
                        random_state: Any = None, **options: Any) -> _PrivateFusion:
    """The DP version of fusion strategy ``name`` (``"early"`` or ``"late"``).

    ``cv`` and ``random_state`` are accepted and unused (nothing is searched; the noise is
    secret unless ``noise_seed``). Anything else a non-private strategy takes is refused.
    """
    epsilon = check_epsilon(epsilon)
    if name not in private_fusions():
        raise InputError(
            f"under differential privacy the fusion must be one of {private_fusions()} "
            f"(fixed weights, linear models); got {name!r}: weighted, stacking, auto and the "
            f"neural heads learn weights, meta-models or network layers whose privacy cost "
            f"is not accounted"
        )
    if classifier is not None:
        raise InputError(f"under differential privacy the classifier is mmfuse's DP logistic "
                         f"regression; classifier must be None, got {classifier!r}")
    valid = ("dp_model", "C", "max_iter", "temperature", "noise_seed")
    other = sorted(set(options) - set(valid))
    if other:
        raise InputError(f"under differential privacy the {name} fusion takes no {other}; "
                         f"valid: weights, {', '.join(valid)}")
    cls = DPEarlyFusion if name == "early" else DPLateFusion
    return cls(epsilon=epsilon, delta=check_delta(delta), weights=weights, **options)
