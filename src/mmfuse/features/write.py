"""Writing a feature store: :func:`extract_store` plans shards of a manifest, computes
each one in this process or on Dask workers, and writes it atomically; an interrupted
run resumes with the missing shards."""

from __future__ import annotations

import hashlib
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
from ..encoders.base import MODALITIES, ON_ERROR, is_missing
from .store import (FORMAT, HEADER, PATH_MODALITIES, ROW, SHARD_NAME, VERSION, _META_KEY,
                    Progress, _stateless_default)


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
        folder); every worker must see them under the same path.
    out : path of the store folder (created; every worker must see it)
    encoders : dict of modality -> encoder name, optional
        Default ``hog`` for images and ``mfcc`` for audio; text needs a stateless text
        encoder (``minilm``, ``wordllama``). Encoders that learn from data (``tfidf``)
        cannot be stored: their features depend on the training folds.
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


def _plan(manifest: Path, columns: Mapping[str, str], encoders: Mapping[str, str] | None,
          out: Path, rows_per_shard: int, batch_size: int, decode_threads: int, on_error: str,
          record_paths: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the arguments and read the manifest once (streamed): the job sent to workers
    and the plan (the store's identity, written into its header)."""
    from .. import __version__
    from ..encoders.registry import create_encoder, encoder_modality

    if on_error not in ON_ERROR:
        raise InputError(f"on_error must be one of {list(ON_ERROR)}; got {on_error!r}")
    for label, value, low in (("rows_per_shard", rows_per_shard, 1),
                              ("batch_size", batch_size, 1), ("decode_threads", decode_threads, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise InputError(f"{label} must be an int >= {low}; got {value!r}")
    if not columns:
        raise InputError("name at least one modality column: e.g. columns={'image': 'photo'} "
                         "(--image COL, --text COL or --audio COL)")
    bad = sorted(set(columns) - set(MODALITIES))
    if bad:
        raise InputError(f"unknown modality {bad}; valid: {list(MODALITIES)}")
    encoders = dict(encoders or {})
    extra = sorted(set(encoders) - set(columns))
    if extra:
        raise InputError(f"encoders given for {extra}, which have no column; columns: "
                         f"{dict(columns)}")
    specs: dict[str, dict[str, Any]] = {}
    for m in sorted(columns):
        name = encoders.get(m, _stateless_default(m))
        if name is None:
            raise InputError(f"give a stateless encoder for {m}, e.g. --encoders {m}=minilm "
                             f"(or wordllama); tfidf learns from data and cannot be stored")
        if not isinstance(name, str):
            raise InputError(f"encoder for {m!r} must be a registered name; got {name!r}")
        enc = create_encoder(name)
        if encoder_modality(name) != m:
            raise InputError(f"encoder {name!r} is for {encoder_modality(name)}, not {m}")
        if not getattr(enc, "stateless", True):
            raise InputError(f"encoder {name!r} learns from data (its features depend on the "
                             f"training folds), so it cannot go into a feature store; use a "
                             f"stateless one (see `mmfuse encoders`)")
        specs[m] = {"name": name, "fingerprint": enc.fingerprint, "dim": int(enc.dim)}

    if not manifest.is_file():
        raise InputError(f"manifest {str(manifest)!r} does not exist")
    digest = hashlib.sha256()
    with open(manifest, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    # One streamed pass: row count, columns, and the Arrow types of the kept columns.
    pa = require("pyarrow", "parquet")
    n_rows = 0
    names: list[str] | None = None
    schema = None
    job_probe = {"columns": {}}  # no path resolution in this pass
    for chunk in _iter_chunks(manifest, max(rows_per_shard, 4096), job_probe):
        if names is None:
            names = [str(c) for c in chunk.columns]
            missing = [c for c in columns.values() if c not in names]
            if missing:
                raise InputError(f"manifest {str(manifest)!r} lacks column(s) {missing}; it "
                                 f"has {names}")
            kept = [c for c in names if c not in set(columns.values())]
            clash = sorted({ROW, *(x for m in columns for x in (m, f"{m}_present"))} & set(kept))
            if clash:
                raise InputError(f"manifest {str(manifest)!r} has column(s) {clash}, which the "
                                 f"feature store uses for features; rename them")
        part = pa.Schema.from_pandas(chunk[kept], preserve_index=False).remove_metadata()
        try:
            schema = part if schema is None else pa.unify_schemas(
                [schema, part], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise InputError(f"manifest {str(manifest)!r}: a column changes type between rows "
                             f"{n_rows} and {n_rows + len(chunk)}: {exc}") from None
        n_rows += len(chunk)
    if not n_rows:
        raise InputError(f"manifest {str(manifest)!r} has no rows")
    schema = pa.schema([pa.field(f.name, pa.string() if pa.types.is_null(f.type) else f.type)
                        for f in schema])
    plan: dict[str, Any] = {
        "format": FORMAT, "version": VERSION,
        "manifest_sha256": digest.hexdigest(),
        "n_rows": n_rows, "rows_per_shard": int(rows_per_shard),
        "n_shards": -(-n_rows // int(rows_per_shard)),
        "columns": dict(sorted(columns.items())),
        "encoders": specs,
        "kept_columns": kept,
        "on_error": on_error,
        "record_paths": bool(record_paths),
    }
    plan["plan_id"] = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()
    plan["mmfuse_version"] = __version__
    job = {"manifest": str(manifest), "out": str(out.resolve()), "columns": dict(columns),
           "encoders": specs, "kept": kept, "schema": schema, "plan_id": plan["plan_id"],
           "batch_size": int(batch_size), "decode_threads": int(decode_threads),
           "on_error": on_error, "record_paths": bool(record_paths)}
    return job, plan


def _iter_chunks(manifest: Path, size: int, job: Mapping[str, Any]) -> Iterator[pd.DataFrame]:
    """The manifest in consecutive chunks of exactly ``size`` rows (the last may be shorter),
    read as :func:`~mmfuse.data.manifest.read_manifest` reads it, paths resolved."""
    from ..data.manifest import READERS

    kind = READERS.get(manifest.suffix.lower())
    if kind is None:
        raise InputError(f"manifest {str(manifest)!r}: unknown extension {manifest.suffix!r}; "
                         f"expected one of {sorted(READERS)}")
    base = manifest.resolve().parent
    path_cols = [c for m, c in job["columns"].items() if m in PATH_MODALITIES]

    def raw() -> Iterator[pd.DataFrame]:
        if kind in ("csv", "tsv"):
            yield from pd.read_csv(manifest, sep="," if kind == "csv" else "\t", dtype=str,
                                   keep_default_na=False, na_values=[""], encoding="utf-8",
                                   chunksize=size)
        elif kind == "jsonl":
            yield from pd.read_json(manifest, lines=True, dtype=False, chunksize=size)
        else:
            pq = require("pyarrow.parquet", "parquet")
            for batch in pq.ParquetFile(manifest).iter_batches(batch_size=size):
                yield batch.to_pandas()

    pending: list[pd.DataFrame] = []
    held = 0
    start = 0
    try:
        for part in raw():
            pending.append(part)
            held += len(part)
            while held >= size:
                frame = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
                chunk, rest = frame.iloc[:size], frame.iloc[size:]
                pending, held = ([rest] if len(rest) else []), len(rest)
                yield _finish_chunk(chunk, start, base, path_cols)
                start += size
        if held:
            frame = pd.concat(pending, ignore_index=True) if len(pending) > 1 else pending[0]
            yield _finish_chunk(frame, start, base, path_cols)
    except UnicodeDecodeError as exc:
        raise InputError(f"manifest {str(manifest)!r} is not valid UTF-8 (byte {exc.start})") from None
    except (ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"manifest {str(manifest)!r} could not be parsed as {kind}: {exc}") from None


def _finish_chunk(chunk: pd.DataFrame, start: int, base: Path, path_cols: list[str]) -> pd.DataFrame:
    chunk = chunk.reset_index(drop=True)
    chunk.index = pd.RangeIndex(start, start + len(chunk))
    for col in path_cols:
        if col in chunk.columns:
            chunk[col] = pd.Series([None if is_missing(v) else _resolve_path(v, base)
                                    for v in chunk[col]], index=chunk.index, dtype=object)
    return chunk


def _resolve_path(value: Any, base: Path) -> Any:
    from ..data.manifest import resolve_path

    return resolve_path(value, base)


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
    import pyarrow.parquet as pq

    from ..extract import extract_features

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
        features, present, errors = extract_features(
            enc, samples, cache=False, batch_size=job["batch_size"],
            workers=job["decode_threads"], on_error="skip", column=col)
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
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(
        {_META_KEY: json.dumps(meta, sort_keys=True).encode()})
    out = Path(job["out"])
    final = out / SHARD_NAME.format(index)
    tmp = out / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        pq.write_table(table, tmp, compression="zstd")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"shard": index, "rows": n, "failed": failed, "worker": os.getpid(),
            "builds": builds}
