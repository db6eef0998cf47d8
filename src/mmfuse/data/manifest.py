"""Read a manifest (CSV, JSONL or Parquet; one row per sample) or the seed's .npy arrays."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .._errors import InputError, require
from .._io import MAX_FILE_BYTES, check_regular_file
from ..encoders.base import is_missing

READERS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


def read_manifest(path: str | os.PathLike, *, label: str | None = None,
                  columns: Sequence[str] = (), path_columns: Sequence[str] = (),
                  group: str | None = None) -> pd.DataFrame:
    """Load a manifest into a DataFrame.

    Parameters
    ----------
    path : path to a .csv, .tsv, .jsonl or .parquet file
    label : the label column, checked to exist and to have no missing value
    columns : modality columns that must exist
    path_columns : columns holding file paths; relative paths are resolved against the
        manifest's folder (so a manifest and its files can move together)
    group : optional group column, checked to exist and be complete
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise InputError(f"manifest {str(path)!r} does not exist")
    check_regular_file(path, "manifest")  # never open a pipe or a device
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise InputError(
            f"manifest {str(path)!r}: unknown extension {path.suffix!r}; expected one of "
            f"{sorted(READERS)}"
        )
    try:
        if kind in ("csv", "tsv"):
            df = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str,
                             keep_default_na=False, na_values=[""], encoding="utf-8")
        elif kind == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            require("pyarrow", "parquet")
            df = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"manifest {str(path)!r} is not valid UTF-8 (byte {exc.start})") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"manifest {str(path)!r} could not be parsed as {kind}: {exc}") from None
    except ImportError:
        raise
    except Exception as exc:  # pyarrow raises its own error types
        raise InputError(f"manifest {str(path)!r} could not be read: {exc}") from None
    if df.empty:
        raise InputError(f"manifest {str(path)!r} has no rows")
    needed = [c for c in [label, group, *columns] if c]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(
            f"manifest {str(path)!r} lacks column(s) {missing}; it has {list(df.columns)}"
        )
    for col in [c for c in (label, group) if c]:
        bad = df[col].map(is_missing)
        if bad.any():
            raise InputError(
                f"manifest {str(path)!r}: column {col!r} is empty in row "
                f"{int(np.flatnonzero(bad.to_numpy())[0])} ({int(bad.sum())} rows); every "
                f"sample needs a {col}"
            )
    base = path.resolve().parent
    for col in path_columns:
        df[col] = [None if is_missing(v) else _resolve(v, base) for v in df[col]]
    return df


def _resolve(value: object, base: Path) -> object:
    if not isinstance(value, str):
        return value
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else base / p)


def load_arrays(paths: Mapping[str, str | os.PathLike]) -> dict[str, np.ndarray]:
    """Load the seed's pre-extracted feature arrays: ``{"image": "images.npy", ...}``.

    Arrays are loaded with ``allow_pickle=False`` (no code from the file ever runs) and
    reshaped to (n_samples, -1).
    """
    out = {}
    for name, p in sorted(paths.items()):
        check_regular_file(p, f"array ({name!r})" if name != "__labels__" else "labels array",
                           MAX_FILE_BYTES["array"])
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError:
            raise InputError(f"array file {str(p)!r} (for {name!r}) does not exist") from None
        except ValueError as exc:
            raise InputError(f"array file {str(p)!r} (for {name!r}) is not a plain .npy array: {exc}") from None
        except OSError as exc:
            raise InputError(f"array file {str(p)!r} (for {name!r}) could not be read: {exc}") from None
        if arr.ndim == 0:
            raise InputError(f"array file {str(p)!r} holds a scalar; expected (n_samples, ...)")
        out[name] = arr.reshape(arr.shape[0], -1) if name != "__labels__" else arr
    return out
