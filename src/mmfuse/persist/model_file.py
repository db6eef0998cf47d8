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

import logging
import os
from pathlib import Path
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .._errors import InputError
from .allowlist import import_class, resolve_types, type_name
from ..fusion.base import fusion_name
from .checks import check_model
from .codec import dump_state, load_state
from .container import (FORMAT, SCHEMA_VERSION, ModelFileError, current_version, jsonable,
                        library_versions, open_container, payload_record, read_header_of,
                        read_payload, write_container)

logger = logging.getLogger("mmfuse.persist")

#: The estimator class a model file holds (resolved by name when loading, so this module
#: never imports the estimator).
ESTIMATOR_CLASS = "mmfuse.estimator.MultimodalClassifier"
# Fitted encoder attributes that are bookkeeping, not state.
_TRANSIENT_ENCODER_ATTRS = frozenset({"errors_"})
# Estimator attributes stored in their own way (or not at all: errors of the last call,
# the header of the file a model came from).
_NOT_SAVED = frozenset({"encoders_", "fusion_", "errors_", "model_file_"})


class FingerprintMismatchError(ModelFileError):
    """An encoder rebuilt at load time differs from the one the model was trained with."""


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

    from .. import __version__
    from .._io import atomic_write_bytes
    from ..encoders.featurizer import PASSTHROUGH, is_passthrough
    from ..encoders.registry import ENCODERS, load_builtin as _load_builtin

    if not hasattr(model, "encoders_") or not hasattr(model, "fusion_"):
        raise InputError(f"only a fitted MultimodalClassifier can be saved; got "
                         f"{type(model).__name__}")
    check_is_fitted(model, "fusion_")
    _load_builtin()

    encoders: dict[str, Any] = {}
    header_encoders: dict[str, Any] = {}
    for col, enc in sorted(model.encoders_.items()):
        if is_passthrough(enc):
            encoders[col] = {"name": PASSTHROUGH.name}
            header_encoders[col] = {"name": PASSTHROUGH.name, "modality": None,
                                    "fingerprint": None}
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

    params = model.get_params(deep=False)
    params["encoders"] = _param_encoders(params.get("encoders"))
    # Every other fitted attribute (classes_, modality_weights_, view_dims_, ...), so that
    # attributes added to the estimator later are kept without touching this module.
    fitted = {k: v for k, v in vars(model).items()
              if k.endswith("_") and not k.startswith("_") and k not in _NOT_SAVED}
    payload_obj = {"schema_version": SCHEMA_VERSION, "params": params, "fitted": fitted,
                   "fusion": model.fusion_, "encoders": encoders}
    payload, found = dump_state(payload_obj)
    types = sorted(found)
    _, refused = resolve_types(types, trusted)
    if refused:
        raise InputError(
            f"cannot save this model: it holds types that mmfuse does not load by default: "
            f"{refused}; pass trusted={refused!r} to save() and load() if you trust them"
        )

    header = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "mmfuse_version": __version__,
        "versions": library_versions(),
        "classes": jsonable(np.asarray(model.classes_).tolist()),
        "modalities": sorted(model.encoders_),
        "used_modalities": list(getattr(model.fusion_, "modalities_", sorted(model.encoders_))),
        "encoders": header_encoders,
        "fusion": fusion_name(getattr(model, "fusion", model.fusion_)),
        "fusion_class": type_name(type(model.fusion_)),
        "estimator": type_name(type(model)),
        "modality_weights": jsonable(getattr(model, "modality_weights_", None)),
        "privacy": {"scrub_pii": bool(getattr(model, "scrub_pii", False)),
                    "epsilon": jsonable(getattr(model, "epsilon", None)),
                    "epsilon_spent": jsonable(getattr(model, "epsilon_spent_", None)),
                    "delta_spent": jsonable(getattr(model, "delta_spent_", None)),
                    "training_text": any(getattr(e, "stores_training_text", False)
                                         for e in model.encoders_.values())},
        "types": types,
        "payload": payload_record(payload),
    }
    data = write_container(header, payload)
    written = atomic_write_bytes(path, data)
    logger.info("saved model to %s (%d bytes)", written, len(data))
    return written


