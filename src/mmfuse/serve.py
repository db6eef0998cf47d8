"""HTTP inference: a FastAPI app around a fitted model, served by uvicorn.

``POST /predict`` takes the model's columns as multipart form fields (``image=@photo.png``,
``text=...``, ``audio=@clip.wav``; any subset) or as a JSON object (files base64-encoded,
text as strings) and answers the label, the class probabilities, the modalities used and
their weights. ``GET /health``, ``GET /model`` and the OpenAPI docs (``/docs``) come with it.

Design:

* Every upload is decoded from bytes in memory; a string is never taken as a path, so no
  path from a request is ever opened on the server.
* Bad input is a 4xx answer with a JSON body ``{"error": {"code", "message", "field"}}``:
  oversize bodies and files (413), undecodable files and unknown or malformed fields (422),
  wrong content types (415), empty or unparsable bodies (400). The service keeps serving.
* Decoding runs per request in a thread pool; the model runs on micro-batches: a queue and
  one worker that groups the requests arriving within ``batch_wait_ms`` (up to
  ``batch_max``), so concurrent clients share one encoder call per modality.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions'
# annotations (Request) at run time, and they are imported inside create_app.
import asyncio
import base64
import binascii
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import InputError, require
from .encoders.base import MissingItem
from .predict import column_kind, model_columns, used_modalities, view_dim

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_TEXT_CHARS = 10_000
# Extra bytes a request body may hold beyond its fields (multipart headers, JSON syntax).
_ENVELOPE_BYTES = 64 * 1024
# How much of an oversize body is read (and dropped) so the client gets its 413 cleanly.
_DRAIN_BYTES = 32 * 2**20
_MEDIA_TYPES = ("multipart/form-data", "application/json", "application/x-www-form-urlencoded")
_FILE_TYPES = {
    "image": ("image/",),
    "audio": ("audio/", "video/ogg", "application/ogg"),
    "text": ("text/",),
}
_GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")


class ApiError(Exception):
    """A request the service refuses: becomes ``status`` with a JSON error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        return {"error": error}


@dataclass
class _Field:
    name: str
    data: bytes | str
    is_file: bool
    content_type: str = ""
    filename: str | None = None


@dataclass
class _ModelSpec:
    """What the service needs to know about the model, computed once."""

    columns: list[str]
    kinds: dict[str, str]
    used: list[str]
    dims: dict[str, int | None]
    classes: list[Any]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServiceStats:
    requests: int = 0
    batches: int = 0
    max_batch_size: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        mean = self.requests / self.batches if self.batches else 0.0
        return {"requests": self.requests, "batches": self.batches,
                "max_batch_size": self.max_batch_size, "mean_batch_size": round(mean, 3),
                "rejected": self.errors}


# -- the app ---------------------------------------------------------------------------------


