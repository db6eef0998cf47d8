"""The model side of the service: what it needs to know about the model (computed once),
decoding one request's items, and running a micro-batch through the model."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError
from ..fusion.base import fusion_name
from ..encoders.base import MissingItem
from ..predict import modalities_used
from ..encoders.featurizer import Featurizer
from .errors import ApiError

logger = logging.getLogger("mmfuse.serve")


@dataclass
class ModelSpec:
    """What the service needs to know about the model, computed once."""

    columns: list[str]
    kinds: dict[str, str]
    used: list[str]
    dims: dict[str, int | None]
    classes: list[Any]
    info: dict[str, Any] = field(default_factory=dict)
    featurizer: Featurizer | None = None
    #: views that read several request fields (tabular): view -> encoder
    tables: dict[str, Any] = field(default_factory=dict)
    #: the training manifest's column name -> the model column it feeds (a field may be
    #: named either way: the model remembers the columns it was trained on)
    aliases: dict[str, str] = field(default_factory=dict)


def model_spec(model: Any, max_upload_bytes: int, max_text_chars: int,
                version: str) -> ModelSpec:
    from ..persist import jsonable as _jsonable

    featurizer = model.featurizer()
    columns = featurizer.views
    kinds = {c: featurizer.kind(c) for c in columns}
    dims = {c: featurizer.dim(c) for c in columns}
    used = modalities_used(model)
    classes = _jsonable(np.asarray(model.classes_).tolist())
    encoders = {}
    for c in columns:
        enc = featurizer.encoders[c]
        if kinds[c] == "features":
            encoders[c] = {"modality": "features", "encoder": "passthrough", "fingerprint": None,
                           "dim": dims[c]}
        else:
            encoders[c] = {"modality": enc.modality, "encoder": enc.name,
                           "fingerprint": enc.fingerprint, "dim": dims[c]}
    saved = getattr(model, "model_file_", None) or {}
    info = {
        "classes": classes,
        "modalities": columns,
        "used_modalities": used,
        "encoders": encoders,
        "fusion": fusion_name(getattr(model, "fusion", model.fusion_)),
        "modality_weights": _jsonable(getattr(model, "modality_weights_", None)),
        "mmfuse_version": version,
        "model_file": ({"mmfuse_version": saved.get("mmfuse_version"),
                        "schema_version": saved.get("schema_version"),
                        "sha256": (saved.get("payload") or {}).get("sha256")} if saved else None),
        "limits": {"max_upload_bytes": max_upload_bytes, "max_text_chars": max_text_chars},
    }
    tables = {c: featurizer.encoders[c] for c in columns
              if getattr(featurizer.encoders[c], "multi_column", False)}
    for c, enc in tables.items():
        encoders[c]["columns"] = list(enc.input_columns)  # the request's fields
    from ..predict import source_columns

    table_fields = {f for enc in tables.values() for f in enc.input_columns}
    aliases = {src: col for col, src in source_columns(model).items()
               if col in kinds and col not in tables and src not in kinds
               and src not in table_fields}
    for src, col in aliases.items():
        encoders[col]["field_alias"] = src
    return ModelSpec(columns, kinds, used, dims, classes, info, featurizer, tables, aliases)


def warm_up_model(model: Any) -> None:
    """Load lazily loaded encoder weights now rather than on the first request."""
    for enc in model.featurizer().encoders.values():
        loader = getattr(type(enc), "load", None)
        if callable(loader):
            enc.load()


# -- decoding ----------------------------------------------------------------------------


async def prepare_items(model: Any, spec: ModelSpec, items: dict[str, Any],
                       run_in_threadpool: Callable) -> dict[str, Any]:
    """Decode every item (in the thread pool); a bad item is a 422 naming its field."""

    async def one(col: str, raw: Any) -> tuple[str, Any]:
        if spec.kinds[col] == "features":
            return col, raw
        try:
            if col in spec.tables:  # a row of scalars: parsing it costs less than a thread hop
                return col, spec.featurizer.prepare_item(col, raw)
            return col, await run_in_threadpool(spec.featurizer.prepare_item, col, raw)
        except MissingItem:
            return col, None
        except InputError as exc:
            if col in spec.tables:  # a row of fields: name the one at fault
                field = getattr(exc, "column", None) or col
                raise ApiError(422, "bad_value", f"field {field!r}: {exc}",
                               field=field) from None
            raise ApiError(422, "undecodable", f"field {col!r}: {exc}", field=col) from None
        except Exception as exc:  # a decoder's own error on hostile bytes is still bad input
            logger.info("could not decode field %r: %s: %s", col, type(exc).__name__, exc)
            raise ApiError(422, "undecodable", f"field {col!r} could not be decoded "
                           f"({type(exc).__name__})", field=col) from None

    results = await asyncio.gather(*(one(c, v) for c, v in items.items()))
    return {c: p for c, p in results if p is not None}


# -- inference ---------------------------------------------------------------------------------


def predict_batch(model: Any, spec: ModelSpec, batch: list[dict[str, Any]]) -> np.ndarray:
    """Probabilities for a batch of decoded requests: one encoder call per modality."""
    views, present = spec.featurizer.views_from_prepared(batch)
    return model.predict_views(views, present)


def explain_one(model: Any, spec: ModelSpec, prepared: dict[str, Any]) -> Any:
    """Probabilities and modality contributions of one decoded request (``explain=true``),
    outside the micro-batcher (see :mod:`mmfuse.explain`)."""
    from ..explain import explain_views

    views, present = spec.featurizer.views_from_prepared([prepared])
    return explain_views(model.fusion_, views, present)


def answer_body(model: Any, spec: ModelSpec, proba: np.ndarray, used: list[str],
            given: list[str]) -> dict[str, Any]:
    k = int(np.argmax(proba))
    weights = getattr(model, "modality_weights_", None)
    used_weights = None
    if weights:
        sub = {m: float(weights.get(m, 0.0)) for m in used}
        total = sum(sub.values())
        used_weights = {m: (w / total if total > 0 else 1.0 / len(sub)) for m, w in sub.items()}
    body = {
        "label": spec.classes[k],
        "probabilities": {str(c): float(p) for c, p in zip(spec.classes, proba)},
        "modalities_used": used,
        "modality_weights": used_weights,
        "ignored_fields": [g for g in given if g not in used],
    }
    unc = getattr(model, "uncertainty_", None)
    if unc is not None and unc.conformal is not None:
        # the conformal set, with the thresholds of the modalities this request used
        present = {m: np.array([m in used]) for m in unc.modalities}
        chosen = unc.sets(np.asarray(proba, dtype=np.float64)[None, :], present)[0]
        body["set"] = [spec.classes[i] for i in np.flatnonzero(chosen)]
    return body
