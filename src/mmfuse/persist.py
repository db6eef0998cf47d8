"""Saving and loading fitted models without executing code from the file.

A model file (``.mmfuse``) is a zip container with two members:

``mmfuse-model.json``
    A JSON header: format name, schema version, the mmfuse / scikit-learn / numpy versions
    that wrote it, the class labels, the modality columns with each encoder's name, modality
    and fingerprint, the fusion strategy, the object types the payload holds, and the size
    and sha256 of the payload (a damaged or altered payload fails that check).
``model.state``
    The fitted state as JSON + arrays (a zip of ``state.json`` and ``arrays/*.npy``): the
    fusion strategy with its classifiers, each encoder's parameters and fitted attributes
    (e.g. ``tfidf-hashed``'s idf vector), the estimator's parameters and fitted attributes.

Nothing of the training data goes in by default: an encoder whose fitted state holds pieces
of it (``stores_training_text``, e.g. the ``tfidf`` vocabulary) is refused unless
``save(..., allow_training_text=True)``. The header's ``privacy`` entry records whether PII
scrubbing was on, the differential-privacy budget spent, and whether training text is in.

Loading never unpickles and never calls anything named in the file. Objects are stored as
their type's name and state; before anything is built, every type named in the payload must
be on the allow-list: mmfuse's registered fusion strategies and their helper classes (see
:func:`register_safe_type`), scikit-learn estimators, or a name passed in ``trusted=``.
Arrays are read with ``numpy.load(allow_pickle=False)``. Encoders are not stored as objects:
they are rebuilt by registered name and parameters, given back their fitted attributes, and
their fingerprint (name + weights hash + config) must equal the one saved, so an encoder
whose weights changed is an error, never silently different predictions.

(skops.io would do the same job, but importing it imports every scikit-learn estimator,
about 7 s of CPU, which alone breaks the 5 s load target of the service.)

Examples
--------
>>> clf.save("model.mmfuse")                      # doctest: +SKIP
>>> clf2 = mmfuse.load("model.mmfuse")            # doctest: +SKIP
>>> (clf2.predict_proba(X) == clf.predict_proba(X)).all()  # doctest: +SKIP
True
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import json
import logging
import math
import os
import zipfile
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import InputError

logger = logging.getLogger(__name__)

FORMAT = "mmfuse-model"
#: Version of the file layout. Bump it when the payload's structure changes; readers accept
#: files from MIN_SCHEMA_VERSION up to SCHEMA_VERSION.
SCHEMA_VERSION = 1
MIN_SCHEMA_VERSION = 1
HEADER_NAME = "mmfuse-model.json"
PAYLOAD_NAME = "model.state"
MAX_HEADER_BYTES = 1 << 20
MAX_PAYLOAD_BYTES = 4 << 30
SUFFIX = ".mmfuse"

# Estimator parameters stored with the model (those of MultimodalClassifier.__init__).
_PARAMS = ("encoders", "fusion", "weights", "classifier", "cv", "random_state", "on_error",
           "fusion_params", "scrub_pii", "epsilon", "delta")
# Fitted encoder attributes that are bookkeeping, not state.
_TRANSIENT_ENCODER_ATTRS = frozenset({"errors_"})
# Estimator attributes stored in their own way (or not at all: errors of the last call,
# the header of the file a model came from).
_NOT_SAVED = frozenset({"encoders_", "fusion_", "errors_", "model_file_"})

_extra_safe_types: set[str] = set()


class ModelFileError(InputError):
    """A model file that cannot be loaded: not a model, damaged, tampered, too new, or
    holding a type that is not allowed."""


class FingerprintMismatchError(ModelFileError):
    """An encoder rebuilt at load time differs from the one the model was trained with."""


def register_safe_type(cls: type) -> type:
    """Allow instances of ``cls`` in model files (usable as a class decorator).

    Fusion strategies, dataclasses defined in mmfuse and scikit-learn estimators are allowed
    already; this is for other helper classes (e.g. a learned head's parameter container).
    Their state must be built from numpy arrays, scikit-learn objects and builtins, since
    that is all a model file holds.
    """
    _extra_safe_types.add(_type_name(cls))
    return cls


def safe_types() -> set[str]:
    """The mmfuse types a model file may hold (scikit-learn estimators are allowed too)."""
    return set(_safe_classes())


def _safe_classes() -> dict[str, type]:
    from .fusion import _common
    from .fusion import base as fusion_base

    fusion_base._load_builtin()
    helpers = (_common.ViewScaler, _common.ModalityExpert, getattr(_common, "BlockImputer", None),
               getattr(_common, "CrossFitExpert", None))
    classes = {_type_name(c): c for c in helpers if c is not None}
    for name in fusion_base.FUSIONS.names():
        builder = fusion_base.FUSIONS.entry(name).builder
        if isinstance(builder, type) and issubclass(builder, fusion_base.FusionStrategy):
            classes[_type_name(builder)] = builder
    for name in _extra_safe_types:
        cls = _import_class(name)
        if cls is not None:
            classes[name] = cls
    return classes


def _import_class(name: str) -> type | None:
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

    from .fusion.base import FusionStrategy

    cls = _import_class(name)
    if cls is None or _type_name(cls) != name:
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

    cls = _import_class(name)
    if cls is None or not issubclass(cls, BaseEstimator) or _type_name(cls) != name:
        return None
    return cls


def _resolve_types(names: Iterable[str],
                   trusted: Iterable[str]) -> tuple[dict[str, type], list[str]]:
    """Classes for the allowed names, and the sorted names that are refused."""
    safe = _safe_classes()
    trusted = set(trusted)
    classes: dict[str, type] = {}
    refused = []
    for name in sorted(names):
        cls = _mmfuse_class(name, safe) or _sklearn_estimator(name)
        if cls is None and name in trusted:
            cls = _import_class(name)
        if cls is None:
            refused.append(name)
        else:
            classes[name] = cls
    return classes, refused


# -- save ------------------------------------------------------------------------------------


def save(model: Any, path: str | os.PathLike, *, trusted: Iterable[str] = (),
         allow_training_text: bool = False) -> Path:
    """Write a fitted :class:`~mmfuse.MultimodalClassifier` to ``path`` (atomically).

    Parameters
    ----------
    model : MultimodalClassifier
        A fitted model.
    path : str or path-like
        Destination, conventionally ending in ``.mmfuse``.
    trusted : iterable of str, default=()
        Extra fully qualified type names to accept in the payload (e.g. a third-party
        classifier such as ``"lightgbm.sklearn.LGBMClassifier"``); the same names must then
        be passed to :func:`load`.
    allow_training_text : bool, default=False
        Save a model whose encoders hold pieces of the training data (the ``tfidf``
        vocabulary: words and n-grams of the training texts). Refused by default: use
        ``tfidf-hashed`` (or ``hashing``), which store numbers only, for a model that is
        shipped anywhere.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    InputError
        If the model is not fitted, uses an encoder that is not registered by name, or holds
        a type that could not be loaded safely, or holds training text without
        ``allow_training_text=True``.
    """
    from sklearn.utils.validation import check_is_fitted

    from . import __version__
    from ._io import atomic_write_bytes
    from .encoders.registry import ENCODERS, _load_builtin
    from .estimator import PASSTHROUGH

    if not hasattr(model, "encoders_") or not hasattr(model, "fusion_"):
        raise InputError(f"only a fitted MultimodalClassifier can be saved; got "
                         f"{type(model).__name__}")
    check_is_fitted(model, "fusion_")
    _load_builtin()

    encoders: dict[str, Any] = {}
    header_encoders: dict[str, Any] = {}
    for col, enc in sorted(model.encoders_.items()):
        if isinstance(enc, str) and enc == PASSTHROUGH:
            encoders[col] = {"name": PASSTHROUGH}
            header_encoders[col] = {"name": PASSTHROUGH, "modality": None, "fingerprint": None}
            continue
        if getattr(enc, "stores_training_text", False) and not allow_training_text:
            raise InputError(
                f"encoder {enc.name!r} of column {col!r} stores a vocabulary of the training "
                f"texts (their words and n-grams would ship inside the model file); train "
                f"with 'tfidf-hashed' or 'hashing' instead, or pass allow_training_text=True "
                f"(CLI: --allow-training-text) to save it anyway"
            )
        if enc.name not in ENCODERS and "+" not in enc.name:  # "a+b": mmfuse.encoders.concat
            raise InputError(
                f"encoder {enc.name!r} of column {col!r} is not registered, so a loaded model "
                f"could not rebuild it; register it with mmfuse.encoders.register_encoder"
            )
        state = {k: v for k, v in vars(enc).items()
                 if k.endswith("_") and not k.startswith("_") and k not in _TRANSIENT_ENCODER_ATTRS}
        encoders[col] = {"name": enc.name, "params": _encoder_params(enc), "state": state,
                         "fingerprint": enc.fingerprint}
        header_encoders[col] = {"name": enc.name, "modality": enc.modality,
                                "fingerprint": enc.fingerprint, "stateless": bool(enc.stateless)}

    params = {k: getattr(model, k) for k in _PARAMS if hasattr(model, k)}
    params["encoders"] = _param_encoders(params.get("encoders"))
    # Every other fitted attribute (classes_, modality_weights_, view_dims_, ...), so that
    # attributes added to the estimator later are kept without touching this module.
    fitted = {k: v for k, v in vars(model).items()
              if k.endswith("_") and not k.startswith("_") and k not in _NOT_SAVED}
    payload_obj = {"schema_version": SCHEMA_VERSION, "params": params, "fitted": fitted,
                   "fusion": model.fusion_, "encoders": encoders}
    payload, found = _dump_state(payload_obj)
    types = sorted(found)
    _, refused = _resolve_types(types, trusted)
    if refused:
        raise InputError(
            f"cannot save this model: it holds types that mmfuse does not load by default: "
            f"{refused}; pass trusted={refused!r} to save() and load() if you trust them"
        )

    header = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "mmfuse_version": __version__,
        "versions": _library_versions(),
        "classes": _jsonable(np.asarray(model.classes_).tolist()),
        "modalities": sorted(model.encoders_),
        "used_modalities": list(getattr(model.fusion_, "modalities_", sorted(model.encoders_))),
        "encoders": header_encoders,
        "fusion": getattr(model, "fusion", type(model.fusion_).__name__),
        "fusion_class": _type_name(type(model.fusion_)),
        "modality_weights": _jsonable(getattr(model, "modality_weights_", None)),
        "privacy": {"scrub_pii": bool(getattr(model, "scrub_pii", False)),
                    "epsilon": _jsonable(getattr(model, "epsilon", None)),
                    "epsilon_spent": _jsonable(getattr(model, "epsilon_spent_", None)),
                    "delta_spent": _jsonable(getattr(model, "delta_spent_", None)),
                    "training_text": any(getattr(e, "stores_training_text", False)
                                         for e in model.encoders_.values())},
        "types": types,
        "payload": {"name": PAYLOAD_NAME, "size": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest()},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(HEADER_NAME, json.dumps(header, indent=2, default=str),
                         compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr(PAYLOAD_NAME, payload, compress_type=zipfile.ZIP_STORED)
    written = atomic_write_bytes(path, buffer.getvalue())
    logger.info("saved model to %s (%d bytes)", written, len(buffer.getvalue()))
    return written


def _param_encoders(spec: Any) -> Any:
    """The ``encoders`` parameter with Encoder instances replaced by (name, config) records."""
    from .encoders.base import Encoder

    if isinstance(spec, dict):
        return {col: ({"__encoder__": e.name, "params": _encoder_params(e)}
                      if isinstance(e, Encoder) else e) for col, e in spec.items()}
    return spec


def _encoder_params(enc: Any) -> dict[str, Any]:
    """The constructor parameters of an encoder: its public attributes that are not fitted
    state (scikit-learn convention: ``__init__`` stores its keyword arguments as is)."""
    return {k: v for k, v in vars(enc).items() if not k.startswith("_") and not k.endswith("_")}


# -- the state codec: JSON + arrays, no code ---------------------------------------------------
#
# An object graph becomes a JSON document plus .npy arrays, both inside one stored zip (the
# payload). JSON values stand for themselves (lists are lists); everything else is a
# one-key object naming what it is. Objects are written as their type's name and their
# ``__getstate__()``; they are rebuilt only for types on the allow-list, by ``__new__`` and
# ``__setstate__`` (or ``__dict__`` update): nothing from the file is ever called.

STATE_NAME = "state.json"
_MAX_DEPTH = 200
# Types that appear as values (e.g. TfidfVectorizer(dtype=np.float32)); resolved by this
# table, never by importing a name from the file.
_TYPE_VALUES: dict[str, type] = {
    f"numpy.{t.__name__}": t for t in (
        np.float16, np.float32, np.float64, np.longdouble, np.int8, np.int16, np.int32,
        np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_, np.complex64,
        np.complex128, np.str_, np.bytes_)
} | {f"builtins.{t.__name__}": t for t in (int, float, complex, str, bytes, bool, object)}


class _Encoder:
    """Object graph -> (JSON document, arrays, type names)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.types: set[str] = set()
        self._active: set[int] = set()

    def array(self, arr: np.ndarray) -> str:
        name = f"arrays/{len(self.arrays)}.npy"
        self.arrays[name] = arr
        return name

    def encode(self, obj: Any, where: str, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise InputError(f"cannot save: the model nests deeper than {_MAX_DEPTH} at {where}")
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int) and type(obj) is int:
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"__float__": repr(obj)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject:
                return {"__objarray__": {"shape": list(obj.shape), "items": [
                    self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj.ravel())]}}
            if obj.dtype.fields is not None:
                raise InputError(f"cannot save a structured array at {where}")
            return {"__ndarray__": self.array(obj)}
        if isinstance(obj, np.generic):
            if isinstance(obj, np.object_):
                raise InputError(f"cannot save a numpy object scalar at {where}")
            return {"__npscalar__": obj.dtype.str, "hex": np.asarray(obj).tobytes().hex()}
        if isinstance(obj, np.dtype):
            if obj.hasobject or obj.fields is not None:
                raise InputError(f"cannot save dtype {obj} at {where}")
            return {"__dtype__": obj.str}
        if isinstance(obj, type):
            name = _type_name(obj)
            if _TYPE_VALUES.get(name) is not obj:
                raise InputError(f"cannot save the type {name} (a value at {where}); only numpy "
                                 f"scalar types and builtins can be stored as values")
            return {"__type__": name}
        if type(obj) is complex:
            return {"__complex__": [obj.real, obj.imag]}
        if type(obj) is bytes:
            return {"__bytes__": base64.b64encode(obj).decode("ascii")}
        if id(obj) in self._active:
            raise InputError(f"cannot save: the model refers to itself at {where}")
        self._active.add(id(obj))
        try:
            return self._encode_container(obj, where, depth)
        finally:
            self._active.discard(id(obj))

    def _encode_container(self, obj: Any, where: str, depth: int) -> Any:
        if type(obj) is list:
            return [self.encode(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]
        if type(obj) is tuple:
            return {"__tuple__": [self.encode(v, f"{where}[{i}]", depth + 1)
                                  for i, v in enumerate(obj)]}
        if type(obj) in (set, frozenset):
            items = [self.encode(v, f"{where}{{}}", depth + 1) for v in obj]
            return {"__frozenset__" if type(obj) is frozenset else "__set__": items}
        if type(obj) is dict:
            return self._encode_dict(obj, where, depth)
        return self._encode_object(obj, where, depth)

    def _encode_dict(self, obj: dict, where: str, depth: int, attributes: bool = False) -> Any:
        if obj and all(type(k) is str for k in obj):
            values = list(obj.values())
            first = values[0]
            if (isinstance(first, np.generic) and not isinstance(first, np.object_)
                    and all(type(v) is type(first) for v in values)):
                # e.g. a TF-IDF vocabulary: 20,000 numpy ints as one array
                return {"__npmap__": {"keys": list(obj), "values": self.array(
                    np.array(values, dtype=first.dtype))}}
            return {"__map__": {k: self.encode(v, f"{where}.{k}" if attributes
                                               else f"{where}[{k!r}]", depth + 1)
                                for k, v in obj.items()}}
        return {"__dict__": [[self.encode(k, f"{where} key", depth + 1),
                              self.encode(v, f"{where}[{k!r}]", depth + 1)]
                             for k, v in obj.items()]}

    def _encode_object(self, obj: Any, where: str, depth: int) -> Any:
        name = _type_name(type(obj))
        if callable(obj) and not hasattr(obj, "fit"):
            raise InputError(f"cannot save {name} at {where}: functions and other callables "
                             f"cannot be stored in a model file")
        if not hasattr(obj, "__dict__"):
            raise InputError(
                f"cannot save {name} at {where}: it is a compiled type with no plain state "
                f"(e.g. scikit-learn's decision trees); a model file holds numpy arrays, "
                f"builtins, scikit-learn estimators with plain state and mmfuse objects")
        state = obj.__getstate__() if hasattr(obj, "__getstate__") else vars(obj)
        if not isinstance(state, dict):
            raise InputError(f"cannot save {name} at {where}: its state is not a dict")
        self.types.add(name)
        return {"__object__": name,
                "state": self._encode_dict(state, where, depth + 1, attributes=True)}


class _Decoder:
    """(JSON document, arrays) -> object graph, building only allowed types."""

    def __init__(self, arrays: Mapping[str, np.ndarray], classes: Mapping[str, type]):
        self.arrays = arrays
        self.classes = classes

    def array(self, name: Any) -> np.ndarray:
        if not isinstance(name, str) or name not in self.arrays:
            raise ValueError(f"reference to a missing array {name!r}")
        # each reference gets its own array, as when saved, in the same memory order
        return self.arrays[name].copy(order="K")

    def decode(self, node: Any, depth: int = 0) -> Any:
        if depth > _MAX_DEPTH:
            raise ValueError("the state nests too deep")
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self.decode(v, depth + 1) for v in node]
        if not isinstance(node, dict) or len(node) not in (1, 2):
            raise ValueError(f"unexpected node {str(node)[:80]}")
        tag = next(iter(node))
        value = node[tag]
        if tag == "__map__":
            return {str(k): self.decode(v, depth + 1) for k, v in value.items()}
        if tag == "__dict__":
            return {_hashable(self.decode(k, depth + 1)): self.decode(v, depth + 1)
                    for k, v in value}
        if tag == "__npmap__":
            values = self.array(value["values"])
            keys = value["keys"]
            if len(keys) != len(values) or not all(isinstance(k, str) for k in keys):
                raise ValueError("malformed numpy map")
            return dict(zip(keys, values))
        if tag == "__tuple__":
            return tuple(self.decode(v, depth + 1) for v in value)
        if tag in ("__set__", "__frozenset__"):
            items = (_hashable(self.decode(v, depth + 1)) for v in value)
            return set(items) if tag == "__set__" else frozenset(items)
        if tag == "__ndarray__":
            return self.array(value)
        if tag == "__objarray__":
            items = [self.decode(v, depth + 1) for v in value["items"]]
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out.reshape(tuple(int(s) for s in value["shape"]))
        if tag == "__npscalar__":
            dtype = _plain_dtype(value)
            return np.frombuffer(bytes.fromhex(node["hex"]), dtype=dtype, count=1)[0]
        if tag == "__dtype__":
            return _plain_dtype(value)
        if tag == "__type__":
            if value not in _TYPE_VALUES:
                raise ValueError(f"type value {value!r} is not allowed")
            return _TYPE_VALUES[value]
        if tag == "__float__":
            if value not in ("nan", "inf", "-inf"):
                raise ValueError(f"bad float {value!r}")
            return float(value)
        if tag == "__complex__":
            return complex(float(value[0]), float(value[1]))
        if tag == "__bytes__":
            return base64.b64decode(value, validate=True)
        if tag == "__object__":
            cls = self.classes.get(value)
            if cls is None:  # the type check before decoding makes this unreachable
                raise ValueError(f"type {value!r} is not allowed")
            state = self.decode(node["state"], depth + 1)
            obj = cls.__new__(cls)
            if getattr(cls, "__setstate__", None) is not None:
                obj.__setstate__(state)
            else:
                obj.__dict__.update(state)
            return obj
        raise ValueError(f"unknown node type {tag!r}")


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"unhashable key {type(value).__name__}") from None
    return value


