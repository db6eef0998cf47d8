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
* Production: API keys (``Authorization: Bearer`` or ``X-API-Key``, compared in constant
  time; ``/health`` stays open), TLS through uvicorn, a bound on the requests held at once
  (``max_queue``: above it 503 with ``Retry-After`` at once), a per-request timeout (503),
  graceful shutdown on SIGTERM (in-flight requests finish, bounded by a drain timeout),
  Prometheus metrics at ``/metrics`` (a per-app registry) and an access log that holds
  method, path, status, latency and size only: no texts, file names or keys.
"""

# No `from __future__ import annotations` here: FastAPI reads the route functions'
# annotations (Request) at run time, and they are imported inside create_app.
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import logging
import logging.config
import math
import os
import signal
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
access_logger = logging.getLogger("mmfuse.access")

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_TEXT_CHARS = 10_000
DEFAULT_MAX_QUEUE = 64
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_DRAIN_TIMEOUT = 30.0
API_KEYS_ENV = "MMFUSE_API_KEYS"
# Paths anyone may call when API keys are set: liveness says nothing about the model.
_OPEN_PATHS = frozenset({"/health"})
_RETRY_AFTER_S = 1
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

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

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
    #: views that read several request fields (tabular): view -> encoder
    tables: dict[str, Any] = field(default_factory=dict)


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


# -- API keys, metrics, access log -------------------------------------------------------------


def load_api_keys(path: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """API keys from a key file and from ``$MMFUSE_API_KEYS``.

    Parameters
    ----------
    path : path-like, optional
        A text file with one key per line; blank lines and lines starting with ``#`` are
        skipped.
    environ : mapping, optional
        Where to read ``MMFUSE_API_KEYS`` (keys separated by commas or whitespace); default
        ``os.environ``.

    Returns
    -------
    list of str
        Every key from both sources, file first; empty when neither gives one.

    Raises
    ------
    InputError
        The file cannot be read, holds no key, or a key has characters a header cannot
        carry. Messages name the file and line, never a key.
    """
    environ = os.environ if environ is None else environ
    keys: list[str] = []
    if path is not None:
        try:
            text = open(os.fspath(path), encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot read the API key file {os.fspath(path)!r}: "
                             f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"the API key file {os.fspath(path)!r} is not UTF-8 text") from None
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            _check_key(key, f"line {number} of the API key file {os.fspath(path)!r}")
            found.append(key)
        if not found:
            raise InputError(f"the API key file {os.fspath(path)!r} holds no key; expected one "
                             f"key per line")
        keys += found
    for i, key in enumerate(environ.get(API_KEYS_ENV, "").replace(",", " ").split(), 1):
        _check_key(key, f"key {i} of ${API_KEYS_ENV}")
        keys.append(key)
    return keys


def _check_key(key: str, where: str) -> None:
    if not all(33 <= ord(c) <= 126 for c in key):
        raise InputError(f"{where}: a key must be printable ASCII without spaces (it travels in "
                         f"an HTTP header)")


class _KeyCheck:
    """Constant-time API key check; holds SHA-256 digests only, never the keys."""

    def __init__(self, keys: Iterable[str]):
        if isinstance(keys, str):
            raise InputError("api_keys must be a list of keys, not one string")
        self._digests = []
        for i, key in enumerate(keys, 1):
            if not isinstance(key, str):
                raise InputError(f"api_keys: key {i} must be a str; got {type(key).__name__}")
            _check_key(key, f"api_keys: key {i}")
            self._digests.append(hashlib.sha256(key.encode()).digest())

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"_KeyCheck({len(self._digests)} keys)"

    def verdict(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """``"ok"``, ``"missing"`` or ``"invalid"`` for a request's raw ASGI headers."""
        given = []
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    given.append(token.strip())
            elif name == b"x-api-key" and value.strip():
                given.append(value.strip())
        if not given:
            return "missing"
        ok = False
        for candidate in given:
            digest = hashlib.sha256(candidate).digest()
            for known in self._digests:  # every key compared: time does not depend on which
                ok |= hmac.compare_digest(digest, known)
        return "ok" if ok else "invalid"


