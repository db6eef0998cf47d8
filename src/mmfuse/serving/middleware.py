"""ASGI middleware in front of the app: API keys, Prometheus metrics, the access log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from .auth import OPEN_PATHS, KeyCheck
from .model import ModelSpec
from .errors import ApiError

access_logger = logging.getLogger("mmfuse.access")


class Metrics:
    """The app's Prometheus metrics, in a registry of its own (never the global one)."""

    def __init__(self, model_id: str, spec: ModelSpec, version: str, max_queue: int | None):
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


class Front:
    """ASGI middleware in front of the app: API keys, metrics and the access log.

    The access log and the metrics hold method, path, status, latency and size: never query
    strings, headers (so never keys), texts or file names.
    """

    def __init__(self, app: Any, *, keys: KeyCheck, metrics: Metrics,
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
            verdict = "ok" if not self.keys or path in OPEN_PATHS else self.keys.verdict(
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