def _plain_dtype(text: Any) -> np.dtype:
    try:
        dtype = np.dtype(str(text))
    except TypeError:
        raise ValueError(f"bad dtype {text!r}") from None
    if dtype.hasobject or dtype.fields is not None:
        raise ValueError(f"dtype {text!r} is not allowed")
    return dtype


def _object_types(node: Any, found: set[str], depth: int = 0) -> set[str]:
    """Every ``__object__`` type named in a state document (read before anything is built)."""
    if depth > _MAX_DEPTH:
        raise ValueError("the state nests too deep")
    if isinstance(node, list):
        for v in node:
            _object_types(v, found, depth + 1)
    elif isinstance(node, dict):
        if "__object__" in node:
            if not isinstance(node["__object__"], str):
                raise ValueError("malformed object node")
            found.add(node["__object__"])
        for v in node.values():
            _object_types(v, found, depth + 1)
    return found


def _dump_state(obj: Any) -> tuple[bytes, set[str]]:
    """The payload (a stored zip of state.json and arrays/*.npy) and the object types."""
    encoder = _Encoder()
    document = encoder.encode(obj, "model")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(STATE_NAME, json.dumps(document, allow_nan=False))
        for name, arr in encoder.arrays.items():
            data = io.BytesIO()
            np.save(data, arr, allow_pickle=False)  # keeps Fortran order: same BLAS path
            archive.writestr(name, data.getvalue())
    return buffer.getvalue(), encoder.types