def create_app(model: Any, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, batch_max: int = 16,
               batch_wait_ms: float = 5.0, warm_up: bool = True) -> Any:
    """A FastAPI app serving ``model``.

    Parameters
    ----------
    model : MultimodalClassifier
        A fitted or loaded model. It is only read, never changed.
    max_upload_bytes : int, default=10 MiB
        Largest file accepted per field (413 above it).
    max_text_chars : int, default=10_000
        Longest text accepted per field, in characters (413 above it).
    batch_max : int, default=16
        Most requests run through the model at once.
    batch_wait_ms : float, default=5.0
        How long the worker waits for more requests after the first of a batch.
    warm_up : bool, default=True
        Load lazily loaded encoder weights at startup rather than on the first request.

    Returns
    -------
    fastapi.FastAPI
    """
    from . import __version__

    fastapi = require("fastapi", "serve")
    require("python_multipart", "serve")  # multipart parsing, checked now rather than per request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_text_chars", max_text_chars),
                        ("batch_max", batch_max)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int; got {value!r}")
    if not isinstance(batch_wait_ms, (int, float)) or not 0 <= batch_wait_ms <= 10_000:
        raise InputError(f"batch_wait_ms must be between 0 and 10000; got {batch_wait_ms!r}")

    spec = _model_spec(model, max_upload_bytes, max_text_chars, __version__)
    stats = ServiceStats()
    batcher = _Batcher(lambda items: _predict_batch(model, spec, items), batch_max,
                       batch_wait_ms / 1000.0, stats)
    limits = _BodyLimits(spec, max_upload_bytes, max_text_chars)

    @asynccontextmanager
    async def lifespan(app: Any):
        if warm_up:
            await run_in_threadpool(_warm_up, model)
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = fastapi.FastAPI(
        title="mmfuse inference",
        version=__version__,
        description=(f"Predicts {len(spec.classes)} classes from the modalities "
                     f"{', '.join(spec.columns)} (any subset). Files are sent as multipart "
                     f"uploads or base64 in JSON; errors are JSON with a 4xx status."),
        lifespan=lifespan,
    )
    app.state.model = model
    app.state.stats = stats

    def error_response(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        stats.errors += 1
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        stats.errors += 1
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code,
                                                                 f"http_{exc.status_code}")
        response = JSONResponse(ApiError(exc.status_code, code, str(exc.detail)).body(),
                                status_code=exc.status_code)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        stats.errors += 1
        return error_response(ApiError(422, "invalid_request", str(exc.errors())))

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("internal error while serving %s", request.url.path)
        return JSONResponse(ApiError(500, "internal", "internal server error").body(),
                            status_code=500)

    @app.get("/health", summary="Liveness and batching statistics")
    async def health():
        return {"status": "ok", **stats.as_dict()}

    @app.get("/model", summary="What the model predicts and from which inputs")
    async def model_info():
        return spec.info

    def parse(media: str, body: bytes, content_type: str) -> dict[str, Any]:
        if media == "application/json":
            return _items_from_json(body, spec, max_upload_bytes, max_text_chars)
        if media == "multipart/form-data":
            fields = _parse_multipart(body, content_type, limits)
        else:
            fields = _parse_urlencoded(body, len(spec.columns))
        return _items_from_fields(fields, spec, max_upload_bytes, max_text_chars)

    answer_model, error_model = _response_models()

    @app.post("/predict", summary="Predict the class of one sample",
              openapi_extra=_openapi_request(spec, max_text_chars),
              responses={200: {"model": answer_model},
                         **{status: {"model": error_model} for status in (400, 413, 415, 422)}})
    async def predict(request: Request):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media not in _MEDIA_TYPES:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media!r} is not accepted; send multipart/form-data "
                           f"(fields {spec.columns}) or application/json")
        body = await _read_body(request, limits.for_media(media))
        if not body:
            raise ApiError(400, "empty_request",
                           f"the request is empty; send at least one of the fields {spec.columns}")
        if not media:
            raise ApiError(415, "unsupported_media_type",
                           "the request has no content type; send multipart/form-data or "
                           "application/json")
        # parsing megabytes (multipart, JSON, base64) is CPU work: off the event loop
        items = await run_in_threadpool(parse, media, body, request.headers["content-type"])
        prepared = await _prepare_all(model, spec, items, run_in_threadpool)
        used = [m for m in spec.used if m in prepared]
        if not used:
            given = sorted(items)
            raise ApiError(422, "no_usable_modality",
                           f"nothing usable to predict from: got {given or 'only empty fields'}; "
                           f"the model uses {spec.used}")
        proba = await batcher.submit(prepared)
        return JSONResponse(_answer(model, spec, proba, used, sorted(items)))

    return app


def _response_models() -> tuple[Any, Any]:
    from pydantic import BaseModel

    class PredictResponse(BaseModel):
        label: Any
        probabilities: dict[str, float]
        modalities_used: list[str]
        modality_weights: dict[str, float] | None
        ignored_fields: list[str]

    class ErrorDetail(BaseModel):
        code: str
        message: str
        field: str | None = None

    class ErrorResponse(BaseModel):
        error: ErrorDetail

    return PredictResponse, ErrorResponse


def _model_spec(model: Any, max_upload_bytes: int, max_text_chars: int,
                version: str) -> _ModelSpec:
    from .persist import _jsonable

    columns = model_columns(model)
    kinds = {c: column_kind(model, c) for c in columns}
    dims = {c: view_dim(model, c) for c in columns}
    used = used_modalities(model)
    classes = _jsonable(np.asarray(model.classes_).tolist())
    encoders = {}
    for c in columns:
        enc = model.encoders_[c]
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
        "fusion": getattr(model, "fusion", type(model.fusion_).__name__),
        "modality_weights": _jsonable(getattr(model, "modality_weights_", None)),
        "mmfuse_version": version,
        "model_file": ({"mmfuse_version": saved.get("mmfuse_version"),
                        "schema_version": saved.get("schema_version"),
                        "sha256": (saved.get("payload") or {}).get("sha256")} if saved else None),
        "limits": {"max_upload_bytes": max_upload_bytes, "max_text_chars": max_text_chars},
    }
    return _ModelSpec(columns, kinds, used, dims, classes, info)


