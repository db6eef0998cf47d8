"""Planning a feature-store extraction: the arguments checked, each column's stateless
encoder, and one streamed pass over the manifest (row count, kept columns, their schema);
the manifest read in fixed-size chunks with paths resolved."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._params import check_on_error
from .._errors import InputError, require
from ..encoders.base import MODALITIES, is_missing
from .store import FORMAT, PATH_MODALITIES, ROW, VERSION, _stateless_default


def _plan(manifest: Path, columns: Mapping[str, str], encoders: Mapping[str, str] | None,
          out: Path, rows_per_shard: int, batch_size: int, decode_threads: int, on_error: str,
          record_paths: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the arguments and read the manifest once (streamed): the job sent to workers
    and the plan (the store's identity, written into its header)."""
    from .. import __version__

    check_on_error(on_error)
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
    specs = _encoder_specs(columns, encoders)

    digest, n_rows, kept, schema = _scan_manifest(manifest, columns, rows_per_shard)
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


def _encoder_specs(columns: Mapping[str, str], encoders: Mapping[str, str] | None
                   ) -> dict[str, dict[str, Any]]:
    """Name, fingerprint and width of the stateless encoder of each modality column."""
    from ..encoders.registry import create_encoder, default_encoder, encoder_modality

    encoders = dict(encoders or {})
    extra = sorted(set(encoders) - set(columns))
    if extra:
        raise InputError(f"encoders given for {extra}, which have no column; columns: "
                         f"{dict(columns)}")
    specs: dict[str, dict[str, Any]] = {}
    for m in sorted(columns):
        name = encoders.get(m, _stateless_default(m))
        if name is None:
            raise InputError(f"give a stateless encoder for {m}: --encoders {m}="
                             f"{_stateless_names(m)} (the default, {default_encoder(m)}, "
                             f"learns from data and cannot be stored)")
        if not isinstance(name, str):
            raise InputError(f"encoder for {m!r} must be a registered name; got {name!r}")
        enc = create_encoder(name)
        if encoder_modality(name) != m:
            raise InputError(f"encoder {name!r} is for {encoder_modality(name)}, not {m}")
        if not getattr(enc, "stateless", True):
            raise InputError(f"encoder {name!r} learns from data (its features depend on the "
                             f"training folds), so it cannot go into a feature store; the "
                             f"store's {m} encoders are {_stateless_names(m, ' or ')}"
                             + (" (hashing: TF-IDF's hashed word and character n-grams, "
                                "without the idf it would learn)" if m == "text" else ""))
        specs[m] = {"name": name, "fingerprint": enc.fingerprint, "dim": int(enc.dim)}
    return specs


def _stateless_names(modality: str, sep: str = "/") -> str:
    """The registered encoders of ``modality`` that learn nothing from data (a store can
    hold their features), e.g. ``hashing/minilm/wordllama`` for text."""
    from ..encoders.registry import create_encoder, list_encoders

    names = []
    for e in list_encoders():
        if e.get("modality") != modality:
            continue
        try:
            if create_encoder(e["name"]).stateless:
                names.append(e["name"])
        except Exception:  # noqa: BLE001 - an encoder whose extra is missing still counts
            names.append(e["name"])
    return sep.join(sorted(names))


def _scan_manifest(manifest: Path, columns: Mapping[str, str], rows_per_shard: int
                   ) -> tuple[Any, int, list[str], Any]:
    """One streamed pass over the manifest: its SHA-256, row count, the columns kept beside
    the features and their (unified) Arrow schema."""
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
    return digest, n_rows, kept, schema


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


def storable(columns: Mapping[str, str], encoders: Mapping[str, str] | None) -> str | None:
    """None when every column's encoder (given, or its modality's default) is stateless,
    so a store can hold its features; else why not (one line)."""
    try:
        _encoder_specs(columns, encoders)
    except InputError as exc:
        return str(exc)
    return None
