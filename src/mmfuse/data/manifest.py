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
            _check_header(path, "," if kind == "csv" else "\t")
            import warnings

            with warnings.catch_warnings():
                # a row longer than the header: pandas would make its first cells the index
                warnings.simplefilter("error", pd.errors.ParserWarning)
                df = pd.read_csv(path, sep="," if kind == "csv" else "\t", dtype=str,
                                 keep_default_na=False, na_values=[""], encoding="utf-8",
                                 index_col=False)
        elif kind == "jsonl":
            df = _read_jsonl(path)
        else:
            require("pyarrow", "parquet")
            df = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise InputError(f"manifest {str(path)!r} is not valid UTF-8 (byte {exc.start})") from None
    except pd.errors.ParserWarning:
        raise InputError(f"manifest {str(path)!r} could not be parsed as {kind}: a row has more "
                         "fields than the header has columns") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"manifest {str(path)!r} could not be parsed as {kind}: {exc}") from None
    except ImportError:
        raise
    except Exception as exc:  # pyarrow raises its own error types
        raise InputError(f"manifest {str(path)!r} could not be read: {exc}") from None
    if df.empty:
        raise InputError(f"manifest {str(path)!r} has no rows (only a header)"
                         if len(df.columns) else f"manifest {str(path)!r} is empty")
    needed = [c for c in [label, group, *columns] if c]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputError(
            f"manifest {str(path)!r} lacks column(s) {missing}; it has {list(df.columns)}"
        )
    for col in [c for c in (label, group) if c]:
        bad = df[col].map(is_missing)
        if bad.all():
            raise InputError(
                f"manifest {str(path)!r}: column {col!r} is empty in row 0 and every other "
                f"row: the column is entirely empty ({len(df)} rows); every sample needs a "
                f"{col}")
        if bad.any():
            raise InputError(
                f"manifest {str(path)!r}: column {col!r} is empty in row "
                f"{int(np.flatnonzero(bad.to_numpy())[0])} ({int(bad.sum())} rows); every "
                f"sample needs a {col}"
            )
    base = path.resolve().parent
    for col in path_columns:
        df[col] = [None if is_missing(v) else resolve_path(v, base) for v in df[col]]
    return df


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line (blank lines ignored); a line that is not an object, or an
    object with a key twice, is an error naming the line."""
    import json

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ValueError(f"key {twice[0]!r} appears twice in one object; keys must be "
                             "unique")
        return dict(pairs)

    records = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line, object_pairs_hook=no_duplicates)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                raise InputError(f"manifest {str(path)!r}, line {number}: not valid JSON: "
                                 f"{exc}") from None
            if not isinstance(record, dict):
                raise InputError(f"manifest {str(path)!r}, line {number}: expected a JSON "
                                 f"object per line; got {type(record).__name__}")
            if any(not str(k).strip() for k in record):
                raise InputError(f"manifest {str(path)!r}, line {number}: a key is empty; "
                                 "every column needs a name")
            records.append(record)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame()


def _check_header(path: Path, sep: str) -> None:
    """Duplicated or empty column names are errors (pandas would rename them to ``label.1``
    or ``Unnamed: 3`` and go on with the wrong column)."""
    import csv

    with open(path, "rb") as raw:
        head = raw.read(1 << 16)
    if b"\x00" in head:
        raise InputError(f"manifest {str(path)!r} is a binary file (it holds NUL bytes), not "
                         f"{'CSV' if sep == ',' else 'TSV'} text")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    names = [h.strip() for h in header]
    empty = [i for i, h in enumerate(names) if not h]
    if empty:
        raise InputError(f"manifest {str(path)!r}: column {empty[0] + 1} of the header has no "
                         f"name ({len(empty)} unnamed column(s)); every column needs a name")
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise InputError(f"manifest {str(path)!r}: column name {name!r} appears twice "
                             f"(columns {seen[name] + 1} and {i + 1}); column names must be "
                             "unique")
        seen[name] = i


def resolve_path(value: object, base: Path) -> object:
    """A relative path (a str) resolved against ``base``, the manifest's folder; anything else
    as it is."""
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
