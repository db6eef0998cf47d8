"""Writing a feature store: :func:`extract_store` plans shards of a manifest, computes
each one in this process or on Dask workers, and writes it atomically; an interrupted
run resumes with the missing shards."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError, require
from .plan import _iter_chunks, _plan
from .store import (HEADER, PATH_MODALITIES, ROW, SHARD_NAME, _META_KEY,
                    Progress)


@dataclass
class ExtractResult:
    """What :func:`extract_store` returns.

    ``failed`` lists one dict per failed item: ``row``, ``modality``, ``cause`` and, for
    image/audio items, ``file`` (kept out of the header unless ``record_paths=True``).
    """

    out: Path
    n_rows: int
    n_shards: int
    computed: int
    reused: int
    failed: list[dict[str, Any]]
    seconds: float
    header: dict[str, Any]
    workers: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        return self.n_rows / self.seconds if self.seconds > 0 else float("nan")


def extract_store(
    manifest: str | os.PathLike,
    columns: Mapping[str, str],
    out: str | os.PathLike,
    *,
    encoders: Mapping[str, str] | None = None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    rows_per_shard: int = 256,
    batch_size: int = 32,
    decode_threads: int = 2,
    on_error: str = "raise",
    record_paths: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ExtractResult:
    """Extract the features of every manifest row into a feature store at ``out``.

    Parameters
    ----------
    manifest : path to a CSV, TSV, JSONL or Parquet manifest (one row per sample)
    columns : dict of modality -> manifest column, e.g. ``{"image": "photo"}``
        Image and audio cells are file paths (relative ones are taken from the manifest's
        folder; several in one cell are mean-pooled, as a model's featurizer pools them);
        every worker must see them under the same path.
    out : path of the store folder (created; every worker must see it)
    encoders : dict of modality -> encoder name, optional
        Default ``hog`` for images and ``mfcc`` for audio; text needs a stateless text
        encoder: ``hashing`` (TF-IDF's hashed n-grams without the learned idf),
        ``minilm`` or ``wordllama``. Encoders that learn from data (``tfidf``,
        ``tfidf-hashed``) cannot be stored: their features depend on the training folds.
    scheduler : None, "local" or a Dask scheduler address, optional
        ``None``: this process (or ``$MMFUSE_SCHEDULER`` if set). ``"local"``: a
        ``LocalCluster`` of ``n_workers`` single-threaded processes. ``"tcp://host:8786"``:
        a running scheduler.
    n_workers : int, optional
        Workers of the local cluster (default: one per core).
    rows_per_shard : int, default=256
        Rows per task and per Parquet file. Part of the store's identity.
    batch_size : int, default=32
        Items per model call.
    decode_threads : int, default=2
        Decoding threads per task (they overlap decoding with the model).
    on_error : {"raise", "skip"}, default="raise"
        An unreadable item stops the run, or becomes an absent modality listed in
        ``failed``.
    record_paths : bool, default=False
        Also record the file of each failed image/audio item in the header.
    overwrite : bool, default=False
        Replace a store made with other arguments (else that is an error).
    progress : callable, optional
        ``progress(done_shards, total_shards)``.

    Returns
    -------
    ExtractResult
    """
    require("pyarrow", "parquet")
    started = time.perf_counter()
    manifest = Path(manifest)
    out = Path(out)
    job, plan = _plan(manifest, columns, encoders, out, rows_per_shard, batch_size,
                      decode_threads, on_error, record_paths)
    n_shards = plan["n_shards"]
    existing = _prepare_out(out, plan, overwrite)
    header = dict(plan, complete=False)
    from .._io import atomic_write_json

    atomic_write_json(out / HEADER, header)

    failed: dict[int, list[dict[str, Any]]] = {i: list(meta["failed"]) for i, meta in existing.items()}
    computed = 0
    workers: dict[str, Any] = {}
    if progress is not None:
        progress(len(existing), n_shards)

    def record(meta: dict[str, Any]) -> None:
        nonlocal computed
        computed += 1
        failed[meta["shard"]] = meta["failed"]
        w = workers.setdefault(str(meta["worker"]), {"shards": 0, "builds": 0})
        w["shards"] += 1
        w["builds"] += meta["builds"]
        if progress is not None:
            progress(len(failed), n_shards)

    def tasks() -> Iterator[tuple[int, pd.DataFrame]]:
        for index, chunk in enumerate(_iter_chunks(manifest, rows_per_shard, job)):
            if index in existing:
                _attach_files(failed[index], chunk, job)
                continue
            yield index, chunk

    from ..distributed import resolve_scheduler

    address = resolve_scheduler(scheduler)
    if address is None:
        for index, chunk in tasks():
            record(_extract_shard(job, index, chunk))
    else:
        from ..distributed import dask_client, run_bounded

        with dask_client(address, n_workers=n_workers) as client:
            # thread count does not change the output (checked by the tests); one per worker
            run_bounded(client, _extract_shard, dict(job, threads=1), tasks(), record,
                        key_prefix=f"mmfuse-shard-{plan['plan_id'][:12]}")
    _check_complete(out, plan)
    for tmp in out.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)  # left by a worker killed while writing
    all_failed = sorted((f for i in sorted(failed) for f in failed[i]),
                        key=lambda f: (f["row"], f["modality"]))
    header = dict(plan, complete=True, failed=[_public_failure(f, record_paths)
                                               for f in all_failed])
    atomic_write_json(out / HEADER, header)
    return ExtractResult(out, plan["n_rows"], n_shards, computed, len(existing), all_failed,
                         time.perf_counter() - started, header, workers)


def _prepare_out(out: Path, plan: Mapping[str, Any], overwrite: bool) -> dict[int, dict[str, Any]]:
    """Make ``out`` ready for ``plan``: the valid shards already there, by index."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    head = out / HEADER
    if head.is_file():
        try:
            old = json.loads(head.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = {}
        if old.get("plan_id") != plan["plan_id"]:
            if not overwrite:
                differs = [k for k in ("manifest_sha256", "n_rows", "columns", "encoders",
                                       "rows_per_shard", "kept_columns", "on_error",
                                       "record_paths") if old.get(k) != plan.get(k)]
                raise InputError(
                    f"{str(out)!r} holds a feature store made with other arguments (differs "
                    f"in: {', '.join(differs) or 'format'}); use --overwrite to replace it, or "
                    f"another --out")
            _remove_store(out)
    elif any(p for p in out.iterdir() if not p.name.startswith(".")):
        raise InputError(f"--out {str(out)!r} is a non-empty folder without a feature store; "
                         f"give a new or empty folder")
    existing: dict[int, dict[str, Any]] = {}
    for i in range(plan["n_shards"]):
        meta = _shard_meta(out / SHARD_NAME.format(i))
        if meta is not None and meta.get("plan_id") == plan["plan_id"] and meta.get("shard") == i:
            existing[i] = meta
    return existing


def _remove_store(out: Path) -> None:
    for p in list(out.glob("part-*.parquet")) + list(out.glob(".part-*.tmp")) + [out / HEADER]:
        p.unlink(missing_ok=True)


def _shard_meta(path: Path) -> dict[str, Any] | None:
    """The mmfuse metadata of a shard, or None if it is absent or unreadable."""
    if not path.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        md = pq.read_metadata(path).metadata or {}
        meta = json.loads(md[_META_KEY])
    except Exception:  # noqa: BLE001 - any unreadable shard is simply recomputed
        return None
    return meta if isinstance(meta, dict) else None


def _check_complete(out: Path, plan: Mapping[str, Any]) -> None:
    rows = 0
    for i in range(plan["n_shards"]):
        meta = _shard_meta(out / SHARD_NAME.format(i))
        if meta is None or meta.get("plan_id") != plan["plan_id"]:
            raise RuntimeError(f"shard {i} of {str(out)!r} is missing after extraction")
        rows += meta["stop"] - meta["start"]
    if rows != plan["n_rows"]:
        raise RuntimeError(f"{str(out)!r} holds {rows} rows; expected {plan['n_rows']}")


def _attach_files(failures: list[dict[str, Any]], chunk: pd.DataFrame, job: Mapping[str, Any]) -> None:
    """Give the failed items of a reused shard their file (for the command's output)."""
    for f in failures:
        if f["modality"] in PATH_MODALITIES and "file" not in f:
            value = chunk[job["columns"][f["modality"]]].get(f["row"])
            if isinstance(value, str):
                f["file"] = value


def _public_failure(f: Mapping[str, Any], record_paths: bool) -> dict[str, Any]:
    keys = ("row", "modality", "cause") + (("file",) if record_paths else ())
    return {k: f[k] for k in keys if k in f}


def _scrub(message: str, item: Any) -> str:
    """The error message without the item's own value (a path or a training text)."""
    if isinstance(item, str) and item:
        for text in (repr(item), item, os.path.basename(item)):
            if text and len(text) > 2:
                message = message.replace(text, "<item>")
    return message


# -- the task (runs on a worker, or in this process) --------------------------------------

_ENCODERS: dict[str, Any] = {}
_ENCODERS_LOCK = threading.Lock()


def _worker_encoder(spec: Mapping[str, Any], threads: int | None) -> tuple[Any, int]:
    """This process's encoder for ``spec``, built once per process (on a Dask worker,
    pretrained ones get a single-threaded ONNX Runtime session: a worker process is one
    core's worth). Returns ``(encoder, 1 if it was built now else 0)``."""
    from ..encoders.registry import create_encoder

    key = f"{spec['fingerprint']}/{threads}"
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is not None:
            return enc, 0
        enc = create_encoder(spec["name"])
        if threads is not None and hasattr(enc, "threads"):
            enc.threads = threads  # a pretrained encoder: its session is built lazily
        if enc.fingerprint != spec["fingerprint"]:
            raise RuntimeError(
                f"encoder {spec['name']!r} on this worker has fingerprint {enc.fingerprint}, "
                f"but the client's is {spec['fingerprint']}: install the same mmfuse and "
                f"weight packages on every machine")
        _ENCODERS[key] = enc
        return enc, 1


def _extract_shard(job: Mapping[str, Any], index: int, chunk: pd.DataFrame) -> dict[str, Any]:
    """Compute shard ``index`` (manifest rows ``chunk.index``) and write it atomically to
    ``job["out"]``. Returns small metadata only (never the features)."""
    import pyarrow as pa

    from ..encoders.featurizer import Featurizer

    start, n = int(chunk.index[0]), len(chunk)
    arrays = [pa.array(np.arange(start, start + n, dtype=np.int64))]
    names = [ROW]
    kept = pa.Table.from_pandas(chunk[job["kept"]], schema=job["schema"], preserve_index=False)
    arrays += list(kept.columns)
    names += list(job["kept"])
    failed: list[dict[str, Any]] = []
    builds = 0
    for m in sorted(job["encoders"]):
        spec = job["encoders"][m]
        enc, built = _worker_encoder(spec, job.get("threads"))
        builds += built
        col = job["columns"][m]
        samples = chunk[col].tolist()
        # the featurizer's path, as for a model (a cell of several files: mean-pooled)
        encoded = Featurizer({m: enc}, sources={m: (col,)}).transform(
            chunk, on_error="skip", cache=False, batch_size=job["batch_size"],
            workers=job["decode_threads"])
        features, present, errors = encoded.views[m], encoded.present[m], encoded.errors
        for e in errors:
            item = samples[e.row]
            f = {"row": start + e.row, "modality": m, "cause": _scrub(e.message, item)}
            if m in PATH_MODALITIES and isinstance(item, str):
                f["file"] = item
            failed.append(f)
        dim = int(spec["dim"])
        values = pa.array(np.ascontiguousarray(features, dtype=np.float32).reshape(-1))
        arrays += [pa.FixedSizeListArray.from_arrays(values, dim), pa.array(present)]
        names += [m, f"{m}_present"]
    if job["on_error"] == "raise" and failed:  # never store a shard with a failed item
        first = min(failed, key=lambda f: f["row"])
        where = f" ({first['file']!r})" if "file" in first else ""
        raise InputError(f"row {first['row']}, column {job['columns'][first['modality']]!r}"
                         f"{where}: {first['cause']}")
    meta = {"plan_id": job["plan_id"], "shard": index, "start": start, "stop": start + n,
            "failed": [_public_failure(f, job["record_paths"]) for f in failed]}
    write_shard(Path(job["out"]), index, pa.Table.from_arrays(arrays, names=names), meta)
    return {"shard": index, "rows": n, "failed": failed, "worker": os.getpid(),
            "builds": builds}


def write_shard(out: Path, index: int, table: Any, meta: Mapping[str, Any]) -> None:
    """Write shard ``index`` (an Arrow table in the store's layout, with its ``meta``:
    ``plan_id``, ``shard``, ``start``, ``stop``, ``failed``) atomically: temp file, fsync,
    rename, so a reader never sees it half-written."""
    import pyarrow.parquet as pq

    table = table.replace_schema_metadata({_META_KEY: json.dumps(dict(meta), sort_keys=True)
                                           .encode()})
    final = Path(out) / SHARD_NAME.format(index)
    tmp = Path(out) / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
