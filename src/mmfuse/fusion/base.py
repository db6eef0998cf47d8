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
from .._registry import Registry
from ..views import Present, Views, check_views
from .splits import TooFewForInnerFolds, fallback_reason

FUSIONS: Registry[Any] = Registry("fusion strategy")


class WeightsFallbackWarning(UserWarning):
    """Learned weights could not be learned (too few rows per class for inner folds): the
    strategy fell back to equal weights for this fit (``weights_fallback_`` says why)."""


def register_fusion(name: str, *, description: str = "", extra: str | None = None,
                    takes_device: bool = False, evaluation_weights: Any = "given",
                    reference: bool = False) -> Callable:
    """Decorator registering a fusion strategy class under ``name``.

    The strategy declares its own properties here, so nothing outside the registry switches
    on strategy names: ``extra`` is the ``mmfuse[extra]`` it needs (``"torch"`` for the
    learned heads), ``takes_device`` says that it trains on a ``device`` (CPU or CUDA).
    ``evaluation_weights`` is the ``weights`` its row of an evaluation gets when the row
    does not name them (``"late[equal]"``): ``"given"`` (the evaluation's ``weights``), a
    fixed value, or None (the strategy's own default). ``reference=True`` marks the seed
    baseline: evaluation adds it as its own ``baseline`` row, not as a fused one.
    """
    return FUSIONS.register(name, description=description, extra=extra,
                            takes_device=takes_device, evaluation_weights=evaluation_weights,
                            reference=reference)


def fusions_with(**properties: Any) -> list[str]:
    """Names of the registered strategies whose declared properties have these values, e.g.
    ``fusions_with(takes_device=True)``: the learned heads."""
    _load_builtin()
    return [n for n in FUSIONS.names()
            if all(FUSIONS.entry(n).meta.get(k) == v for k, v in properties.items())]


def create_fusion(name: str, **params: Any) -> "FusionStrategy":
    """A fresh, unfitted strategy by registered name; unknown names list the valid ones."""
    _load_builtin()
    return FUSIONS.create(name, **params)


def fusion_name(fusion: Any) -> str:
    """The registered name of a strategy given by name or as an instance (its class's
    registered name, else the class name)."""
    if isinstance(fusion, str):
        return fusion
    _load_builtin()
    for name in FUSIONS.names():
        if FUSIONS.entry(name).builder is type(fusion):
            return name
    return type(fusion).__name__


def list_fusions() -> list[dict[str, Any]]:
    _load_builtin()
    return [{"name": n, **FUSIONS.entry(n).meta} for n in FUSIONS.names()]


def _load_builtin() -> None:
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
    """Base class: validation, class bookkeeping and ``predict``; subclasses do the fusion."""

    def fit(self, views: Views, y: Any, present: Present | None = None,
            groups: Any = None) -> "FusionStrategy":
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
        try:
            self._fit(usable, y_enc, present, groups)
        except TooFewForInnerFolds:
            if not self._fit_equal_weights(usable, y_enc, present, groups):
                raise
            self.weights_fallback_ = fallback_reason(y_enc, groups)
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