def _warm_up(model: Any) -> None:
    for enc in model.encoders_.values():
        loader = getattr(type(enc), "load", None)
        if callable(loader):
            enc.load()


# -- request bodies ----------------------------------------------------------------------------


class _BodyLimits:
    """Largest acceptable body per content type, from the per-field limits."""

    def __init__(self, spec: _ModelSpec, max_upload_bytes: int, max_text_chars: int):
        files = sum(1 for k in spec.kinds.values() if k in ("image", "audio"))
        texts = sum(1 for k in spec.kinds.values() if k == "text")
        features = sum(32 * (d or 4096) for c, d in spec.dims.items()
                       if spec.kinds[c] == "features")
        text_bytes = 4 * max_text_chars  # UTF-8: at most 4 bytes per character
        self.multipart = files * max_upload_bytes + texts * text_bytes + features + _ENVELOPE_BYTES
        # JSON: base64 takes 4/3, and escapes (\uXXXX) up to 6 bytes per character
        self.json = (files * math.ceil(max_upload_bytes * 4 / 3) + texts * 6 * max_text_chars
                     + features + _ENVELOPE_BYTES)
        self.urlencoded = texts * 3 * text_bytes + 3 * features + _ENVELOPE_BYTES
        self.part = max(max_upload_bytes, text_bytes, features) + 1
        self.max_parts = 4 * len(spec.columns) + 8

    def for_media(self, media: str) -> int:
        if media == "application/json":
            return self.json
        if media == "application/x-www-form-urlencoded":
            return self.urlencoded
        return self.multipart


async def _read_body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_big = False
    if declared is not None:
        try:
            too_big = int(declared) > limit
        except ValueError:
            raise ApiError(400, "bad_request", f"invalid Content-Length {declared!r}") from None
        if too_big and request.headers.get("expect", "").lower() == "100-continue":
            # the client waits for our go-ahead: refuse without reading anything
            raise _too_large(limit)
    body = bytearray()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            too_big = True
        if too_big:
            if total > limit + _DRAIN_BYTES:
                break
            continue
        body += chunk
    if too_big:
        raise _too_large(limit)
    return bytes(body)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "request_too_large",
                    f"the request body exceeds the limit of {limit} bytes for this model")


