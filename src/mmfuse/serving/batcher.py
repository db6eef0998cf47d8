"""Micro-batching: a queue and one worker that groups the requests arriving within a short
wait, so concurrent clients share one encoder call per modality."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger("mmfuse.serve")


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


class Batcher:
    """Groups concurrent requests: a queue and one worker that runs batches in a thread."""

    def __init__(self, fn: Callable[[list[Any]], np.ndarray], batch_max: int, wait_s: float,
                 stats: ServiceStats, metrics: Any = None):
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