class _Metrics:
    """The app's Prometheus metrics, in a registry of its own (never the global one)."""

    def __init__(self, model_id: str, spec: _ModelSpec, version: str, max_queue: int | None):
        from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, Info,
                                       ProcessCollector)

        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.requests = Counter("mmfuse_http_requests", "HTTP requests answered, by path, "
                                "method and status", ["path", "method", "status"], registry=r)
        self.latency = Histogram("mmfuse_http_request_duration_seconds", "Time from the "
                                 "request's arrival to the end of its answer, by path", ["path"],
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30,
                                          60), registry=r)
        self.rejected = Counter("mmfuse_predict_rejected", "Predict requests refused before the "
                                "model answered: overload (503 at once), timeout (503), "
                                "body_timeout (408)", ["reason"], registry=r)
        self.batch_size = Histogram("mmfuse_batch_size", "Requests per model batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=r)
        self.batch_seconds = Histogram("mmfuse_batch_duration_seconds", "Time the model takes "
                                       "per batch", registry=r)
        self.queue_depth = Gauge("mmfuse_queue_depth", "Requests waiting for the batch worker",
                                 registry=r)
        self.in_progress = Gauge("mmfuse_predict_in_progress", "Predict requests held now "
                                 "(reading, decoding, waiting for a batch or in one)", registry=r)
        limit = Gauge("mmfuse_predict_max_queue", "Most predict requests held at once "
                      "(--max-queue; 0: no bound)", registry=r)
        limit.set(max_queue or 0)
        Info("mmfuse_model", "The model served", registry=r).info({
            "model_id": str(model_id), "mmfuse_version": version,
            "fusion": str(spec.info.get("fusion")), "modalities": ",".join(spec.columns),
            "classes": str(len(spec.classes))})


class _Front:
    """ASGI middleware in front of the app: API keys, metrics and the access log.

    The access log and the metrics hold method, path, status, latency and size: never query
    strings, headers (so never keys), texts or file names.
    """

    def __init__(self, app: Any, *, keys: _KeyCheck, metrics: _Metrics,
                 known_paths: frozenset, access_log: bool):
        self.app = app
        self.keys = keys
        self.metrics = metrics
        self.known_paths = known_paths
        self.access_log = access_log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path, method = scope["path"], scope["method"]
        sent = {"status": 0, "bytes": 0}

        async def send_and_note(message: dict) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            verdict = "ok" if not self.keys or path in _OPEN_PATHS else self.keys.verdict(
                scope["headers"])
            if verdict == "ok":
                await self.app(scope, receive, send_and_note)
            else:
                await _unauthorized(verdict, send_and_note)
        except asyncio.CancelledError:
            sent["status"] = sent["status"] or 499  # client gone, or cut at the drain timeout
            raise
        finally:
            elapsed = time.perf_counter() - start
            label = path if path in self.known_paths else "other"
            status = sent["status"] or 500  # an error the outer middleware answers
            self.metrics.requests.labels(label, method, str(status)).inc()
            self.metrics.latency.labels(label).observe(elapsed)
            if self.access_log:
                access_logger.info("%s %s %d %.1f ms %d bytes", method,
                                   path if label != "other" else "(unknown path)", status,
                                   elapsed * 1000, sent["bytes"])


async def _unauthorized(verdict: str, send: Callable) -> None:
    if verdict == "missing":
        message = ("this service needs an API key: send 'Authorization: Bearer <key>' or "
                   "'X-API-Key: <key>'")
        challenge = b'Bearer realm="mmfuse"'
    else:
        message = "the API key is not valid"
        challenge = b'Bearer realm="mmfuse", error="invalid_token"'
    body = json.dumps(ApiError(401, "unauthorized", message).body()).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge)]})
    await send({"type": "http.response.body", "body": body})


# -- the app ---------------------------------------------------------------------------------