def _parse_multipart(body: bytes, content_type: str, limits: _BodyLimits) -> list[_Field]:
    """Parse multipart/form-data entirely in memory (no temporary files)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "bad_multipart", "multipart/form-data without a boundary parameter")
    parts: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state["part"] = {"headers": [], "data": bytearray()}
        state["name"], state["value"] = b"", b""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["part"]["headers"].append((state["name"].lower(), state["value"]))
        state["name"], state["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = state["part"]
        part["data"] += data[start:end]
        if len(part["data"]) > limits.part:
            raise ApiError(413, "field_too_large",
                           f"a form field exceeds the limit of {limits.part - 1} bytes")

    def on_part_end() -> None:
        parts.append(state["part"])
        if len(parts) > limits.max_parts:
            raise ApiError(422, "too_many_fields", f"more than {limits.max_parts} form fields")

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
        "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end,
    })
    try:
        parser.write(body)
        parser.finalize()
    except ApiError:
        raise
    except Exception as exc:  # python-multipart's parse errors have no common base class
        raise ApiError(400, "bad_multipart", f"malformed multipart body: {exc}") from None
    if not parts:
        raise ApiError(400, "bad_multipart", "the multipart body holds no fields")
    fields = []
    for part in parts:
        headers = dict(part["headers"])
        _, options = parse_options_header(headers.get(b"content-disposition", b""))
        name = options.get(b"name")
        if name is None:
            raise ApiError(400, "bad_multipart", "a multipart part has no field name")
        filename = options.get(b"filename")
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        fields.append(_Field(
            name=name.decode("utf-8", "replace"),
            data=bytes(part["data"]),
            is_file=filename is not None,
            content_type=ctype.decode("latin-1"),
            filename=None if filename is None else filename.decode("utf-8", "replace"),
        ))
    return fields


def _parse_urlencoded(body: bytes, n_columns: int) -> list[_Field]:
    from urllib.parse import parse_qsl

    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True,
                          max_num_fields=4 * n_columns + 8)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_form", f"malformed form body: {exc}") from None
    return [_Field(name=k, data=v.encode("utf-8"), is_file=False) for k, v in pairs]


def _check_names(names: list[str], spec: _ModelSpec) -> None:
    unknown = sorted({n for n in names if n not in spec.kinds})
    if unknown:
        raise ApiError(422, "unknown_field",
                       f"unknown field(s) {unknown}; this model takes {spec.columns}",
                       field=unknown[0])
    seen = set()
    for n in names:
        if n in seen:
            raise ApiError(422, "duplicate_field", f"field {n!r} is given more than once", field=n)
        seen.add(n)


def _items_from_fields(fields: list[_Field], spec: _ModelSpec, max_upload_bytes: int,
                       max_text_chars: int) -> dict[str, Any]:
    """Raw items by column from form fields: bytes for files, str for text."""
    _check_names([f.name for f in fields], spec)
    items: dict[str, Any] = {}
    for f in fields:
        kind = spec.kinds[f.name]
        data = f.data if isinstance(f.data, bytes) else f.data.encode("utf-8")
        if kind in ("image", "audio"):
            if not f.is_file:
                if not data:
                    continue  # an empty field means "this modality is missing"
                raise ApiError(422, "expected_file",
                               f"field {f.name!r} must be a file upload (e.g. -F "
                               f"{f.name}=@file); strings are never opened as paths",
                               field=f.name)
            _check_file_type(f.name, kind, f.content_type)
            items[f.name] = _check_bytes(f.name, data, max_upload_bytes)
        elif kind == "text":
            if f.is_file:
                _check_file_type(f.name, "text", f.content_type)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ApiError(422, "bad_text", f"field {f.name!r} is not valid UTF-8: {exc}",
                               field=f.name) from None
            items[f.name] = _check_text(f.name, text, max_text_chars)
        else:
            try:
                value = json.loads(data.decode("utf-8")) if data.strip() else None
            except (UnicodeDecodeError, ValueError):
                raise ApiError(422, "bad_features", f"field {f.name!r} must be a JSON array of "
                               f"numbers", field=f.name) from None
            items[f.name] = _check_vector(f.name, value, spec.dims[f.name])
    return {k: v for k, v in items.items() if v is not None}


def _items_from_json(body: bytes, spec: _ModelSpec, max_upload_bytes: int,
                     max_text_chars: int) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "bad_json", f"expected a JSON object with fields {spec.columns}; "
                       f"got {type(doc).__name__}")
    if not doc:
        raise ApiError(400, "empty_request",
                       f"the JSON object is empty; send at least one of the fields {spec.columns}")
    _check_names(list(doc), spec)
    items: dict[str, Any] = {}
    for name, value in doc.items():
        kind = spec.kinds[name]
        if value is None or value == "":
            continue
        if kind in ("image", "audio"):
            items[name] = _decode_base64(name, kind, value, max_upload_bytes)
        elif kind == "text":
            if not isinstance(value, str):
                raise ApiError(422, "bad_text", f"field {name!r} must be a string; got "
                               f"{type(value).__name__}", field=name)
            items[name] = _check_text(name, value, max_text_chars)
        else:
            items[name] = _check_vector(name, value, spec.dims[name])
    return {k: v for k, v in items.items() if v is not None}


def _decode_base64(name: str, kind: str, value: Any, max_upload_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise ApiError(422, "bad_base64", f"field {name!r} must be a base64 string (or a data: "
                       f"URI); got {type(value).__name__}", field=name)
    text = value
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise ApiError(422, "bad_base64", f"field {name!r}: only base64 data: URIs are "
                           f"accepted", field=name)
        _check_file_type(name, kind, head[5:-7].split(";")[0].strip().lower())
    text = "".join(text.split())
    if len(text) * 3 // 4 > max_upload_bytes + 3:
        raise ApiError(413, "file_too_large", f"field {name!r} exceeds the limit of "
                       f"{max_upload_bytes} bytes", field=name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(422, "bad_base64", f"field {name!r} is not valid base64: {exc}",
                       field=name) from None
    return _check_bytes(name, data, max_upload_bytes)


def _check_file_type(name: str, kind: str, content_type: str) -> None:
    if content_type in _GENERIC_TYPES or content_type.startswith(_FILE_TYPES[kind]):
        return
    expected = " or ".join(t + "*" if t.endswith("/") else t for t in _FILE_TYPES[kind])
    raise ApiError(415, "unsupported_file_type",
                   f"field {name!r} is {kind}, but the upload's content type is {content_type!r}; "
                   f"expected {expected}", field=name)


def _check_bytes(name: str, data: bytes, limit: int) -> bytes:
    if len(data) > limit:
        raise ApiError(413, "file_too_large", f"field {name!r} has {len(data)} bytes, above the "
                       f"limit of {limit}", field=name)
    if not data:
        raise ApiError(422, "empty_file", f"field {name!r} is an empty file", field=name)
    return data


def _check_text(name: str, text: str, limit: int) -> str | None:
    if len(text) > limit:
        raise ApiError(413, "text_too_long", f"field {name!r} has {len(text)} characters, above "
                       f"the limit of {limit}", field=name)
    return text if text.strip() else None


def _check_vector(name: str, value: Any, dim: int | None) -> np.ndarray | None:
    if value is None:
        return None
    if (not isinstance(value, list) or not value
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ApiError(422, "bad_features", f"field {name!r} must be a non-empty array of "
                       f"numbers", field=name)
    vector = np.asarray(value, dtype=np.float32)
    if dim is not None and vector.shape[0] != dim:
        raise ApiError(422, "bad_features", f"field {name!r} has {vector.shape[0]} numbers; the "
                       f"model expects {dim}", field=name)
    if not np.all(np.isfinite(vector)):
        raise ApiError(422, "bad_features", f"field {name!r} holds NaN or infinite values",
                       field=name)
    return vector


async def _prepare_all(model: Any, spec: _ModelSpec, items: dict[str, Any],
                       run_in_threadpool: Callable) -> dict[str, Any]:
    """Decode every item (in the thread pool); a bad item is a 422 naming its field."""

    async def one(col: str, raw: Any) -> tuple[str, Any]:
        if spec.kinds[col] == "features":
            return col, raw
        enc = model.encoders_[col]
        try:
            return col, await run_in_threadpool(enc.prepare, raw)
        except MissingItem:
            return col, None
        except InputError as exc:
            raise ApiError(422, "undecodable", f"field {col!r}: {exc}", field=col) from None
        except Exception as exc:  # a decoder's own error on hostile bytes is still bad input
            logger.info("could not decode field %r: %s: %s", col, type(exc).__name__, exc)
            raise ApiError(422, "undecodable", f"field {col!r} could not be decoded "
                           f"({type(exc).__name__})", field=col) from None

    results = await asyncio.gather(*(one(c, v) for c, v in items.items()))
    return {c: p for c, p in results if p is not None}


# -- inference ---------------------------------------------------------------------------------


def _predict_batch(model: Any, spec: _ModelSpec, batch: list[dict[str, Any]]) -> np.ndarray:
    """Probabilities for a batch of decoded requests: one encoder call per modality."""
    from .views import check_views

    n = len(batch)
    views: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for col in spec.columns:
        mask = np.array([col in item for item in batch], dtype=bool)
        if spec.kinds[col] == "features":
            rows = [item[col] for item in batch if col in item]
            dim = spec.dims[col] or (len(rows[0]) if rows else 1)
            view = np.full((n, dim), np.nan, dtype=np.float32)
            if rows:
                view[mask] = np.stack(rows)
        else:
            view = model.encoders_[col].assemble([item[col] for item in batch if col in item], mask)
        views[col], present[col] = view, mask
    views, present = check_views(views, present)
    return model.fusion_.predict_proba(views, present)


def _answer(model: Any, spec: _ModelSpec, proba: np.ndarray, used: list[str],
            given: list[str]) -> dict[str, Any]:
    k = int(np.argmax(proba))
    weights = getattr(model, "modality_weights_", None)
    used_weights = None
    if weights:
        sub = {m: float(weights.get(m, 0.0)) for m in used}
        total = sum(sub.values())
        used_weights = {m: (w / total if total > 0 else 1.0 / len(sub)) for m, w in sub.items()}
    return {
        "label": spec.classes[k],
        "probabilities": {str(c): float(p) for c, p in zip(spec.classes, proba)},
        "modalities_used": used,
        "modality_weights": used_weights,
        "ignored_fields": [g for g in given if g not in used],
    }


class _Batcher:
    """Groups concurrent requests: a queue and one worker that runs batches in a thread."""

    def __init__(self, fn: Callable[[list[Any]], np.ndarray], batch_max: int, wait_s: float,
                 stats: ServiceStats):
        self.fn = fn
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.stats = stats
        self.queue: asyncio.Queue | None = None
        self.task: asyncio.Task | None = None
        self.executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="mmfuse-batch")
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with suppress(asyncio.CancelledError):
                await self.task
        if self.queue is not None:
            while not self.queue.empty():
                _, fut = self.queue.get_nowait()
                if not fut.done():
                    fut.set_exception(RuntimeError("the service is shutting down"))
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, item: Any) -> np.ndarray:
        if self.queue is None:
            raise RuntimeError("the batch worker is not running (app started without lifespan?)")
        fut = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((item, fut))
        return await fut

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        loop = asyncio.get_running_loop()
        batch = [await self.queue.get()]
        deadline = loop.time() + self.wait_s
        while len(batch) < self.batch_max:
            try:
                batch.append(self.queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), timeout))
            except (asyncio.TimeoutError, TimeoutError):
                break
        return [(item, fut) for item, fut in batch if not fut.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results: list[Any] = list(await loop.run_in_executor(self.executor, self.fn, items))
            except Exception:
                # isolate the failure: run the requests one by one
                logger.exception("batch of %d failed; retrying one by one", len(items))
                results = []
                for item in items:
                    try:
                        results.append((await loop.run_in_executor(self.executor, self.fn,
                                                                   [item]))[0])
                    except Exception as exc:
                        results.append(exc)
            self.stats.batches += 1
            self.stats.requests += len(batch)
            self.stats.max_batch_size = max(self.stats.max_batch_size, len(batch))
            for (_, fut), res in zip(batch, results):
                if fut.done():
                    continue
                if isinstance(res, Exception):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)


# -- OpenAPI -----------------------------------------------------------------------------------


def _openapi_request(spec: _ModelSpec, max_text_chars: int) -> dict[str, Any]:
    multipart: dict[str, Any] = {}
    as_json: dict[str, Any] = {}
    for col in spec.columns:
        kind = spec.kinds[col]
        if kind in ("image", "audio"):
            formats = "PNG, JPEG, ..." if kind == "image" else "WAV, FLAC, OGG"
            multipart[col] = {"type": "string", "format": "binary",
                              "description": f"{kind} file ({formats})"}
            as_json[col] = {"type": "string", "contentEncoding": "base64",
                            "description": f"{kind} file, base64 or a base64 data: URI"}
        elif kind == "text":
            multipart[col] = as_json[col] = {"type": "string", "maxLength": max_text_chars}
        else:
            vector = {"type": "array", "items": {"type": "number"},
                      "description": "pre-extracted feature vector"}
            if spec.dims[col]:
                vector.update(minItems=spec.dims[col], maxItems=spec.dims[col])
            as_json[col] = vector
            multipart[col] = {"type": "string", "description": "feature vector as a JSON array"}
    description = (f"Any subset of the fields {spec.columns}; at least one that the model "
                   f"uses ({spec.used}).")
    return {"requestBody": {"required": True, "description": description, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": multipart,
                                           "additionalProperties": False}},
        "application/json": {"schema": {"type": "object", "properties": as_json,
                                        "additionalProperties": False}},
    }}}


# -- running -----------------------------------------------------------------------------------


def run_server(model_path: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, *,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, batch_max: int = 16,
               batch_wait_ms: float = 5.0, trusted: Iterable[str] = (),
               encoder_options: Mapping[str, Any] | None = None,
               log_level: str = "info", device: str | None = None) -> None:
    """Load the model file and serve it with uvicorn until interrupted.

    Parameters are those of :func:`create_app`, plus where to listen and what
    :func:`mmfuse.persist.load` needs; ``device`` ("cpu", "cuda" or "auto"), if given,
    moves the model's encoders and learned heads there (:func:`mmfuse.devices.to_device`).
    Blocks; Ctrl-C stops it.
    """
    uvicorn = require("uvicorn", "serve")
    from .persist import load

    started = time.perf_counter()
    model = load(model_path, trusted=trusted, encoder_options=encoder_options)
    if device is not None:
        from .devices import resolve_device, to_device

        to_device(model, resolve_device(device))
    logger.info("loaded %s in %.2f s", os.fspath(model_path), time.perf_counter() - started)
    app = create_app(model, max_upload_bytes=max_upload_bytes, max_text_chars=max_text_chars,
                     batch_max=batch_max, batch_wait_ms=batch_wait_ms)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


class ServerThread:
    """Serve an app with uvicorn in a background thread (tests, benchmarks, notebooks).

    Port 0 picks a free port; ``url`` tells which. Use as a context manager::

        with ServerThread(create_app(model)) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning"):
        import socket

        uvicorn = require("uvicorn", "serve")
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                lifespan="on")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
