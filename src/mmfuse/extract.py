"""Streaming feature extraction: decode in a small pool of threads while the model runs.

::

    samples ──► chunks of ``batch_size`` ──► worker threads: content hash, cache lookup,
                (bounded: at most ``prefetch``      decode + preprocess the misses
                 chunks in flight)                         │
                                                           ▼
    features[rows] ◄── cache.put (one transaction) ◄── encoder.embed(batch) (main thread)

Decoding (Pillow, libsndfile, ONNX Runtime's mel model) releases the GIL, so threads
overlap I/O and preprocessing with the model. At most ``prefetch`` chunks are in flight and
one batch waits for the model, so memory does not grow with the number of samples (only the
output matrix does; :func:`iter_features` avoids even that).

Everything is a pure function of (encoder, samples, options): no global state, so a
partition of a table can be extracted on another machine (Dask) with the same result.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._errors import InputError
from .cache import FeatureCache, content_key
from .encoders.base import ON_ERROR, Encoder, ItemError, MissingItem, describe_item, is_missing

log = logging.getLogger(__name__)

__all__ = ["Extraction", "FeatureBatch", "extract_features", "iter_features"]

Progress = Callable[[int, int], Any]

# Outcome of one item in a worker.
_MISSING, _HIT, _PREPARED, _ERROR = range(4)


class Extraction(NamedTuple):
    """What :func:`extract_features` returns (unpacks as ``features, present, errors``)."""

    features: np.ndarray
    present: np.ndarray
    errors: list[ItemError]


@dataclass
class FeatureBatch:
    """One batch from :func:`iter_features`: ``features[i]`` belongs to sample ``rows[i]``."""

    rows: np.ndarray
    features: np.ndarray
    errors: list[ItemError] = field(default_factory=list)
    cache_hits: int = 0


def extract_features(
    encoder: Encoder,
    samples: Sequence[Any],
    *,
    cache: bool | FeatureCache | None = True,
    batch_size: int | None = None,
    workers: int | None = None,
    on_error: str = "raise",
    progress: Progress | None = None,
    column: str | None = None,
    prefetch: int | None = None,
    stats: dict[str, Any] | None = None,
) -> Extraction:
    """Features of every sample, streamed and cached; the rows ``encoder.transform`` gives.

    Parameters
    ----------
    encoder : Encoder
        A fitted encoder (pretrained and classical stateless ones need no fitting).
    samples : sequence
        Raw items of the encoder's modality (paths, arrays, strings, (waveform, rate));
        ``None``, NaN and ``""`` are missing rows.
    cache : bool, FeatureCache or None, default=True
        ``True``: the default cache (``$MMFUSE_CACHE`` or the user cache dir); a
        :class:`~mmfuse.cache.FeatureCache`: that one; ``None``/``False``: no cache.
        Encoders that learn from data (``stateless = False``) are never cached, nor
        those that compute faster than a lookup (``cache_worthy = False``), unless a
        FeatureCache is passed explicitly.
    batch_size : int, optional
        Items per model call; default: the encoder's ``effective_batch_size`` if it has
        one (32 on the CPU, 256 for the PyTorch CUDA path), else 32.
    workers : int, optional
        Decoding threads; 0 decodes in the calling thread (no overlap). Default: the
        encoder's ``decode_workers`` if it has one (2 on the CPU, one per core up to 16 on
        CUDA, so decoding keeps up with the GPU), else 2.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable item does: raise :class:`~mmfuse.InputError` naming its row, or
        become a NaN row reported in ``errors``. Applied per item: the rest of its batch
        goes on.
    progress : callable, optional
        Called as ``progress(done, total)`` after each batch.
    column : str, optional
        Column name used in error messages.
    prefetch : int, optional
        Chunks decoded ahead of the model (default ``workers + 1``); bounds memory.
    stats : dict, optional
        Filled with counts (``rows``, ``present``, ``cache_hits``, ``computed``,
        ``errors``) and ``seconds``.

    Returns
    -------
    Extraction
        ``(features, present, errors)``: float32 ``(n, encoder.dim)`` with NaN rows where
        the item is missing or was skipped, the boolean mask of present rows, and the
        :class:`~mmfuse.encoders.ItemError` list.

    Examples
    --------
    >>> from mmfuse.encoders import create_encoder                  # doctest: +SKIP
    >>> X, present, errors = extract_features(create_encoder("efficientnet-lite0"),
    ...                                       ["a.jpg", None, "b.png"])  # doctest: +SKIP
    """
    samples = samples if isinstance(samples, Sequence) else list(samples)
    n = len(samples)
    features = np.full((n, encoder.dim), np.nan, dtype=np.float32)
    present = np.zeros(n, dtype=bool)
    errors: list[ItemError] = []
    for batch in iter_features(encoder, samples, cache=cache, batch_size=batch_size,
                               workers=workers, on_error=on_error, progress=progress,
                               column=column, prefetch=prefetch, stats=stats):
        features[batch.rows] = batch.features
        present[batch.rows] = True
        errors.extend(batch.errors)
    errors.sort(key=lambda e: e.row)
    return Extraction(features, present, errors)


def iter_features(
    encoder: Encoder,
    samples: Sequence[Any],
    *,
    cache: bool | FeatureCache | None = True,
    batch_size: int | None = None,
    workers: int | None = None,
    on_error: str = "raise",
    progress: Progress | None = None,
    column: str | None = None,
    prefetch: int | None = None,
    stats: dict[str, Any] | None = None,
) -> Iterator[FeatureBatch]:
    """Like :func:`extract_features`, but yields :class:`FeatureBatch` es as they are ready,
    so nothing of size n is held in memory (write them to disk, reduce them, ...).

    Batches come in input order; rows that hit the cache come in their own batches.
    """
    if on_error not in ON_ERROR:
        raise InputError(f"on_error must be one of {ON_ERROR}; got {on_error!r}")
    if batch_size is None:
        batch_size = _preference(encoder, "effective_batch_size", 32)
    if workers is None:
        workers = _preference(encoder, "decode_workers", 2)
    for label, value, low in (("batch_size", batch_size, 1), ("workers", workers, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InputError(f"{label} must be an int >= {low}; got {value!r}")
    if prefetch is None:
        prefetch = workers + 1
    elif not isinstance(prefetch, (int, np.integer)) or prefetch < 1:
        raise InputError(f"prefetch must be a positive int; got {prefetch!r}")
    store = _resolve_cache(cache, encoder)
    total = len(samples)
    counts = {"rows": total, "present": 0, "cache_hits": 0, "computed": 0, "errors": 0}
    started = time.perf_counter()
    job = _Job(encoder, store, on_error, column)
    if store is not None:
        job.fingerprint = encoder.fingerprint  # hashes the weights once, up front

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmfuse-decode") \
        if workers > 0 else None
    pending: deque[Future | list] = deque()
    chunks = _chunks(samples, batch_size)
    done = 0
    rows: list[int] = []
    prepared: list[Any] = []
    keys: list[str | None] = []
    try:
        def submit_more() -> None:
            while len(pending) < prefetch:
                chunk = next(chunks, None)
                if chunk is None:
                    return
                pending.append(pool.submit(job.run, chunk) if pool else job.run(chunk))

        submit_more()
        while pending:
            head = pending.popleft()
            results = head.result() if isinstance(head, Future) else head
            submit_more()  # keep the workers busy while this chunk is embedded
            hit_rows: list[int] = []
            hit_vectors: list[np.ndarray] = []
            batch_errors: list[ItemError] = []
            for row, outcome, payload, key in results:
                if outcome == _PREPARED:
                    rows.append(row)
                    prepared.append(payload)
                    keys.append(key)
                elif outcome == _HIT:
                    hit_rows.append(row)
                    hit_vectors.append(payload)
                elif outcome == _ERROR:
                    batch_errors.append(payload)
            done += len(results)
            counts["errors"] += len(batch_errors)
            if hit_rows or batch_errors:
                counts["cache_hits"] += len(hit_rows)
                counts["present"] += len(hit_rows)
                yield FeatureBatch(
                    np.asarray(hit_rows, dtype=np.intp),
                    np.stack(hit_vectors) if hit_vectors
                    else np.empty((0, encoder.dim), np.float32),
                    batch_errors, cache_hits=len(hit_rows))
            while len(prepared) >= batch_size or (prepared and not pending):
                batch = _embed(job, rows[:batch_size], prepared[:batch_size], keys[:batch_size])
                del rows[:batch_size], prepared[:batch_size], keys[:batch_size]
                counts["computed"] += len(batch.rows)
                counts["present"] += len(batch.rows)
                yield batch
            if progress is not None:
                progress(done - len(prepared), total)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if stats is not None:
            stats.update(counts, seconds=time.perf_counter() - started)
    if progress is not None and total == 0:
        progress(0, 0)


def _preference(encoder: Encoder, name: str, default: int) -> int:
    """An encoder's preferred batch size / worker count (a property that may need its
    parameters to be valid: a bad one is reported when the model loads, not here)."""
    try:
        value = getattr(encoder, name, default)
    except Exception:  # noqa: BLE001
        return default
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _resolve_cache(cache: bool | FeatureCache | None, encoder: Encoder) -> FeatureCache | None:
    if cache is None or cache is False:
        return None
    if not getattr(encoder, "stateless", True):
        return None  # its output depends on what it was fitted on, not in the fingerprint
    if cache is True:
        return FeatureCache() if getattr(encoder, "cache_worthy", True) else None
    if isinstance(cache, FeatureCache):
        return cache
    raise InputError(f"cache must be True, False, None or a FeatureCache; got {cache!r}")


def _chunks(samples: Sequence[Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    for start in range(0, len(samples), size):
        yield [(row, samples[row]) for row in range(start, min(start + size, len(samples)))]


class _Job:
    """The per-chunk work of a decoding thread: hash, look up, prepare the misses."""

    def __init__(self, encoder: Encoder, store: FeatureCache | None, on_error: str,
                 column: str | None):
        self.encoder = encoder
        self.store = store
        self.on_error = on_error
        self.column = column
        self.fingerprint = ""

    def run(self, chunk: list[tuple[int, Any]]) -> list[tuple[int, int, Any, str | None]]:
        encoder = self.encoder
        live = [(row, item) for row, item in chunk if not is_missing(item)]
        keys: dict[int, str | None] = {}
        found: dict[str, np.ndarray] = {}
        if self.store is not None and live:
            keys = {row: content_key(item, encoder.modality) for row, item in live}
            found = self.store.get_many(self.fingerprint, list(keys.values()), encoder.dim)
        out: list[tuple[int, int, Any, str | None]] = []
        for row, item in live:
            key = keys.get(row)
            if key is not None and key in found:
                out.append((row, _HIT, found[key], key))
                continue
            try:
                out.append((row, _PREPARED, encoder.prepare(item), key))
            except MissingItem:
                continue
            except InputError as exc:
                if self.on_error == "raise":
                    where = f"row {row}" + (f", column {self.column!r}" if self.column else "")
                    raise InputError(f"{where}: {exc}") from exc
                out.append((row, _ERROR, ItemError(row, self.column, describe_item(item),
                                                   str(exc)), key))
        return out


def _embed(job: _Job, rows: list[int], prepared: list[Any], keys: list[str | None]) -> FeatureBatch:
    encoder = job.encoder
    vectors = np.asarray(encoder.embed(prepared), dtype=np.float32)
    if vectors.shape != (len(prepared), encoder.dim):
        raise RuntimeError(f"encoder {encoder.name!r} returned shape {vectors.shape}, "
                           f"expected ({len(prepared)}, {encoder.dim})")
    if job.store is not None:
        job.store.put_many(job.fingerprint, keys, vectors)
    return FeatureBatch(np.asarray(rows, dtype=np.intp), vectors)