def create_app(model: Any, *, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, batch_max: int = 16,
               batch_wait_ms: float = 5.0, warm_up: bool = True,
               api_keys: Iterable[str] | None = None,
               max_queue: int | None = DEFAULT_MAX_QUEUE,
               request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
               access_log: bool = True, model_id: str | None = None) -> Any:
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
    api_keys : iterable of str, optional
        Keys that open every path but ``/health``, sent as ``Authorization: Bearer <key>``
        or ``X-API-Key: <key>``; a missing or wrong key is a 401. Only their SHA-256
        digests are kept. None or empty: no authentication.
    max_queue : int or None, default=64
        Most ``/predict`` requests held at once (being read, decoded, waiting for a batch or
        in one). Above it a request is answered 503 with ``Retry-After`` at once. None: no
        bound.
    request_timeout : float or None, default=30.0
        Seconds a ``/predict`` request may take once admitted; past it the answer is 503
        with ``Retry-After`` (408 if the client was still sending its body). None: no limit.
    access_log : bool, default=True
        Log one line per request to the ``mmfuse.access`` logger: method, path, status,
        latency and response size (never query strings, headers, texts or file names).
    model_id : str, optional
        Identifies the model in ``/metrics``; default: the SHA-256 of the model file's
        payload when the model was loaded from a file, else ``"unsaved"``.

    Returns
    -------
    fastapi.FastAPI
        ``app.state.metrics_registry`` holds the app's own Prometheus registry.
    """
    from . import __version__

    fastapi = require("fastapi", "serve")
    require("python_multipart", "serve")  # multipart parsing, checked now rather than per request
    require("prometheus_client", "serve")
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request

    for name, value in (("max_upload_bytes", max_upload_bytes), ("max_text_chars", max_text_chars),
                        ("batch_max", batch_max), ("max_queue", max_queue)):
        if name == "max_queue" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int; got {value!r}")
    if not isinstance(batch_wait_ms, (int, float)) or not 0 <= batch_wait_ms <= 10_000:
        raise InputError(f"batch_wait_ms must be between 0 and 10000; got {batch_wait_ms!r}")
    if request_timeout is not None and (isinstance(request_timeout, bool)
                                        or not isinstance(request_timeout, (int, float))
                                        or not 0 < request_timeout < math.inf):
        raise InputError(f"request_timeout must be a positive number of seconds or None; got "
                         f"{request_timeout!r}")
    keys = _KeyCheck(api_keys or ())

    spec = _model_spec(model, max_upload_bytes, max_text_chars, __version__)
    if model_id is None:
        model_id = (spec.info["model_file"] or {}).get("sha256") or "unsaved"
    stats = ServiceStats()
    metrics = _Metrics(model_id, spec, __version__, max_queue)
    batcher = _Batcher(lambda items: _predict_batch(model, spec, items), batch_max,
                       batch_wait_ms / 1000.0, stats, metrics)
    metrics.queue_depth.set_function(batcher.depth)
    limits = _BodyLimits(spec, max_upload_bytes, max_text_chars)
    admitted = [0]  # /predict requests held now
    metrics.in_progress.set_function(lambda: admitted[0])

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
                     f"uploads or base64 in JSON; errors are JSON with a 4xx status."
                     + (" Every path but /health needs an API key (Authorization: Bearer "
                        "<key>, or X-API-Key)." if keys else "")),
        lifespan=lifespan,
    )
    app.state.model = model
    app.state.stats = stats
    app.state.metrics_registry = metrics.registry

    def error_response(exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)

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

    @app.get("/health", summary="Liveness and batching statistics (open without a key)")
    async def health():
        return {"status": "ok", **stats.as_dict()}

    @app.get("/model", summary="What the model predicts and from which inputs")
    async def model_info():
        return spec.info

    @app.get("/metrics", summary="Prometheus metrics (text format)",
             response_class=Response)
    async def metrics_endpoint():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def parse(media: str, body: bytes, fields: list[_Field] | None) -> dict[str, Any]:
        if media == "application/json":
            return _items_from_json(body, spec, max_upload_bytes, max_text_chars)
        if fields is None:
            fields = _parse_urlencoded(body, len(spec.columns))
        return _items_from_fields(fields, spec, max_upload_bytes, max_text_chars)

    answer_model, error_model = _response_models()

    async def answer(request: Request, media: str, phase: list[str]) -> JSONResponse:
        body = await _read_body(request, limits.for_media(media))
        phase[0] = "predict"
        if not body:
            raise ApiError(400, "empty_request",
                           f"the request is empty; send at least one of the fields {spec.columns}")
        if not media:
            raise ApiError(415, "unsupported_media_type",
                           "the request has no content type; send multipart/form-data or "
                           "application/json")
        fields = None
        if media == "multipart/form-data":
            fields = await _parse_multipart(body, request.headers["content-type"], limits)
        # parsing megabytes (JSON, base64, text decoding) is CPU work: off the event loop
        items = await run_in_threadpool(parse, media, body, fields)
        prepared = await _prepare_all(model, spec, items, run_in_threadpool)
        used = [m for m in spec.used if m in prepared]
        if not used:
            given = sorted(items)
            raise ApiError(422, "no_usable_modality",
                           f"nothing usable to predict from: got {given or 'only empty fields'}; "
                           f"the model uses {spec.used}")
        if request.query_params.get("explain", "").lower() in ("1", "true", "yes"):
            exp = await run_in_threadpool(_explain_one, model, spec, prepared)
            body = _answer(model, spec, exp.proba[0], used, sorted(items))
            body["contributions"] = exp.rows()[0]
            body["explain_method"] = exp.method
            return JSONResponse(body)
        proba = await batcher.submit(prepared)
        return JSONResponse(_answer(model, spec, proba, used, sorted(items)))

    statuses = (400, 401, 408, 413, 415, 422, 503)

    @app.post("/predict", summary="Predict the class of one sample",
              openapi_extra=_openapi_request(spec, max_text_chars),
              responses={200: {"model": answer_model},
                         **{status: {"model": error_model} for status in statuses}})
    async def predict(request: Request):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media not in _MEDIA_TYPES:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media!r} is not accepted; send multipart/form-data "
                           f"(fields {spec.columns}) or application/json")
        if max_queue is not None and admitted[0] >= max_queue:
            metrics.rejected.labels("overload").inc()
            await _discard_body(request, limits.for_media(media))
            raise ApiError(503, "overloaded",
                           f"the service already holds its limit of {max_queue} requests; "
                           f"retry after {_RETRY_AFTER_S} s",
                           headers={"Retry-After": str(_RETRY_AFTER_S)})
        admitted[0] += 1
        phase = ["body"]
        deadline = asyncio.timeout(request_timeout)
        try:
            async with deadline:
                return await answer(request, media, phase)
        except TimeoutError:
            if not deadline.expired():
                raise
            if phase[0] == "body":
                metrics.rejected.labels("body_timeout").inc()
                raise ApiError(408, "request_timeout",
                               f"the request body did not arrive within {request_timeout} s",
                               headers={"Connection": "close"}) from None
            metrics.rejected.labels("timeout").inc()
            raise ApiError(503, "timeout",
                           f"the service could not answer within {request_timeout} s; retry "
                           f"after {_RETRY_AFTER_S} s",
                           headers={"Retry-After": str(_RETRY_AFTER_S)}) from None
        finally:
            admitted[0] -= 1

    known = frozenset(route.path for route in app.routes)
    app.add_middleware(_Front, keys=keys, metrics=metrics, known_paths=known,
                       access_log=access_log)
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
    tables = {c: model.encoders_[c] for c in columns
              if getattr(model.encoders_[c], "multi_column", False)}
    for c, enc in tables.items():
        info["encoders"][c]["columns"] = list(enc.input_columns)  # the request's fields
    return _ModelSpec(columns, kinds, used, dims, classes, info, tables)


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


async def _discard_body(request: Any, limit: int) -> None:
    """Read and drop the body (bounded), so a refused client gets its answer cleanly."""
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit + _DRAIN_BYTES:
            break


async def _parse_multipart(body: bytes, content_type: str, limits: _BodyLimits) -> list[_Field]:
    """Parse multipart/form-data with Starlette's parser (python-multipart), in memory."""
    from starlette.datastructures import Headers, UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def stream():
        yield body

    parser = MultiPartParser(Headers({"content-type": content_type}), stream(),
                             max_files=limits.max_parts, max_fields=limits.max_parts,
                             max_part_size=limits.part)
    # the whole body is in memory already: files stay there too, never in temporary files
    parser.spool_max_size = limits.multipart + 1
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        status, code = ((413, "field_too_large") if "maximum size" in exc.message
                        else (422, "too_many_fields") if "Too many" in exc.message
                        else (400, "bad_multipart"))
        raise ApiError(status, code, f"malformed or oversize multipart body: {exc.message}"
                       ) from None
    fields = []
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                ctype = (value.content_type or "").split(";")[0].strip().lower()
                fields.append(_Field(name=name, data=await value.read(), is_file=True,
                                     content_type=ctype, filename=value.filename))
            else:
                fields.append(_Field(name=name, data=value, is_file=False))
    finally:
        await form.close()
    if not fields:
        raise ApiError(400, "bad_multipart", "the multipart body holds no fields")
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
    table_cols = {c for enc in spec.tables.values() for c in enc.input_columns}
    cells = {}
    for f in fields:
        if f.name in table_cols:
            if f.name in cells:
                raise ApiError(422, "duplicate_field", f"field {f.name!r} is given more than "
                               f"once", field=f.name)
            data = f.data if isinstance(f.data, str) else f.data.decode("utf-8", "replace")
            cells[f.name] = data if data.strip() else None
    _, tables = _table_items(cells, spec)
    fields = [f for f in fields if f.name not in table_cols]
    _check_names([f.name for f in fields], spec)
    items: dict[str, Any] = dict(tables)
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
    doc, tables = _table_items(doc, spec)
    _check_names(list(doc), spec)
    items: dict[str, Any] = dict(tables)
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


