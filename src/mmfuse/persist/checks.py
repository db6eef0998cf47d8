"""Checks of a decoded model before it is handed out: what the codec rebuilt is read back
as plain objects and arrays, and a file whose signature (the header's sha256) was redone
after its arrays were changed must still be refused here, at load, never in ``predict``.

* every array has a plain dtype (numbers, booleans, strings), and a float one of finite
  values where scikit-learn keeps numbers (``coef_``, ``mean_``...);
* every scikit-learn-style object's arrays agree with each other: ``coef_`` against
  ``n_features_in_`` and its ``classes_``, ``intercept_`` against ``coef_``, a scaler's or
  PCA's arrays against ``n_features_in_``;
* the model's view widths agree with its encoders, and two rows of zeros predict finite
  probabilities over the header's classes.

Each refusal says in words what is wrong and where (``fusion_.experts_['image']...``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .container import ModelFileError

#: plain dtype kinds: booleans, integers, floats, strings (class labels, vocabularies)
_PLAIN_KINDS = "biufUS"
#: scikit-learn's fitted arrays that hold numbers: always float
_FLOAT_ARRAYS = ("coef_", "intercept_", "mean_", "scale_", "var_", "components_",
                 "explained_variance_", "singular_values_", "idf_", "class_prior_")
#: arrays of one value per input feature
_PER_FEATURE = ("mean_", "scale_", "var_")
_MAX_DEPTH = 200
#: the widest view a model may declare (the test prediction allocates two rows of it)
MAX_VIEW_WIDTH = 1 << 22


def describe_error(exc: BaseException) -> str:
    """What a decoding failure means, in words (never the exception's class name)."""
    text = str(exc)
    if isinstance(exc, RecursionError):
        return "its state nests too deeply to be read"
    if "Exceeds the limit" in text and "digits" in text:
        return "its state holds a number with too many digits"
    if "Object arrays cannot be loaded" in text:
        return "an array holds Python objects, which a model file never holds"
    if isinstance(exc, UnicodeDecodeError):
        return "its state is not UTF-8 text"
    if isinstance(exc, KeyError):
        return f"it lacks the entry {text}"
    if isinstance(exc, MemoryError):
        return "it declares more data than it holds"
    return text or "it cannot be read"


def check_model(model: Any, header: dict[str, Any], path: Any) -> None:
    """Refuse a loaded model whose arrays do not fit their objects (see the module doc).

    Raises
    ------
    ModelFileError
    """
    where = os.fspath(path)
    for name, value in _walk(model.fusion_, "fusion_", set(), 0):
        problem = (_check_array(name, value) if isinstance(value, np.ndarray)
                   else _check_object(value))
        if problem:
            raise ModelFileError(f"model file {where!r} does not hold a consistent model: "
                                 f"{name} {problem}; the file is damaged or was altered")
    _check_views(model, header, where)


def _walk(obj: Any, name: str, seen: set[int], depth: int):
    """(path, value) of every object and array reachable from ``obj``."""
    if depth > _MAX_DEPTH or id(obj) in seen:
        return
    if isinstance(obj, np.ndarray):
        yield name, obj
        return
    if isinstance(obj, dict):
        seen.add(id(obj))
        for k, v in obj.items():
            yield from _walk(v, f"{name}[{k!r}]", seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        seen.add(id(obj))
        for i, v in enumerate(obj):
            yield from _walk(v, f"{name}[{i}]", seen, depth + 1)
    elif hasattr(obj, "__dict__") and not isinstance(obj, type):
        seen.add(id(obj))
        yield name, obj
        for k, v in vars(obj).items():
            yield from _walk(v, f"{name}.{k}", seen, depth + 1)


def _check_array(name: str, arr: np.ndarray) -> str | None:
    if arr.dtype.hasobject:  # class labels of mixed or string type: plain values only
        if not all(isinstance(v, (str, bytes, int, float, bool, np.generic))
                   for v in arr.ravel()):
            return "is an array holding other things than numbers or text"
    elif arr.dtype.kind not in _PLAIN_KINDS:
        return f"is an array of {arr.dtype}, not of numbers or text"
    attr = name.rsplit(".", 1)[-1]
    if attr in _FLOAT_ARRAYS:
        if arr.dtype.kind != "f":
            return f"holds {arr.dtype} values where numbers with a fraction (float) belong"
        if not np.isfinite(arr).all():
            return "holds values that are not finite numbers (NaN or infinite)"
    return None


def _shape(arr: Any) -> tuple[int, ...] | None:
    return tuple(arr.shape) if isinstance(arr, np.ndarray) else None


def _check_object(obj: Any) -> str | None:
    """A scikit-learn-style object's fitted arrays against each other."""
    state = vars(obj)
    n_features = state.get("n_features_in_")
    if n_features is not None and (not isinstance(n_features, (int, np.integer))
                                   or isinstance(n_features, bool) or n_features < 1):
        return f"has n_features_in_ = {n_features!r}, expected a positive whole number"
    coef, intercept, classes = (_shape(state.get(k)) for k in ("coef_", "intercept_",
                                                               "classes_"))
    if coef is not None:
        if len(coef) not in (1, 2):
            return f"has coef_ of shape {coef}, expected a matrix (classes x features)"
        if n_features is not None and coef[-1] != n_features:
            return (f"has coef_ of shape {coef} but was fitted on {n_features} features: "
                    f"expected {n_features} columns")
        if classes is not None and len(coef) == 2:
            k = classes[0]
            rows = 1 if k == 2 else k
            if coef[0] != rows:
                return (f"has coef_ of shape {coef} for {k} classes: expected {rows} "
                        f"row{'s' if rows != 1 else ''}")
        if intercept is not None and len(coef) == 2 and intercept != (coef[0],):
            return f"has intercept_ of shape {intercept}, expected ({coef[0]},) to match coef_"
    if n_features is not None:
        for key in _PER_FEATURE:
            shape = _shape(state.get(key))
            if shape is not None and shape != (n_features,):
                return (f"has {key} of shape {shape} but was fitted on {n_features} features: "
                        f"expected ({n_features},)")
        components = _shape(state.get("components_"))
        if components is not None and (len(components) != 2 or components[1] != n_features):
            return (f"has components_ of shape {components}, expected {n_features} columns "
                    f"(the features it was fitted on)")
    return None


def _registered_dim(name: Any) -> int | None:
    """The output width an encoder declares where it registers (None: it depends on the
    data, or the name is not a registered encoder)."""
    from ..encoders.registry import ENCODERS

    if not isinstance(name, str) or name not in ENCODERS:
        return None
    dim = ENCODERS.entry(name).meta.get("dim")
    return int(dim) if isinstance(dim, (int, np.integer)) else None


def _check_views(model: Any, header: dict[str, Any], where: str) -> None:
    """View widths against the encoders, then two rows of zeros through the strategy."""
    dims = getattr(model, "view_dims_", None)
    fusion = model.fusion_
    modalities = list(getattr(fusion, "modalities_", []))
    if not isinstance(dims, dict) or not modalities:
        return  # nothing recorded to check against
    n_classes = len(header.get("classes") or [])
    for col in modalities:
        width = dims.get(col)
        if (not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 1
                or width > MAX_VIEW_WIDTH):
            raise ModelFileError(f"model file {where!r} does not hold a consistent model: the "
                                 f"width of view {col!r} is {width!r}, expected a positive "
                                 f"number up to {MAX_VIEW_WIDTH}; the file is damaged or was "
                                 f"altered")
        enc = model.encoders_.get(col)
        fixed = _registered_dim(getattr(enc, "name", None))
        if fixed is not None and fixed != width:
            raise ModelFileError(f"model file {where!r} does not hold a consistent model: view "
                                 f"{col!r} is {width} wide but its encoder {enc.name!r} gives "
                                 f"{fixed}; the file is damaged or was altered")
    total = getattr(model, "n_features_in_", None)
    widths = [w for w in dims.values() if isinstance(w, (int, np.integer))]
    if total is not None and (not isinstance(total, (int, np.integer))
                              or total != sum(widths)):
        raise ModelFileError(f"model file {where!r} does not hold a consistent model: it "
                             f"declares {total!r} input features but its views are "
                             f"{sum(widths)} wide in all; the file is damaged or was altered")
    views = {m: np.zeros((2, int(dims[m])), dtype=np.float32) for m in modalities}
    present = {m: np.ones(2, dtype=bool) for m in modalities}
    try:
        with np.errstate(all="ignore"):
            proba = np.asarray(model.predict_views(views, present))
    except Exception as exc:  # noqa: BLE001 - any failure here is a damaged model
        raise ModelFileError(f"model file {where!r} does not hold a consistent model: its "
                             f"arrays do not fit together (a test prediction failed: "
                             f"{describe_error(exc)}); the file is damaged or was "
                             f"altered") from None
    if proba.shape != (2, n_classes) or not np.isfinite(proba).all() \
            or not np.allclose(proba.sum(axis=1), 1.0, atol=1e-4):
        raise ModelFileError(f"model file {where!r} does not hold a consistent model: a test "
                             f"prediction gave {proba.shape[-1] if proba.ndim else 0} "
                             f"probabilities per row for {n_classes} classes, or values that "
                             f"are not probabilities; the file is damaged or was altered")
