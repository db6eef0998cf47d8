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
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._params import check_on_error
from ._errors import InputError
from ._io import read_and_hash
from .cache import FeatureCache, content_key
from .encoders.base import (NOT_ITEM_ERRORS, Encoder, ItemError, MissingItem,
                            describe_item, failure_message, is_missing, raise_item_error)

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
        ``errors``, ``not_cached``: features the cache failed to store) and ``seconds``.

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
    batch_size, workers, prefetch = _stream_options(encoder, on_error, batch_size, workers,
                                                    prefetch)
    store = _resolve_cache(cache, encoder)
    total = len(samples)
    counts = {"rows": total, "present": 0, "cache_hits": 0, "computed": 0, "errors": 0,
              "not_cached": 0}
    started = time.perf_counter()
    job = _Job(encoder, store, on_error, column)
    unsaved_before = store.not_cached if store is not None else 0
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
            hit_rows, hit_vectors, batch_errors = _sort_outcomes(results, rows, prepared, keys)
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
                counts["errors"] += len(batch.errors)
                yield batch
            if progress is not None:
                progress(done - len(prepared), total)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if store is not None:
            counts["not_cached"] = store.not_cached - unsaved_before
        if stats is not None:
            stats.update(counts, seconds=time.perf_counter() - started)
    if progress is not None and total == 0:
        progress(0, 0)


def _stream_options(encoder: Encoder, on_error: str, batch_size: int | None,
                    workers: int | None, prefetch: int | None) -> tuple[int, int, int]:
    """Checked ``(batch_size, workers, prefetch)``, defaults from the encoder's preferences."""
    check_on_error(on_error)
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
    return batch_size, workers, prefetch


def _sort_outcomes(results: list, rows: list[int], prepared: list[Any], keys: list[str | None]
                   ) -> tuple[list[int], list[np.ndarray], list[ItemError]]:
    """Append a prepared chunk's rows to the rows awaiting embedding; return its cache hits
    (rows, vectors) and its item errors."""
    hit_rows: list[int] = []
    hit_vectors: list[np.ndarray] = []
    errors: list[ItemError] = []
    for row, outcome, payload, key in results:
        if outcome == _PREPARED:
            rows.append(row)
            prepared.append(payload)
            keys.append(key)
        elif outcome == _HIT:
            hit_rows.append(row)
            hit_vectors.append(payload)
        elif outcome == _ERROR:
            errors.append(payload)
    return hit_rows, hit_vectors, errors



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
        self.described: dict[int, str] = {}

    def _fail(self, row: int, item: Any, exc: BaseException, key: str | None = None
              ) -> tuple[int, int, Any, str | None]:
        """One item's failure: raised (``on_error="raise"``) or reported as an ItemError."""
        if self.on_error == "raise":
            raise_item_error(exc, row, self.column, item)
        return (row, _ERROR, ItemError(row, self.column, describe_item(item),
                                       failure_message(exc, item)), key)

    def run(self, chunk: list[tuple[int, Any]]) -> list[tuple[int, int, Any, str | None]]:
        encoder = self.encoder
        live = [(row, item) for row, item in chunk if not is_missing(item)]
        keys: dict[int, str | None] = {}
        found: dict[str, np.ndarray] = {}
        out: list[tuple[int, int, Any, str | None]] = []
        if self.store is not None and live:
            readable = []
            for row, item in live:
                try:
                    item, keys[row] = self._key(item)
                except NOT_ITEM_ERRORS:
                    raise
                except Exception as exc:  # noqa: BLE001 - not a regular file, too large...
                    out.append(self._fail(row, item, exc))
                    continue
                readable.append((row, item))
            live = readable
            found = self.store.get_many(self.fingerprint, list(keys.values()), encoder.dim)
        for row, item in live:
            key = keys.get(row)
            if key is not None and key in found:
                out.append((row, _HIT, found[key], key))
                continue
            try:
                out.append((row, _PREPARED, encoder.prepare(item), key))
                self.described[row] = describe_item(item)  # named if the model fails on it
            except MissingItem:
                continue
            except NOT_ITEM_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad item never ends the run
                out.append(self._fail(row, item, exc, key))
        out.sort(key=lambda entry: entry[0])
        return out

    def _key(self, item: Any) -> tuple[Any, str | None]:
        """``(item to prepare, content key)``. A path is read once, bounded (regular files
        only): its bytes are hashed and then decoded, so the key is always the key of what
        was decoded, even if the file changes on disk meanwhile."""
        if isinstance(item, (str, os.PathLike)) and not (
                isinstance(item, str) and self.encoder.modality == "text"):
            data, digest = read_and_hash(item, self.encoder.modality)
            return data, "file:" + digest
        return item, content_key(item, self.encoder.modality)


def _embed(job: _Job, rows: list[int], prepared: list[Any], keys: list[str | None]
           ) -> FeatureBatch:
    """Embed one batch; if the model fails on it, embed item by item so that only the items
    it fails on become item errors (non-finite features are item errors too)."""
    encoder = job.encoder
    try:
        vectors = _embed_checked(encoder, prepared)
    except NOT_ITEM_ERRORS:
        raise
    except Exception:  # noqa: BLE001 - find the culprit(s) below
        vectors = None
    errors: list[ItemError] = []
    if vectors is None or not np.all(np.isfinite(vectors)):
        keep_rows, keep_vectors, keep_keys = [], [], []
        for i, (row, item) in enumerate(zip(rows, prepared)):
            try:
                vector = vectors[i] if vectors is not None else \
                    _embed_checked(encoder, [item])[0]
                if not np.all(np.isfinite(vector)):
                    raise InputError(f"encoder {encoder.name!r} gave NaN or infinite features "
                                     "for this item")
            except NOT_ITEM_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001
                if job.on_error == "raise":
                    where = f"row {row}" + (f", column {job.column!r}" if job.column else "")
                    cause = f"{job.described.get(row, '(prepared item)')}: " + (
                        str(exc) if isinstance(exc, InputError) else
                        f"encoder {encoder.name!r} failed on this item: "
                        f"{type(exc).__name__}: {exc}")
                    raise InputError(f"{where}: {cause}") from exc
                described = job.described.get(row, "(prepared item)")
                cause = f"{described}: " + (str(exc) if isinstance(exc, InputError) else
                                            f"encoder {encoder.name!r} failed on this item: "
                                            f"{type(exc).__name__}: {exc}")
                errors.append(ItemError(row, job.column, described, cause))
                continue
            keep_rows.append(row)
            keep_vectors.append(vector)
            keep_keys.append(keys[i])
        rows, keys = keep_rows, keep_keys
        vectors = np.stack(keep_vectors) if keep_vectors else \
            np.empty((0, encoder.dim), np.float32)
    for row in rows:
        job.described.pop(row, None)
    for error in errors:
        job.described.pop(error.row, None)
    if job.store is not None and len(rows):
        job.store.put_many(job.fingerprint, keys, vectors)
    return FeatureBatch(np.asarray(rows, dtype=np.intp), vectors, errors)


def _embed_checked(encoder: Encoder, prepared: list[Any]) -> np.ndarray:
    vectors = np.asarray(encoder.embed(prepared), dtype=np.float32)
    if vectors.shape != (len(prepared), encoder.dim):
        raise RuntimeError(f"encoder {encoder.name!r} returned shape {vectors.shape}, "
                           f"expected ({len(prepared)}, {encoder.dim})")
    return vectors