def _load_state(payload: bytes, allowed: Any, path: Any) -> Any:
    """Decode a payload; ``allowed(type_names) -> {name: class}`` vets the types first."""
    where = os.fspath(path)
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            # refuse decompression bombs before inflating anything
            declared = sum(info.file_size for info in archive.infolist())
            if declared > min(MAX_PAYLOAD_BYTES, max(200 * len(payload), 64 << 20)):
                raise ValueError(f"the payload inflates to {declared} bytes from "
                                 f"{len(payload)}; refusing it")
            document = json.loads(archive.read(STATE_NAME).decode("utf-8"))
            types = _object_types(document, set())
            classes = allowed(types)  # raises for any type that is not allowed
            arrays = {}
            for info in archive.infolist():
                if info.filename.startswith("arrays/"):
                    arrays[info.filename] = np.load(io.BytesIO(archive.read(info)),
                                                    allow_pickle=False)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"model file {where!r} has a damaged payload: "
                             f"{type(exc).__name__}: {exc}") from None
    try:
        return _Decoder(arrays, classes).decode(document)
    except Exception as exc:
        raise ModelFileError(f"model file {where!r} has a damaged or incompatible payload: "
                             f"{type(exc).__name__}: {exc}") from None


# -- load ------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file, checked for format and schema version (cheap: the
    payload is not read)."""
    with _open_container(path) as archive:
        return _read_header(archive, path)


def load(path: str | os.PathLike, *, trusted: Iterable[str] = (),
         encoder_options: Mapping[str, Any] | None = None) -> Any:
    """Load a model written by :func:`save` (or ``MultimodalClassifier.save``).

    Parameters
    ----------
    path : str or path-like
        The model file.
    trusted : iterable of str, default=()
        Extra type names to accept, as given to :func:`save`.
    encoder_options : dict, default=None
        Runtime options set on every rebuilt encoder that has them, e.g.
        ``{"device": "cpu", "threads": 2}``. Options that change an encoder's output change
        its fingerprint and are refused like changed weights.

    Returns
    -------
    MultimodalClassifier
        The fitted model; ``model_file_`` holds the file's header.

    Raises
    ------
    ModelFileError
        If the file is not an mmfuse model, is truncated or tampered with, was written by a
        newer schema, or holds a type that is not allowed.
    FingerprintMismatchError
        If an encoder rebuilt here differs (weights or configuration) from the saved one.
    """
    from .estimator import PASSTHROUGH, MultimodalClassifier
    from .fusion.base import FusionStrategy

    with _open_container(path) as archive:
        header = _read_header(archive, path)
        payload = _read_payload(archive, header, path)

    def allowed(types: set[str]) -> dict[str, type]:
        classes, refused = _resolve_types(types, trusted)
        if refused:
            raise ModelFileError(
                f"model file {os.fspath(path)!r} holds types that are not allowed: {refused}; "
                f"nothing was loaded. If you trust this file and these types, pass "
                f"trusted={refused!r}"
            )
        return classes

    try:
        obj = _load_state(payload, allowed, path)
    except ModelFileError as exc:
        if "not allowed" in str(exc) or header.get("mmfuse_version") == _current_version():
            raise
        raise ModelFileError(
            f"{exc} (the file was written by mmfuse {header.get('mmfuse_version')!r} with "
            f"{header.get('versions')}; this is mmfuse {_current_version()} with "
            f"{_library_versions()})"
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("fusion"), FusionStrategy):
        raise ModelFileError(f"model file {os.fspath(path)!r} does not hold a fitted model")
    _warn_versions(header, path)

    params = dict(obj.get("params", {}))
    options = dict(encoder_options or {})
    params["encoders"] = _rebuild_param_encoders(params.get("encoders"), options)
    known = {k: v for k, v in params.items() if k in _PARAMS}
    model = MultimodalClassifier(**known)
    encoders_: dict[str, Any] = {}
    for col, record in sorted(obj["encoders"].items()):
        if record["name"] == PASSTHROUGH:
            encoders_[col] = PASSTHROUGH
            continue
        encoders_[col] = _rebuild_encoder(col, record, header, path, options)
    model.encoders_ = encoders_
    model.fusion_ = obj["fusion"]
    for key, value in obj.get("fitted", {}).items():
        setattr(model, key, value)
    model.classes_ = model.fusion_.classes_
    model.errors_ = []
    model.model_file_ = {"path": os.fspath(path), **header}
    if _jsonable(np.asarray(model.classes_).tolist()) != header.get("classes"):
        raise ModelFileError(f"model file {os.fspath(path)!r}: the header's classes do not match "
                             f"the payload's; the file was altered")
    return model


def _rebuild_param_encoders(spec: Any, options: dict[str, Any]) -> Any:
    from .encoders.registry import create_encoder

    if isinstance(spec, dict):
        out = {}
        for col, e in spec.items():
            if isinstance(e, dict) and "__encoder__" in e:
                out[col] = _create(e["__encoder__"], e.get("params", {}), options, create_encoder)
            else:
                out[col] = e
        return out
    return spec


def _create(name: str, params: dict[str, Any], options: dict[str, Any],
            create_encoder: Any) -> Any:
    """An encoder by registered name with ``params`` (set as attributes when the builder
    does not take them), then the runtime ``options`` it has."""
    try:
        enc = create_encoder(name, **params)
    except TypeError:
        enc = create_encoder(name)
        for key, value in params.items():
            setattr(enc, key, value)
    for key, value in options.items():
        if key in vars(enc):
            setattr(enc, key, value)
    return enc


def _rebuild_encoder(col: str, record: dict[str, Any], header: dict[str, Any],
                     path: str | os.PathLike, options: dict[str, Any]) -> Any:
    from .encoders.registry import create_encoder

    name = record["name"]
    try:
        enc = _create(name, record.get("params", {}), options, create_encoder)
    except InputError as exc:
        raise ModelFileError(
            f"model file {os.fspath(path)!r}: column {col!r} uses encoder {name!r}, which "
            f"cannot be built here ({exc}); install or import what registers it"
        ) from None
    for key, value in record.get("state", {}).items():
        setattr(enc, key, value)
    saved = record.get("fingerprint")
    if saved != (header.get("encoders", {}).get(col) or {}).get("fingerprint"):
        raise ModelFileError(f"model file {os.fspath(path)!r}: header and payload disagree on "
                             f"the fingerprint of column {col!r}; the file was altered")
    now = enc.fingerprint
    if now != saved:
        raise FingerprintMismatchError(
            f"encoder {name!r} of column {col!r} has fingerprint {now} here but the model was "
            f"trained with {saved}: its weights or configuration changed (e.g. another version "
            f"of the package that ships them), so predictions would be wrong. Install the "
            f"encoder version the model was trained with, or retrain and save the model again"
        )
    return enc


# -- container ---------------------------------------------------------------------------------


class _Container:
    def __init__(self, path: str | os.PathLike):
        self.path = path
        from ._io import check_regular_file

        try:
            check_regular_file(path, "model")  # never open a pipe or a device
        except InputError as exc:
            raise ModelFileError(str(exc)) from None
        try:
            self.data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ModelFileError(f"model file not found: {os.fspath(path)!r}") from None
        except IsADirectoryError:
            raise ModelFileError(f"model path is a directory, not a file: "
                                 f"{os.fspath(path)!r}") from None
        except OSError as exc:
            raise ModelFileError(f"cannot read model file {os.fspath(path)!r}: {exc}") from None

    def __enter__(self) -> zipfile.ZipFile:
        try:
            self.archive = zipfile.ZipFile(io.BytesIO(self.data))
        except Exception as exc:  # zipfile raises several types on garbage
            raise ModelFileError(
                f"{os.fspath(self.path)!r} is not an mmfuse model file, or it is truncated or "
                f"damaged ({exc})"
            ) from None
        return self.archive

    def __exit__(self, *exc: Any) -> None:
        self.archive.close()


def _open_container(path: str | os.PathLike) -> _Container:
    return _Container(path)


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, path: Any) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise ModelFileError(f"{os.fspath(path)!r} is not an mmfuse model file: it has no "
                             f"{name!r} member") from None
    if info.file_size > limit or info.file_size > max(200 * info.compress_size, 64 << 20):
        raise ModelFileError(f"model file {os.fspath(path)!r}: member {name!r} declares "
                             f"{info.file_size} bytes from {info.compress_size}, above the "
                             f"limits; refusing it")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError,
            zlib.error) as exc:
        raise ModelFileError(f"model file {os.fspath(path)!r} is truncated or damaged "
                             f"(reading {name!r}: {exc})") from None


def _read_header(archive: zipfile.ZipFile, path: Any) -> dict[str, Any]:
    raw = _read_member(archive, HEADER_NAME, MAX_HEADER_BYTES, path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"model file {os.fspath(path)!r} has a damaged header: "
                             f"{exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        found = header.get("format") if isinstance(header, dict) else None
        raise ModelFileError(f"{os.fspath(path)!r} is not an mmfuse model file "
                             f"(format {found!r})")
    schema = header.get("schema_version")
    written_by = header.get("mmfuse_version", "?")
    if not isinstance(schema, int) or isinstance(schema, bool):
        raise ModelFileError(f"model file {os.fspath(path)!r} has no valid schema_version")
    if schema > SCHEMA_VERSION:
        raise ModelFileError(
            f"model file {os.fspath(path)!r} was written by mmfuse {written_by} with model "
            f"schema {schema}; this mmfuse {_current_version()} reads schemas "
            f"{MIN_SCHEMA_VERSION}-{SCHEMA_VERSION}: upgrade mmfuse to load it"
        )
    if schema < MIN_SCHEMA_VERSION:
        raise ModelFileError(
            f"model file {os.fspath(path)!r} was written by mmfuse {written_by} with model "
            f"schema {schema}, which this mmfuse {_current_version()} no longer reads "
            f"(schemas {MIN_SCHEMA_VERSION}-{SCHEMA_VERSION}); retrain and save it again"
        )
    for key in ("payload", "encoders", "classes"):
        if key not in header:
            raise ModelFileError(f"model file {os.fspath(path)!r}: header lacks {key!r}")
    return header


def _read_payload(archive: zipfile.ZipFile, header: dict[str, Any], path: Any) -> bytes:
    info = header["payload"]
    if not isinstance(info, dict) or info.get("name") != PAYLOAD_NAME:
        raise ModelFileError(f"model file {os.fspath(path)!r}: header names no valid payload")
    payload = _read_member(archive, PAYLOAD_NAME, MAX_PAYLOAD_BYTES, path)
    digest = hashlib.sha256(payload).hexdigest()
    if len(payload) != info.get("size") or digest != info.get("sha256"):
        raise ModelFileError(
            f"model file {os.fspath(path)!r} failed its integrity check: the payload's size or "
            f"sha256 differs from the header's; the file is damaged or was altered"
        )
    return payload


# -- helpers ---------------------------------------------------------------------------------


def _type_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _current_version() -> str:
    from . import __version__

    return __version__


def _library_versions() -> dict[str, str]:
    import sys

    import sklearn

    return {"python": ".".join(map(str, sys.version_info[:3])), "numpy": np.__version__,
            "scikit-learn": sklearn.__version__}


def _warn_versions(header: dict[str, Any], path: Any) -> None:
    saved = header.get("versions") or {}
    now = _library_versions()
    if header.get("mmfuse_version") != _current_version():
        logger.info("model file %s was written by mmfuse %s; this is %s", os.fspath(path),
                    header.get("mmfuse_version"), _current_version())
    for lib in ("scikit-learn", "numpy"):
        if saved.get(lib) and saved.get(lib) != now.get(lib):
            logger.warning("model file %s was written with %s %s; this is %s %s: predictions "
                           "may differ slightly", os.fspath(path), lib, saved[lib], lib, now[lib])


def _jsonable(obj: Any) -> Any:
    """Labels and weights as plain JSON values (numpy scalars unwrapped)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
