"""The fusion-strategy contract and its registry.

A strategy is a scikit-learn style estimator over *views*:
``fit(views, y, present=None, groups=None) -> self`` and
``predict_proba(views, present=None) -> (n, n_classes)``. ``groups`` is used only to build
inner splits (weights and meta-models are learned out-of-fold with the same grouping as the
outer evaluation). Every fitted strategy exposes ``classes_`` and ``modality_weights_``
(a dict summing to 1, or None when the strategy has no per-modality weights).

Missing modalities: any subset of a sample's modalities may be missing. A training row with
no modality at all is an error; at prediction such a row gets ``class_prior_``. A modality
missing for every training sample is dropped with a warning and listed in
``dropped_modalities_``.

Learned weights degrade gracefully: when the training rows cannot be split into inner folds
that hold every class, a strategy that learns its combination out-of-fold (``weights="cv"``
or ``"relative"``, stacking's meta-model) fits its equal-weight form instead, warns
(:class:`WeightsFallbackWarning`) and says why in ``weights_fallback_`` (None when it
learned them).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from .._errors import InputError
from .._params import CLASSIFIER, Interval, validate_params
from .._registry import Registry
from ..views import Present, Views, check_views
from ..splits import TooFewForInnerFolds, fallback_reason

FUSIONS: Registry[Any] = Registry("fusion strategy")


class WeightsFallbackWarning(UserWarning):
    """Learned weights could not be learned (too few rows per class for inner folds): the
    strategy fell back to equal weights for this fit (``weights_fallback_`` says why)."""


#: How a fitted strategy's predictions are explained (see :mod:`mmfuse.explain`).
EXPLANATIONS = ("log-share", "leave-one-out")
#: Relative cost of fitting a strategy, declared at registration.
COSTS = ("low", "medium", "high")


def register_fusion(name: str, *, description: str = "", extra: str | None = None,
                    takes_device: bool = False, evaluation_weights: Any = "given",
                    reference: bool = False, takes_weights: bool = False,
                    meta_level: bool = False, explanation: str = "leave-one-out",
                    private: bool = False, simple_rank: int | None = None,
                    cost: str = "low") -> Callable:
    """Decorator registering a fusion strategy class under ``name``.

    The strategy declares its own properties (capabilities) here, so nothing outside the
    registry switches on strategy names or classes (:func:`capabilities` reads them):

    - ``extra``: the ``mmfuse[extra]`` it needs (``"torch"`` for the learned heads);
    - ``takes_device``: it trains on a ``device`` (CPU or CUDA);
    - ``evaluation_weights``: the ``weights`` its row of an evaluation gets when the row does
      not name them (``"late[equal]"``): ``"given"`` (the evaluation's ``weights``), a fixed
      value, or None (the strategy's own default);
    - ``reference``: the seed baseline; evaluation adds it as its own ``baseline`` row;
    - ``takes_weights``: its ``weights`` parameter changes the model (the others ignore it);
    - ``meta_level``: it combines per-modality expert probabilities with a meta level that
      can be fitted alone on out-of-fold probabilities (:meth:`FusionStrategy.fit_meta`);
    - ``explanation``: one of :data:`EXPLANATIONS`: ``"log-share"`` when its learned modality
      weights split its log-scores exactly, else ``"leave-one-out"``;
    - ``private``: a differentially private version exists (:mod:`mmfuse.privacy.dp`);
    - ``simple_rank``: it can combine the modalities without learning how (with equal
      weights); the rank orders such strategies by preference when inner folds cannot tell
      them apart, fewest coefficients first (``auto``'s choice rule);
    - ``cost``: one of :data:`COSTS`, its relative fitting cost (``"low"``: linear models;
      ``"medium"``: inner cross-validation of weights or a meta-model; ``"high"``: network
      training or a search among other strategies).
    """
    if explanation not in EXPLANATIONS:
        raise ValueError(f"explanation must be one of {EXPLANATIONS}; got {explanation!r}")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}; got {cost!r}")
    return FUSIONS.register(name, description=description, extra=extra,
                            takes_device=takes_device, evaluation_weights=evaluation_weights,
                            reference=reference, takes_weights=takes_weights,
                            meta_level=meta_level, explanation=explanation, private=private,
                            simple_rank=simple_rank, cost=cost)


def capabilities(fusion: Any) -> dict[str, Any]:
    """What a strategy declared at registration, for a registered name, a strategy class or
    an instance (a subclass of a registered class inherits its declaration). An
    unregistered strategy declares nothing: {}."""
    load_builtin()
    if isinstance(fusion, str):
        return dict(FUSIONS.entry(fusion).meta)
    cls = fusion if isinstance(fusion, type) else type(fusion)
    by_class = {FUSIONS.entry(n).builder: n for n in FUSIONS.names()}
    for klass in cls.__mro__:
        if klass in by_class:
            return dict(FUSIONS.entry(by_class[klass]).meta)
    return {}


def fusions_with(**properties: Any) -> list[str]:
    """Names of the registered strategies whose declared properties have these values, e.g.
    ``fusions_with(takes_device=True)``: the learned heads."""
    load_builtin()
    return [n for n in FUSIONS.names()
            if all(FUSIONS.entry(n).meta.get(k) == v for k, v in properties.items())]


def create_fusion(name: str, **params: Any) -> "FusionStrategy":
    """A fresh, unfitted strategy by registered name; unknown names list the valid ones."""
    load_builtin()
    return FUSIONS.create(name, **params)


def fusion_name(fusion: Any) -> str:
    """The registered name of a strategy given by name or as an instance (its class's
    registered name, else the class name)."""
    if isinstance(fusion, str):
        return fusion
    load_builtin()
    for name in FUSIONS.names():
        if FUSIONS.entry(name).builder is type(fusion):
            return name
    return type(fusion).__name__


def list_fusions() -> list[dict[str, Any]]:
    load_builtin()
    return [{"name": n, **FUSIONS.entry(n).meta} for n in FUSIONS.names()]


def load_builtin() -> None:
    """Import every strategy module of :mod:`mmfuse.fusion` (each registers its strategies)."""
    import importlib
    import importlib.util

    import pkgutil

    # every module of this package registers its strategies on import (helpers start with _)
    for info in pkgutil.iter_modules(importlib.import_module(__package__).__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


def _move_held(obj: Any, device: str, depth: int = 0) -> None:
    """Call ``to(device)`` on every strategy ``obj`` holds: itself, or inside containers
    (lists, dicts, mmfuse's own helper objects), read only."""
    if depth > 6:
        return
    if isinstance(obj, FusionStrategy):
        obj.to(device)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _move_held(item, device, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _move_held(item, device, depth + 1)
    elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("mmfuse"):
        for item in vars(obj).values():
            _move_held(item, device, depth + 1)


class FusionStrategy(ClassifierMixin, BaseEstimator):
    """Base class: validation, class bookkeeping and ``predict``; subclasses do the fusion.

    Parameters are checked in one place when ``fit`` starts: the settings every strategy
    shares are declared here, each strategy declares its own beside them
    (``_parameter_constraints``, see :mod:`mmfuse._params`).
    """

    _parameter_constraints: dict[str, Any] = {
        "classifier": [None, dict, CLASSIFIER],
        "cv": [Interval(2, None, integer=True)],
        "weights": "no_validation",  # which weights: each strategy (fusion.weights)
        "random_state": "no_validation",  # scikit-learn's check_random_state
    }

    #: the :class:`~mmfuse.fusion.experts.ExpertsCache` given to the ``fit`` under way
    #: (None: nothing is shared); ``_fit`` hands it to the per-modality experts
    _experts_cache: Any = None

    def fit(self, views: Views, y: Any, present: Present | None = None,
            groups: Any = None, *, experts_cache: Any = None) -> "FusionStrategy":
        """Fit on ``views`` (modality -> (n, d)), labels ``y``, ``present`` (modality ->
        bool per row; None: from NaN rows) and ``groups`` (inner folds grouped by them).
        ``experts_cache``: an :class:`~mmfuse.fusion.experts.ExpertsCache` whose
        per-modality experts and out-of-fold probabilities this fit shares with the other
        fits given it (the same results; None: nothing shared)."""
        validate_params(self)
        # a training row with no modality at all carries nothing to learn from
        views, present = check_views(views, present, allow_all_missing_rows=False)
        y = np.asarray(y)
        n = next(iter(views.values())).shape[0]
        if y.ndim != 1 or y.shape[0] != n:
            raise InputError(f"y must be 1-D with {n} labels (one per sample); got shape {y.shape}")
        self.classes_, y_enc = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise InputError(
                f"need at least 2 classes to train a classifier; got 1 class: {self.classes_.tolist()}"
            )
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape[0] != n:
                raise InputError(f"groups has {groups.shape[0]} entries; expected {n}")
        self.class_prior_ = np.bincount(y_enc, minlength=len(self.classes_)) / n
        usable = {k: v for k, v in views.items() if present[k].any()}
        if not usable:
            raise InputError("every modality is missing for every training sample")
        self.dropped_modalities_ = sorted(set(views) - set(usable))
        if self.dropped_modalities_:
            warnings.warn(
                f"modalities missing for every training sample were dropped: "
                f"{self.dropped_modalities_} (see dropped_modalities_)", UserWarning,
                stacklevel=2,
            )
        self.modalities_ = sorted(usable)
        present = {k: present[k] for k in usable}
        self.weights_fallback_ = None
        self._experts_cache = experts_cache
        try:
            self._fit(usable, y_enc, present, groups)
        except TooFewForInnerFolds:
            if not self._fit_equal_weights(usable, y_enc, present, groups):
                raise
            self.weights_fallback_ = fallback_reason(y_enc, groups)
        finally:
            del self._experts_cache  # held for this fit only: not kept, not saved
        if self.weights_fallback_:
            warnings.warn(f"{fusion_name(self)} fusion fell back to {self.weights_fallback_}",
                          WeightsFallbackWarning, stacklevel=2)
        return self

    def _fit_equal_weights(self, views: Views, y: np.ndarray, present: Present,
                           groups: Any) -> bool:
        """Fit the strategy's equal-weight form when its learned weights need inner folds
        the data cannot give (False: it has none, the error stands). By default: the same
        strategy with ``weights="equal"`` (the parameter is restored afterwards)."""
        learned = self.get_params(deep=False).get("weights", "equal")
        if isinstance(learned, str) and learned == "equal":
            return False
        self.weights = "equal"
        try:
            self._fit(views, y, present, groups)
        finally:
            self.weights = learned
        return True

    def predict_proba(self, views: Views, present: Present | None = None) -> np.ndarray:
        check_is_fitted(self, "classes_")
        views, present = check_views(views, present)
        missing = [m for m in self.modalities_ if m not in views]
        if missing:
            raise InputError(
                f"views lack modalities the model was trained on: {missing}; "
                f"got {sorted(views)} (pass NaN rows for a missing modality)"
            )
        views = {m: views[m] for m in self.modalities_}
        present = {m: present[m] for m in self.modalities_}
        proba = np.asarray(self._predict_proba(views, present), dtype=np.float64)
        # a row with none of the model's modalities: nothing to go on but the class prior
        # (MultimodalClassifier raises on such rows unless on_error="skip")
        empty = ~np.any(np.stack(list(present.values())), axis=0)
        if empty.any():
            proba[empty] = self.class_prior_
        return proba

    # -- the meta level (strategies registered with meta_level=True) ---------------------
    def has_meta_level(self) -> bool:
        """Whether this strategy, as configured, is a meta level over per-modality expert
        probabilities that :meth:`fit_meta` can fit alone (declared at registration)."""
        return bool(capabilities(self).get("meta_level"))

    def fit_meta(self, probas: dict[str, np.ndarray], y: np.ndarray, present: Present,
                 groups: Any = None, *, n_classes: int) -> "FusionStrategy":
        """Fit only the meta level, on per-modality out-of-fold probabilities ``probas``
        (modality -> (n, n_classes), in this order) of integer labels ``y`` in
        ``0..n_classes-1``: what ``auto`` cross-validates on shared expert probabilities.
        Returns self; :meth:`predict_meta` then combines new probabilities."""
        if not self.has_meta_level():
            raise TypeError(f"{fusion_name(self)} has no meta level to fit on its own")
        self.classes_ = np.arange(n_classes)
        self.modalities_ = list(probas)
        self._fit_meta(probas, y, present, groups)
        return self

    def predict_meta(self, probas: dict[str, np.ndarray], present: Present) -> np.ndarray:
        """Combine per-modality probabilities with the meta level fitted by
        :meth:`fit_meta` (or by ``fit``)."""
        check_is_fitted(self, "classes_")
        return self._predict_meta(probas, present)

    def calibrated_as(self) -> "tuple[FusionStrategy, list[str]] | None":
        """For a fitted strategy that predicts with a strategy it chose (``auto``): that
        strategy, unfitted, and the modalities it reads, so that calibrators and conformal
        thresholds learn from out-of-fold probabilities of what predicts
        (:func:`mmfuse.uncertainty.fit.calibration_target`). None (the default): this
        strategy is calibrated as it is."""
        return None

    def _fit_meta(self, probas: dict[str, np.ndarray], y: np.ndarray, present: Present,
                  groups: Any) -> None:
        raise NotImplementedError

    def _predict_meta(self, probas: dict[str, np.ndarray], present: Present) -> np.ndarray:
        raise NotImplementedError

    def to(self, device: str) -> "FusionStrategy":
        """Predict on ``device`` (resolved: ``"cpu"``, ``"cuda"``, ``"cuda:N"``) from now
        on. A strategy without a device has nothing of its own to move; the strategies it
        holds (candidates, members, base strategies) move themselves. Returns self."""
        for value in vars(self).values():
            _move_held(value, device)
        return self

    def predict(self, views: Views, present: Present | None = None) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(views, present), axis=1)]

    def score(self, views: Views, y: Any, present: Present | None = None) -> float:
        return float(np.mean(self.predict(views, present) == np.asarray(y)))

    # subclasses implement these on validated views (sorted, only usable modalities) and
    # integer-encoded labels 0..K-1
    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        raise NotImplementedError

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        raise NotImplementedError
