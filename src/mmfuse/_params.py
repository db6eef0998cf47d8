"""Parameters checked in one place, in scikit-learn's ``_parameter_constraints`` style.

An estimator (``MultimodalClassifier``, a fusion strategy) declares
``_parameter_constraints = {name: [constraint, ...]}`` (or a function that checks the value
and raises, or ``"no_validation"``); :func:`validate_params` checks every
declared parameter against them when ``fit`` starts (``__init__`` only stores them). A value
is valid when it satisfies any constraint of its list; otherwise the error names the
parameter, what it must be and the value, in one line (an :class:`~mmfuse.InputError`).
Functions check one value with :func:`check_param` (``on_error``: :func:`check_on_error`).

(scikit-learn's own ``sklearn.utils._param_validation`` is private, so mmfuse keeps these
few constraint objects.)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from ._constants import ON_ERROR
from ._errors import InputError

__all__ = ["CLASSIFIER", "Boolean", "Constraint", "HasMethods", "InstanceOf", "Interval", "Options",
           "check_on_error", "check_param", "same_value", "validate_params"]


class Constraint:
    """What a parameter may be: :meth:`is_satisfied_by` and a description for errors."""

    def is_satisfied_by(self, value: Any) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def __str__(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class Options(Constraint):
    """One of a few values (strings, compared by equality and type)."""

    def __init__(self, values: Sequence[Any]):
        self.values = tuple(values)

    def is_satisfied_by(self, value: Any) -> bool:
        return any(type(value) is type(v) and value == v for v in self.values)

    def __str__(self) -> str:
        return f"one of {list(self.values)}"


class Interval(Constraint):
    """A real (or, with ``integer=True``, an integral) number between ``left`` and
    ``right`` (None: unbounded); ``closed`` is "both", "left", "right" or "neither"."""

    def __init__(self, left: float | None, right: float | None, *, closed: str = "both",
                 integer: bool = False):
        self.left, self.right, self.closed, self.integer = left, right, closed, integer

    def is_satisfied_by(self, value: Any) -> bool:
        kind = numbers.Integral if self.integer else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or math.isnan(value):
            return False
        if self.left is not None and (value < self.left or (
                value == self.left and self.closed in ("right", "neither"))):
            return False
        return self.right is None or not (value > self.right or (
            value == self.right and self.closed in ("left", "neither")))

    def __str__(self) -> str:
        what = "an integer" if self.integer else "a number"
        if self.left is not None and self.right is None:
            op = ">=" if self.closed in ("both", "left") else ">"
            return f"{what} {op} {self.left:g}"
        lo = "[" if self.closed in ("both", "left") else "("
        hi = "]" if self.closed in ("both", "right") else ")"
        left = "-inf" if self.left is None else f"{self.left:g}"
        right = "inf" if self.right is None else f"{self.right:g}"
        return f"{what} in {lo}{left}, {right}{hi}"


class InstanceOf(Constraint):
    """An instance of ``types`` (described as ``name``)."""

    def __init__(self, types: type | tuple[type, ...], name: str):
        self.types, self.name = types, name

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.types) and not (
            isinstance(value, bool) and bool not in (
                self.types if isinstance(self.types, tuple) else (self.types,)))

    def __str__(self) -> str:
        return self.name


class HasMethods(Constraint):
    """An object with these methods (e.g. a classifier: ``fit`` and ``predict_proba``)."""

    def __init__(self, methods: Sequence[str], name: str):
        self.methods, self.name = tuple(methods), name

    def is_satisfied_by(self, value: Any) -> bool:
        return all(callable(getattr(value, m, None)) for m in self.methods)

    def __str__(self) -> str:
        return self.name


class Boolean(Constraint):
    """True or False (numpy's bools too)."""

    def is_satisfied_by(self, value: Any) -> bool:
        import numpy as np

        return isinstance(value, (bool, np.bool_))

    def __str__(self) -> str:
        return "True or False"


class _NoneConstraint(Constraint):
    def is_satisfied_by(self, value: Any) -> bool:
        return value is None

    def __str__(self) -> str:
        return "None"


#: A classifier fitted per view or on all views (a strategy's ``classifier``).
CLASSIFIER = HasMethods(("fit", "predict_proba"), "a scikit-learn classifier with predict_proba")


def same_value(a: Any, b: Any) -> bool:
    """The same setting: the same object, or equal plain values (strings, numbers, dicts)."""
    if a is b:
        return True
    plain = (str, int, float, dict, type(None))
    return isinstance(a, plain) and isinstance(b, plain) and type(a) is type(b) and a == b


def _as_constraint(c: Any) -> Constraint:
    if c is None:
        return _NoneConstraint()
    if isinstance(c, Constraint):
        return c
    if c is dict:
        return InstanceOf(Mapping, "a dict")
    if c is str:
        return InstanceOf(str, "a string")
    raise TypeError(f"not a parameter constraint: {c!r}")


def check_param(name: str, value: Any, constraints: Sequence[Any]) -> Any:
    """``value`` if it satisfies any of ``constraints`` (None, ``str``, ``dict`` or
    :class:`Constraint` objects); else an InputError naming ``name`` and what it must be."""
    checks = [_as_constraint(c) for c in constraints]
    if any(c.is_satisfied_by(value) for c in checks):
        return value
    raise InputError(f"{name} must be {' or '.join(str(c) for c in checks)}; got {value!r}")


def validate_params(estimator: Any) -> None:
    """Check every parameter ``type(estimator)._parameter_constraints`` declares (a
    subclass's declaration extends its parents')."""
    seen: set[str] = set()
    for klass in type(estimator).__mro__:
        for name, constraints in vars(klass).get("_parameter_constraints", {}).items():
            if name in seen:
                continue  # the subclass's declaration wins
            seen.add(name)
            if constraints == "no_validation" or not hasattr(estimator, name):
                continue
            if callable(constraints):  # a check of its own, raising its own error
                constraints(getattr(estimator, name))
            else:
                check_param(name, getattr(estimator, name), constraints)


def check_on_error(on_error: Any) -> str:
    """``on_error`` if it is one of ``ON_ERROR`` ("raise", "skip"), else the InputError."""
    return check_param("on_error", on_error, [Options(ON_ERROR)])
