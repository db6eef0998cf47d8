"""The passthrough "encoder": a column of pre-extracted feature vectors is its own view
(see :class:`~mmfuse.encoders.featurizer.Featurizer`, which re-exports these names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .base import is_missing

__all__ = ["PASSTHROUGH", "Passthrough", "is_passthrough"]


class Passthrough:
    """The "encoder" of a column of pre-extracted feature vectors: the column is its view.

    ``encoders={"x": "passthrough"}`` (the string) and ``PASSTHROUGH`` (this object) mean
    the same; a fitted model holds the object. It compares equal to the string
    ``"passthrough"`` so code written against the old string sentinel keeps working.
    """

    name = "passthrough"
    modality = "features"
    stateless = True
    stores_training_text = False
    fingerprint = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Passthrough) or (isinstance(other, str) and other == self.name)

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return "PASSTHROUGH"

    def view(self, column: str, cells: Sequence[Any], dim: int | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(view, present)`` of a column of vectors; ``present`` is None when no cell is
        missing (all-NaN rows then count as missing, see :func:`~mmfuse.views.check_views`)."""
        if isinstance(cells, np.ndarray) and cells.dtype != object:
            return _vectors(column, cells, dim), None
        cells = list(cells)
        mask = np.array([not _missing_vector(v) for v in cells], dtype=bool)
        if mask.all() and len(cells):
            return _vectors(column, cells, dim), None
        rows = [v for v, m in zip(cells, mask) if m]
        width = dim if dim is not None else (_vectors(column, rows).shape[1] if rows else 1)
        out = np.full((len(cells), width), np.nan, dtype=np.float32)
        if rows:
            out[mask] = _vectors(column, rows, dim)
        return out, mask & ~np.isnan(out).all(axis=1)


#: The passthrough marker held in a fitted model's ``encoders_``.
PASSTHROUGH = Passthrough()


def is_passthrough(encoder: Any) -> bool:
    """True for the passthrough marker (or its name)."""
    return isinstance(encoder, Passthrough) or (isinstance(encoder, str)
                                                and encoder == Passthrough.name)


def _missing_vector(value: Any) -> bool:
    if isinstance(value, (list, tuple, np.ndarray)):
        return len(value) == 0
    return is_missing(value)


def _vectors(column: str, values: Any, dim: int | None = None) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        values = list(values)
        if any(isinstance(v, (np.ndarray, list, tuple)) for v in values):
            # a column of vectors: missing cells become NaN rows of the right width
            width = next(len(np.ravel(v)) for v in values
                         if isinstance(v, (np.ndarray, list, tuple)))
            values = [np.full(width, np.nan) if not isinstance(v, (np.ndarray, list, tuple))
                      else np.ravel(v) for v in values]
    try:
        arr = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise InputError(
            f"column {column!r} is 'passthrough' and must hold numeric feature vectors of equal "
            f"length; give it an encoder (e.g. 'hog', 'tfidf', 'mfcc') for raw files"
        ) from None
    if arr.size == 0 and dim is not None:
        return arr.reshape(len(arr), dim)
    return arr.reshape(len(arr), -1)
