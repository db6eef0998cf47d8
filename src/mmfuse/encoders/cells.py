"""What one table cell holds for an encoder: one item, several files, or several columns.

* **Several files per cell.** An image or audio cell may hold several paths: a Python list
  (a JSON list in a JSONL manifest, a list column in Parquet) or, in a CSV/TSV manifest, one
  string with the paths separated by :data:`PATH_SEPARATOR` (``" | "``; spaces around it are
  optional; a path that exists as a whole is never split). The encoder embeds every file and
  the cell's row is their mean (``pooling="mean"``, the default) or element-wise maximum
  (``"max"``). A cell whose files all fail is missing (an item error, as for one file); a
  cell whose files partly fail is pooled over the others and reported as an item error
  saying how many failed (with ``on_error="raise"`` any failed file raises).
* **Several columns per item.** A multi-column encoder (``tabular``) gets one
  ``{column: value}`` record per row, built by :func:`row_records` (the only place that
  builds them: the featurizer, the tabular encoder's ``row_items`` and the HTTP service).

:func:`row_records` and :func:`pooled` are what the featurizer calls (for whole tables and
for the service's micro-batches alike).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .base import ItemError, describe_item, is_missing

PATH_SEPARATOR = "|"
POOLING = ("mean", "max")

Encode = Callable[[list[Any], str], tuple[Any, np.ndarray, list[ItemError]]]


def is_multi(cell: Any) -> bool:
    """True for a cell holding several items (a list, or a 1-D array of strings/objects)."""
    if isinstance(cell, list):
        return True
    return isinstance(cell, np.ndarray) and cell.ndim == 1 and cell.dtype.kind in "OUS"


def split_paths(value: Any) -> Any:
    """A manifest cell as one path or a list of paths (see the module docstring)."""
    if isinstance(value, np.ndarray) and is_multi(value):
        return [str(v) for v in value.tolist()]
    if not isinstance(value, str) or PATH_SEPARATOR not in value or os.path.lexists(value):
        return value
    parts = [p.strip() for p in value.split(PATH_SEPARATOR)]
    return [p for p in parts if p]


def row_records(columns: Any, sources: Sequence[str], n: int) -> list[dict[str, Any] | None]:
    """The items of a view that reads several columns: one ``{column: cell}`` record per
    row, ``None`` where every cell of the row is missing. ``columns`` is a DataFrame or a
    mapping column -> sequence of ``n`` cells; a column it lacks is empty in every row.

    The one place records are built: the featurizer (tables), :func:`~mmfuse.encoders.
    tabular.row_items` and the HTTP service (a request's fields: ``n=1``) call it.
    """
    have = columns.columns if hasattr(columns, "columns") else columns
    lists = [list(columns[c]) if c in have else [None] * n for c in sources]
    return [None if all(is_missing(v) for v in row) else dict(zip(sources, row))
            for row in zip(*lists)]


def check_pooling(pooling: str) -> None:
    if pooling not in POOLING:
        raise InputError(f"pooling must be one of {list(POOLING)}; got {pooling!r}")


def _items_of(cell: Any) -> list[Any] | None:
    return list(cell) if is_multi(cell) else None


def pooled(encode: Encode, samples: Sequence[Any], *, pooling: str = "mean",
           on_error: str = "raise", column: str | None = None,
           items_of: Callable[[Any], list[Any] | None] = _items_of
           ) -> tuple[Any, np.ndarray, list[ItemError]]:
    """``encode(items, on_error) -> (view, present, errors)`` over cells that may each hold
    several items, pooled per cell (see the module docstring). ``items_of(cell)`` gives the
    items of a cell of several, None for a cell of one (default: :func:`is_multi` cells).

    Without a multi-item cell this is exactly ``encode(samples, on_error)``.
    """
    check_pooling(pooling)
    samples = list(samples)
    split = [items_of(s) for s in samples]
    if all(items is None for items in split):
        return encode(samples, on_error)
    flat: list[Any] = []
    owner: list[int] = []
    size = np.zeros(len(samples), dtype=int)
    for row, (cell, several) in enumerate(zip(samples, split)):
        items = several if several is not None else [cell]
        for item in items:
            if not is_missing(item):
                flat.append(item)
                owner.append(row)
                size[row] += 1
    owner_arr = np.asarray(owner, dtype=int)
    view, mask, flat_errors = encode(flat, "skip")
    from ..views import is_sparse

    if is_sparse(view):
        view = view.toarray()
    view = np.asarray(view, dtype=np.float32)
    failed: dict[int, list[ItemError]] = {}
    for e in flat_errors:
        failed.setdefault(int(owner_arr[e.row]), []).append(e)
    if failed and on_error == "raise":
        row = min(failed)
        raise InputError(f"row {row}" + (f", column {column!r}" if column else "")
                         + f": {failed[row][0].message}")
    out = np.full((len(samples), view.shape[1]), np.nan, dtype=np.float32)
    present = np.zeros(len(samples), dtype=bool)
    for row in np.unique(owner_arr[mask]) if len(flat) else []:
        rows = view[(owner_arr == row) & mask]
        out[row] = rows.mean(axis=0) if pooling == "mean" else rows.max(axis=0)
        present[row] = True
    errors = []
    for row, errs in sorted(failed.items()):
        n_bad, n_all = len(errs), int(size[row])
        if present[row]:
            msg = (f"{n_bad} of {n_all} files failed (pooled over the other "
                   f"{n_all - n_bad}): {errs[0].message}")
        else:
            msg = f"all {n_all} files failed: {errs[0].message}"
        errors.append(ItemError(row, column, describe_item(samples[row]), msg))
    return out, present, errors
