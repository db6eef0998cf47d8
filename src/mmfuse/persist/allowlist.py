"""Which types a model file may hold: mmfuse's fusion strategies and helper classes,
scikit-learn estimators, and names the caller trusts. Nothing else is ever built."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping

_extra_safe_types: set[str] = set()


def register_safe_type(cls: type) -> type:
    """Allow instances of ``cls`` in model files (usable as a class decorator).

    Fusion strategies, dataclasses defined in mmfuse and scikit-learn estimators are allowed
    already; this is for other helper classes (e.g. a learned head's parameter container).
    Their state must be built from numpy arrays, scikit-learn objects and builtins, since
    that is all a model file holds.
    """
    _extra_safe_types.add(type_name(cls))
    return cls


def safe_types() -> set[str]:
    """The mmfuse types a model file may hold (scikit-learn estimators are allowed too)."""
    return set(_safe_classes())


def _safe_classes() -> dict[str, type]:
    from ..fusion import base as fusion_base
    from ..fusion.experts import CrossFitExpert, ModalityExpert
    from ..fusion.imputer import BlockImputer
    from ..fusion.scaling import ViewScaler

    fusion_base.load_builtin()
    helpers = (ViewScaler, ModalityExpert, BlockImputer, CrossFitExpert)
    classes = {type_name(c): c for c in helpers}
    # model files saved before these helpers left ``mmfuse.fusion._common`` name them there
    classes.update({f"mmfuse.fusion._common.{c.__qualname__}": c for c in helpers})
    for name in fusion_base.FUSIONS.names():
        builder = fusion_base.FUSIONS.entry(name).builder
        if isinstance(builder, type) and issubclass(builder, fusion_base.FusionStrategy):
            classes[type_name(builder)] = builder
    for name in _extra_safe_types:
        cls = import_class(name)
        if cls is not None:
            classes[name] = cls
    return classes


def import_class(name: str) -> type | None:
    """The class ``module.Name`` (a top-level class only), or None."""
    module, _, qualname = name.rpartition(".")
    if not module or not qualname.isidentifier():
        return None
    try:
        cls = getattr(importlib.import_module(module), qualname, None)
    except Exception:  # ImportError, or any error while importing an installed module
        return None
    return cls if isinstance(cls, type) else None


def _mmfuse_class(name: str, safe: Mapping[str, type]) -> type | None:
    """An mmfuse class a model may hold: a registered or listed one, any fusion strategy,
    or a dataclass (a plain record, e.g. the ``auto`` strategy's candidates)."""
    if name in safe:
        return safe[name]
    if not name.startswith("mmfuse."):
        return None
    import dataclasses

    from ..fusion.base import FusionStrategy

    cls = import_class(name)
    if cls is None or type_name(cls) != name:
        return None
    if issubclass(cls, FusionStrategy) or dataclasses.is_dataclass(cls):
        return cls
    if cls.__dict__.get("_model_file_safe", False):  # e.g. mmfuse.privacy.dp's estimators
        return cls
    return None


def _sklearn_estimator(name: str) -> type | None:
    """A scikit-learn estimator class by name, or None (other sklearn types are refused)."""
    if not name.startswith("sklearn."):
        return None
    from sklearn.base import BaseEstimator

    cls = import_class(name)
    if cls is None or not issubclass(cls, BaseEstimator) or type_name(cls) != name:
        return None
    return cls


def resolve_types(names: Iterable[str],
                   trusted: Iterable[str]) -> tuple[dict[str, type], list[str]]:
    """Classes for the allowed names, and the sorted names that are refused."""
    safe = _safe_classes()
    trusted = set(trusted)
    classes: dict[str, type] = {}
    refused = []
    for name in sorted(names):
        cls = _mmfuse_class(name, safe) or _sklearn_estimator(name)
        if cls is None and name in trusted:
            cls = import_class(name)
        if cls is None:
            refused.append(name)
        else:
            classes[name] = cls
    return classes, refused


def type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