def _table_items(doc: dict[str, Any], spec: _ModelSpec) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields of tabular views (named after their columns) as one row item per view."""
    if not spec.tables:
        return doc, {}
    from .encoders.tabular import gather_fields

    try:
        return gather_fields(doc, spec.tables)
    except InputError as exc:
        raise ApiError(422, "bad_value", str(exc)) from None


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


def _explain_one(model: Any, spec: _ModelSpec, prepared: dict[str, Any]) -> Any:
    """Probabilities and modality contributions of one decoded request (``explain=true``),
    outside the micro-batcher (see :mod:`mmfuse.explain`)."""
    from .explain import explain_views
    from .views import check_views

    views: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray] = {}
    for col in spec.columns:
        mask = np.array([col in prepared])
        if spec.kinds[col] == "features":
            dim = spec.dims[col] or (len(prepared[col]) if col in prepared else 1)
            view = (np.asarray(prepared[col], np.float32).reshape(1, -1) if col in prepared
                    else np.full((1, dim), np.nan, np.float32))
        else:
            view = model.encoders_[col].assemble([prepared[col]] if col in prepared else [],
                                                 mask)
        views[col], present[col] = view, mask
    views, present = check_views(views, present)
    return explain_views(model.fusion_, views, present)


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
                 stats: ServiceStats, metrics: "_Metrics | None" = None):
        self.fn = fn
        self.batch_max = batch_max
        self.wait_s = wait_s
        self.stats = stats
        self.metrics = metrics
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

    def depth(self) -> int:
        """Requests waiting in the queue (not yet taken into a batch)."""
        return self.queue.qsize() if self.queue is not None else 0

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
            started = time.perf_counter()
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
            if self.metrics is not None:
                self.metrics.batch_size.observe(len(batch))
                self.metrics.batch_seconds.observe(time.perf_counter() - started)
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
               log_level: str = "info", api_keys: Iterable[str] | None = None,
               api_key_file: str | os.PathLike | None = None,
               ssl_certfile: str | os.PathLike | None = None,
               ssl_keyfile: str | os.PathLike | None = None,
               ssl_keyfile_password: str | None = None,
               max_queue: int | None = DEFAULT_MAX_QUEUE,
               request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
               drain_timeout: float = DEFAULT_DRAIN_TIMEOUT, access_log: bool = True,
               device: str | None = None) -> None:
    """Load the model file and serve it with uvicorn until SIGTERM or Ctrl-C.

    Parameters are those of :func:`create_app`, plus where to listen, what
    :func:`mmfuse.persist.load` needs, and:

    api_key_file : path-like, optional
        One key per line (see :func:`load_api_keys`). Keys in ``$MMFUSE_API_KEYS`` and in
        ``api_keys`` are accepted too; with none of them the service is unauthenticated and
        says so at start-up (a warning when ``host`` is not a loopback address).
    ssl_certfile, ssl_keyfile, ssl_keyfile_password : optional
        PEM certificate (chain) and private key: the service speaks HTTPS only. They are
        loaded before the model, so a wrong file fails at once with a clear error.
    drain_timeout : float, default=30.0
        On SIGTERM (or Ctrl-C) the service stops accepting connections and lets in-flight
        requests finish for up to this many seconds, then stops; the call returns normally
        (a process running it exits 0).
    log_level : str, default="info"
        Level of uvicorn's and mmfuse's loggers; ``"info"`` shows the access log.
    device : {"cpu", "cuda", "auto"}, optional
        If given, the model's encoders and learned heads move there
        (:func:`mmfuse.devices.to_device`).

    Blocks until stopped.
    """
    uvicorn = require("uvicorn", "serve")
    from .persist import load

    if not isinstance(drain_timeout, (int, float)) or isinstance(drain_timeout, bool) \
            or not 0 <= drain_timeout < math.inf:
        raise InputError(f"drain_timeout must be a non-negative number of seconds; got "
                         f"{drain_timeout!r}")
    keys = load_api_keys(api_key_file) + list(api_keys or ())
    _check_tls(ssl_certfile, ssl_keyfile, ssl_keyfile_password)
    log_config = _log_config(log_level)
    logging.config.dictConfig(log_config)  # now, so that the notices below show
    for level, message in _startup_notices(host, port, len(keys), ssl_certfile is not None):
        logger.log(level, "%s", message)

    started = time.perf_counter()
    model = load(model_path, trusted=trusted, encoder_options=encoder_options)
    if device is not None:
        from .devices import resolve_device, to_device

        to_device(model, resolve_device(device))
    logger.info("loaded the model in %.2f s", time.perf_counter() - started)
    app = create_app(model, max_upload_bytes=max_upload_bytes, max_text_chars=max_text_chars,
                     batch_max=batch_max, batch_wait_ms=batch_wait_ms, api_keys=keys,
                     max_queue=max_queue, request_timeout=request_timeout,
                     access_log=access_log)
    server = uvicorn.Server(uvicorn.Config(
        app, host=host, port=port, log_level=log_level, workers=1, log_config=log_config,
        access_log=False, server_header=False, timeout_graceful_shutdown=drain_timeout,
        ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        ssl_keyfile_password=ssl_keyfile_password))
    received: list[int] = []

    def note(number: int, frame: Any) -> None:
        received.append(number)
        server.should_exit = True

    previous = {}
    if threading.current_thread() is threading.main_thread():
        # uvicorn handles SIGTERM/SIGINT itself (stop accepting, drain, shut down) and then
        # re-raises the signal to the handler it found: ours notes it, rather than the default
        # handler killing the process (status -15) after a clean drain.
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, note)
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        logger.info("stopped after %s; in-flight requests were drained",
                    signal.Signals(received[0]).name)


def _check_tls(certfile: Any, keyfile: Any, password: str | None) -> None:
    if certfile is None:
        if keyfile is not None:
            raise InputError("ssl_keyfile was given without ssl_certfile; give both (or a "
                             "certfile that holds the key too)")
        return
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(os.fspath(certfile), None if keyfile is None else
                                os.fspath(keyfile), password)
    except OSError as exc:
        if isinstance(exc, ssl.SSLError):
            raise InputError(f"the TLS certificate {os.fspath(certfile)!r} and key "
                             f"{None if keyfile is None else os.fspath(keyfile)!r} could not "
                             f"be loaded ({exc.reason or exc}); expected PEM files of a "
                             f"certificate and its private key") from None
        raise InputError(f"cannot read the TLS file {exc.filename or os.fspath(certfile)!r}: "
                         f"{exc.strerror or exc}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _startup_notices(host: str, port: int, n_keys: int, tls: bool) -> list[tuple[int, str]]:
    """What the service says about its exposure at start-up: ``(logging level, message)``."""
    where = f"{'https' if tls else 'http'}://{host}:{port}"
    loopback = _is_loopback(host)
    notices = []
    if n_keys:
        notices.append((logging.INFO, f"API keys required ({n_keys} accepted) on every path "
                        f"but /health at {where}"))
        if not loopback and not tls:
            notices.append((logging.WARNING, f"listening on {host} without TLS: API keys and "
                            f"uploads cross the network in clear text; give --ssl-certfile/"
                            f"--ssl-keyfile or put a TLS-terminating proxy in front"))
    elif loopback:
        notices.append((logging.INFO, f"unauthenticated: any local process can use {where}; "
                        f"give --api-key-file or ${API_KEYS_ENV} to require a key"))
    else:
        notices.append((logging.WARNING, f"unauthenticated on {host}: anyone who can reach "
                        f"{where} can use the model; give --api-key-file or ${API_KEYS_ENV} "
                        f"to require a key"))
    return notices


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging set-up, plus mmfuse's loggers (messages to stderr, access to stdout)."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["handlers"]["mmfuse_access"] = {"formatter": "default", "class": "logging.StreamHandler",
                                           "stream": "ext://sys.stdout"}
    config["loggers"]["mmfuse"] = {"handlers": ["default"], "level": level.upper(),
                                   "propagate": False}
    config["loggers"]["mmfuse.access"] = {"handlers": ["mmfuse_access"], "level": level.upper(),
                                          "propagate": False}
    return config
