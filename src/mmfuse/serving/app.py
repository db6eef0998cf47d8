"""HTTP inference (the app): a FastAPI app around a fitted model, served by uvicorn.

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
import logging
import math
from collections.abc import Iterable
from contextlib import asynccontextmanager
from typing import Any

from .._errors import InputError, require
from .auth import KeyCheck
from .batcher import Batcher, ServiceStats
from .middleware import Front, Metrics
from .model import (answer_body, explain_one, model_spec, predict_batch, prepare_items,
                    warm_up_model)
from .openapi import openapi_request, response_models
from .errors import ApiError, install_error_handlers
from .requests import (MEDIA_TYPES, BodyLimits, Field, discard_body, items_from_fields,
                       items_from_json, parse_multipart, parse_urlencoded, read_body)

logger = logging.getLogger("mmfuse.serve")

DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_MAX_TEXT_CHARS = 10_000
DEFAULT_MAX_QUEUE = 64
DEFAULT_REQUEST_TIMEOUT = 30.0
RETRY_AFTER_S = 1


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
    from .. import __version__

    fastapi = require("fastapi", "serve")
    require("python_multipart", "serve")  # multipart parsing, checked now rather than per request
    require("prometheus_client", "serve")
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request

    _check_options(max_upload_bytes, max_text_chars, batch_max, max_queue, batch_wait_ms,
                   request_timeout)
    keys = KeyCheck(api_keys or ())

    spec = model_spec(model, max_upload_bytes, max_text_chars, __version__)
    if model_id is None:
        model_id = (spec.info["model_file"] or {}).get("sha256") or "unsaved"
    stats = ServiceStats()
    metrics = Metrics(model_id, spec, __version__, max_queue)
    batcher = Batcher(lambda items: predict_batch(model, spec, items), batch_max,
                       batch_wait_ms / 1000.0, stats, metrics)
    metrics.queue_depth.set_function(batcher.depth)
    route = PredictRoute(model, spec, batcher, metrics, max_upload_bytes, max_text_chars,
                         max_queue, request_timeout)
    metrics.in_progress.set_function(lambda: route.admitted)

    @asynccontextmanager
    async def lifespan(app: Any):
        if warm_up:
            await run_in_threadpool(warm_up_model, model)
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

    install_error_handlers(app, stats)
    _add_info_routes(app, spec, stats, metrics)
    answer_model, error_model = response_models()
    statuses = (400, 401, 408, 413, 415, 422, 503)

    @app.post("/predict", summary="Predict the class of one sample",
              openapi_extra=openapi_request(spec, max_text_chars),
              responses={200: {"model": answer_model},
                         **{status: {"model": error_model} for status in statuses}})
    async def predict(request: Request):
        return await route(request)

    known = frozenset(route.path for route in app.routes)
    app.add_middleware(Front, keys=keys, metrics=metrics, known_paths=known,
                       access_log=access_log)
    return app


class PredictRoute:
    """``POST /predict``: admission against ``max_queue``, the request's deadline, reading and
    parsing the body, encoding the sample, then the batched prediction (or, with
    ``explain=true``, the explanation). ``admitted`` counts the requests held now."""

    def __init__(self, model: Any, spec: Any, batcher: Batcher, metrics: Metrics,
                 max_upload_bytes: int, max_text_chars: int, max_queue: int | None,
                 request_timeout: float | None):
        self.model, self.spec, self.batcher, self.metrics = model, spec, batcher, metrics
        self.max_upload_bytes, self.max_text_chars = max_upload_bytes, max_text_chars
        self.limits = BodyLimits(spec, max_upload_bytes, max_text_chars)
        self.max_queue, self.request_timeout = max_queue, request_timeout
        self.admitted = 0

    async def __call__(self, request: Any) -> Any:
        spec, metrics = self.spec, self.metrics
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media and media not in MEDIA_TYPES:
            raise ApiError(415, "unsupported_media_type",
                           f"content type {media!r} is not accepted; send multipart/form-data "
                           f"(fields {spec.columns}) or application/json")
        if self.max_queue is not None and self.admitted >= self.max_queue:
            metrics.rejected.labels("overload").inc()
            await discard_body(request, self.limits.for_media(media))
            raise ApiError(503, "overloaded",
                           f"the service already holds its limit of {self.max_queue} requests; "
                           f"retry after {RETRY_AFTER_S} s",
                           headers={"Retry-After": str(RETRY_AFTER_S)})
        self.admitted += 1
        phase = ["body"]
        deadline = asyncio.timeout(self.request_timeout)
        try:
            async with deadline:
                return await self._answer(request, media, phase)
        except TimeoutError:
            if not deadline.expired():
                raise
            if phase[0] == "body":
                metrics.rejected.labels("body_timeout").inc()
                raise ApiError(408, "request_timeout",
                               f"the request body did not arrive within {self.request_timeout} s",
                               headers={"Connection": "close"}) from None
            metrics.rejected.labels("timeout").inc()
            raise ApiError(503, "timeout",
                           f"the service could not answer within {self.request_timeout} s; "
                           f"retry after {RETRY_AFTER_S} s",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        finally:
            self.admitted -= 1

    def _parse(self, media: str, body: bytes, fields: list[Field] | None) -> dict[str, Any]:
        if media == "application/json":
            return items_from_json(body, self.spec, self.max_upload_bytes, self.max_text_chars)
        if fields is None:
            fields = parse_urlencoded(body, len(self.spec.columns))
        return items_from_fields(fields, self.spec, self.max_upload_bytes, self.max_text_chars)

    async def _answer(self, request: Any, media: str, phase: list[str]) -> Any:
        from fastapi.responses import JSONResponse
        from starlette.concurrency import run_in_threadpool

        model, spec = self.model, self.spec
        body = await read_body(request, self.limits.for_media(media))
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
            fields = await parse_multipart(body, request.headers["content-type"], self.limits)
        # parsing megabytes (JSON, base64, text decoding) is CPU work: off the event loop
        items = await run_in_threadpool(self._parse, media, body, fields)
        prepared = await prepare_items(model, spec, items, run_in_threadpool)
        used = [m for m in spec.used if m in prepared]
        if not used:
            given = sorted(items)
            raise ApiError(422, "no_usable_modality",
                           f"nothing usable to predict from: got {given or 'only empty fields'}; "
                           f"the model uses {spec.used}")
        if request.query_params.get("explain", "").lower() in ("1", "true", "yes"):
            exp = await run_in_threadpool(explain_one, model, spec, prepared)
            body = answer_body(model, spec, exp.proba[0], used, sorted(items))
            body["contributions"] = exp.rows()[0]
            body["explain_method"] = exp.method
            return JSONResponse(body)
        proba = await self.batcher.submit(prepared)
        return JSONResponse(answer_body(model, spec, proba, used, sorted(items)))


def _add_info_routes(app: Any, spec: Any, stats: ServiceStats, metrics: Metrics) -> None:
    """``/health`` (open without a key), ``/model`` and ``/metrics``."""
    from fastapi.responses import Response

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


def _check_options(max_upload_bytes: int, max_text_chars: int, batch_max: int,
                   max_queue: int | None, batch_wait_ms: float,
                   request_timeout: float | None) -> None:
    """Refuse limits that are not positive numbers (scikit-learn style: a clear error)."""
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
