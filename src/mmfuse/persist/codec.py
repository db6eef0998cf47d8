"""The state codec: an object graph as JSON + ``.npy`` arrays, rebuilt without running code."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from .._errors import InputError
from .allowlist import type_name
from .checks import describe_error
from .container import MAX_PAYLOAD_BYTES, ModelFileError, zip_member

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


class StateEncoder:
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
            name = type_name(obj)
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
        name = type_name(type(obj))
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
        state = {k: v for k, v in state.items() if k not in PROCESS_LOCAL}
        self.types.add(name)
        return {"__object__": name,
                "state": self._encode_dict(state, where, depth + 1, attributes=True)}


class StateDecoder:
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


def object_types(node: Any, found: set[str], depth: int = 0) -> set[str]:
    """Every ``__object__`` type named in a state document (read before anything is built)."""
    if depth > _MAX_DEPTH:
        raise ValueError("the state nests too deep")
    if isinstance(node, list):
        for v in node:
            object_types(v, found, depth + 1)
    elif isinstance(node, dict):
        if "__object__" in node:
            if not isinstance(node["__object__"], str):
                raise ValueError("malformed object node")
            found.add(node["__object__"])
        for v in node.values():
            object_types(v, found, depth + 1)
    return found


#: Attributes that only mean something in the process that set them, left out of a file:
#: scikit-learn's text vectorisers cache ``id(self.stop_words)`` (a memory address) to
#: skip re-checking their stop words; without it they check once more after loading. A
#: model saved twice is then the same bytes.
PROCESS_LOCAL = frozenset({"_stop_words_id"})

def dump_state(obj: Any) -> tuple[bytes, set[str]]:
    """The payload (a stored zip of state.json and arrays/*.npy) and the object types."""
    encoder = StateEncoder()
    document = encoder.encode(obj, "model")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zip_member(STATE_NAME, zipfile.ZIP_DEFLATED),
                         json.dumps(document, allow_nan=False))
        for name, arr in encoder.arrays.items():
            data = io.BytesIO()
            np.save(data, arr, allow_pickle=False)  # keeps Fortran order: same BLAS path
            archive.writestr(zip_member(name, zipfile.ZIP_DEFLATED), data.getvalue())
    return buffer.getvalue(), encoder.types


def load_state(payload: bytes, allowed: Any, path: Any) -> Any:
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
            types = object_types(document, set())
            classes = allowed(types)  # raises for any type that is not allowed
            arrays = {}
            for info in archive.infolist():
                if info.filename.startswith("arrays/"):
                    arrays[info.filename] = np.load(io.BytesIO(archive.read(info)),
                                                    allow_pickle=False)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the bytes hold, one clear message
        raise ModelFileError(f"model file {where!r} has a damaged payload: "
                             f"{describe_error(exc)}") from None
    try:
        return StateDecoder(arrays, classes).decode(document)
    except Exception as exc:  # noqa: BLE001
        raise ModelFileError(f"model file {where!r} has a damaged or incompatible payload: "
                             f"{describe_error(exc)}") from None
