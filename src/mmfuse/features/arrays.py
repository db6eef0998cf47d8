"""A feature store from arrays already in hand (features computed elsewhere, or synthetic
ones): :func:`write_array_store` writes it shard by shard, through the same shard writer
as ``mmfuse extract`` (:func:`~mmfuse.features.write.write_shard`), so whatever reads a
store reads it."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError, require
from .store import FORMAT, HEADER, ROW, VERSION


def write_array_store(out: str | os.PathLike, shards: Iterable[tuple[pd.DataFrame, Mapping[str, np.ndarray]]],
                      *, encoders: Mapping[str, str], dims: Mapping[str, int],
                      n_rows: int, rows_per_shard: int) -> dict[str, Any]:
    """Write a feature store at ``out`` (a new or empty folder) from ``shards``.

    Parameters
    ----------
    out : path of the store folder
    shards : iterable of ``(frame, views)``
        In row order, ``rows_per_shard`` rows each (the last may be shorter). ``frame``
        holds the kept columns (label, group...), the same columns in every shard;
        ``views`` maps modality -> float array ``(rows, dims[modality])``, NaN rows where
        the modality is absent.
    encoders : dict of modality -> name recorded as the store's encoder (its fingerprint
        is the name's hash: a store written here is not tied to a registered encoder)
    dims : dict of modality -> width
    n_rows, rows_per_shard : int

    Returns
    -------
    dict : the store's header
    """
    require("pyarrow", "parquet")
    import pyarrow as pa

    from .._io import atomic_write_json
    from .write import write_shard

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{str(out)!r} must be a new or empty folder")
    if sorted(encoders) != sorted(dims):
        raise InputError(f"encoders {sorted(encoders)} and dims {sorted(dims)} name different "
                         f"modalities")
    out.mkdir(parents=True, exist_ok=True)
    specs = {m: {"name": str(encoders[m]), "dim": int(dims[m]),
                 "fingerprint": hashlib.sha256(f"array:{encoders[m]}:{dims[m]}".encode())
                 .hexdigest()[:16]} for m in sorted(encoders)}
    n_shards = -(-int(n_rows) // int(rows_per_shard))
    header: dict[str, Any] = {"format": FORMAT, "version": VERSION, "manifest_sha256": None,
                              "n_rows": int(n_rows), "rows_per_shard": int(rows_per_shard),
                              "n_shards": n_shards, "columns": {m: m for m in specs},
                              "encoders": specs, "kept_columns": [], "on_error": "raise",
                              "record_paths": False}
    start, index, kept = 0, 0, None
    for frame, views in shards:
        n = len(frame)
        if kept is None:
            kept = [str(c) for c in frame.columns]
            header["kept_columns"] = kept
            header["plan_id"] = hashlib.sha256(json.dumps(header, sort_keys=True).encode()
                                               ).hexdigest()
            atomic_write_json(out / HEADER, dict(header, complete=False))
        if [str(c) for c in frame.columns] != kept:
            raise InputError(f"shard {index} has columns {list(frame.columns)}; the first had "
                             f"{kept}")
        if index < n_shards - 1 and n != rows_per_shard:
            raise InputError(f"shard {index} has {n} rows; expected {rows_per_shard}")
        arrays = [pa.array(np.arange(start, start + n, dtype=np.int64))]
        arrays += list(pa.Table.from_pandas(frame, preserve_index=False).columns)
        names = [ROW] + kept
        for m, spec in specs.items():
            x = np.ascontiguousarray(views[m], dtype=np.float32)
            if x.shape != (n, spec["dim"]):
                raise InputError(f"shard {index}, modality {m!r}: shape {x.shape}; expected "
                                 f"({n}, {spec['dim']})")
            present = np.isfinite(x).all(axis=1)
            x[~present] = np.nan
            arrays += [pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), spec["dim"]),
                       pa.array(present)]
            names += [m, f"{m}_present"]
        write_shard(out, index, pa.Table.from_arrays(arrays, names=names),
                    {"plan_id": header["plan_id"], "shard": index, "start": start,
                     "stop": start + n, "failed": []})
        start += n
        index += 1
    if start != n_rows or index != n_shards:
        raise InputError(f"the shards held {start} rows in {index} shards; expected {n_rows} "
                         f"in {n_shards}")
    header = dict(header, complete=True, failed=[])
    atomic_write_json(out / HEADER, header)
    return header