def _param_encoders(spec: Any) -> Any:
    """The ``encoders`` parameter with Encoder instances replaced by (name, config) records."""
    from ..encoders.base import Encoder

    if isinstance(spec, dict):
        return {col: ({"__encoder__": e.name, "params": _encoder_params(e)}
                      if isinstance(e, Encoder) else e) for col, e in spec.items()}
    return spec


def _encoder_params(enc: Any) -> dict[str, Any]:
    """The constructor parameters of an encoder: its public attributes that are not fitted
    state (scikit-learn convention: ``__init__`` stores its keyword arguments as is)."""
    return {k: v for k, v in vars(enc).items() if not k.startswith("_") and not k.endswith("_")}


# -- load ------------------------------------------------------------------------------------


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a model file, checked for format and schema version (cheap: the
    payload is not read)."""
    with open_container(path) as archive:
        return read_header_of(archive, path)


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
    from ..encoders.featurizer import PASSTHROUGH, is_passthrough
    from ..fusion.base import FusionStrategy

    with open_container(path) as archive:
        header = read_header_of(archive, path)
        payload = read_payload(archive, header, path)

    def allowed(types: set[str]) -> dict[str, type]:
        classes, refused = resolve_types(types, trusted)
        if refused:
            raise ModelFileError(
                f"model file {os.fspath(path)!r} holds types that are not allowed: {refused}; "
                f"nothing was loaded. If you trust this file and these types, pass "
                f"trusted={refused!r}"
            )
        return classes

    try:
        obj = load_state(payload, allowed, path)
    except ModelFileError as exc:
        if "not allowed" in str(exc) or header.get("mmfuse_version") == current_version():
            raise
        raise ModelFileError(
            f"{exc} (the file was written by mmfuse {header.get('mmfuse_version')!r} with "
            f"{header.get('versions')}; this is mmfuse {current_version()} with "
            f"{library_versions()})"
        ) from None
    if not isinstance(obj, dict) or not isinstance(obj.get("fusion"), FusionStrategy):
        raise ModelFileError(f"model file {os.fspath(path)!r} does not hold a fitted model")
    _warn_versions(header, path)

    params = dict(obj.get("params", {}))
    options = dict(encoder_options or {})
    params["encoders"] = _rebuild_param_encoders(params.get("encoders"), options)
    estimator = _estimator_class(header, path)
    names = set(estimator._get_param_names())
    model = estimator(**{k: v for k, v in params.items() if k in names})
    encoders_: dict[str, Any] = {}
    for col, record in sorted(obj["encoders"].items()):
        if is_passthrough(record["name"]):
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
    if jsonable(np.asarray(model.classes_).tolist()) != header.get("classes"):
        raise ModelFileError(f"model file {os.fspath(path)!r}: the header's classes do not match "
                             f"the payload's; the file was altered")
    check_model(model, header, path)  # arrays against their objects, a test prediction
    return model


def _estimator_class(header: Mapping[str, Any], path: Any) -> type:
    """The estimator class to rebuild, by name (``ESTIMATOR_CLASS``; an mmfuse scikit-learn
    estimator only)."""
    from sklearn.base import BaseEstimator

    name = header.get("estimator", ESTIMATOR_CLASS)
    cls = import_class(name) if isinstance(name, str) and name.startswith("mmfuse.") else None
    if cls is None or not issubclass(cls, BaseEstimator) or not hasattr(cls, "featurizer"):
        raise ModelFileError(f"model file {os.fspath(path)!r} names the estimator {name!r}, "
                             f"which is not an mmfuse estimator")
    return cls


def _rebuild_param_encoders(spec: Any, options: dict[str, Any]) -> Any:
    from ..encoders.registry import create_encoder

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
    from ..encoders.registry import create_encoder

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


def _warn_versions(header: dict[str, Any], path: Any) -> None:
    saved = header.get("versions") or {}
    now = library_versions()
    if header.get("mmfuse_version") != current_version():
        logger.info("model file %s was written by mmfuse %s; this is %s", os.fspath(path),
                    header.get("mmfuse_version"), current_version())
    for lib in ("scikit-learn", "numpy"):
        if saved.get(lib) and saved.get(lib) != now.get(lib):
            logger.warning("model file %s was written with %s %s; this is %s %s: predictions "
                           "may differ slightly", os.fspath(path), lib, saved[lib], lib, now[lib])
