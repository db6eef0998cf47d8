"""The one path from raw columns to views.

::

    raw table (DataFrame, dict of columns, 2-D array)
        ──► as_columns ──► resolve_encoders / build_encoders (fit only)
        ──► Featurizer: per view, the cells of its source column(s)
              passthrough   → the pre-extracted vectors themselves
              stateless     → extract_features (streamed, cached on disk)
              stateful      → prepare_all, fit_prepared (fit only), assemble
        ──► Encoded(views, present, errors)

The estimator (fit, predict), evaluation (:class:`~mmfuse.evaluate.FeatureTable`),
robustness, :mod:`mmfuse.predict` and the HTTP service all encode through a
:class:`Featurizer`; the service uses its per-item half (:meth:`Featurizer.prepare_item`,
then :meth:`Featurizer.views_from_prepared` on a micro-batch).

Extension points (kept open on purpose):

* A view may read **several columns**: an encoder whose ``input_columns`` attribute lists
  them (or ``Featurizer(sources={"tabular": ("age", "city")})``) gets one
  ``{column: cell}`` record per row in ``prepare`` (``None`` when every cell of the row is
  missing), and the key it is given in ``encoders=`` names its view. By default each view
  reads the column of its own name.
* A cell may hold **several items** (e.g. a list of files): it reaches the encoder's
  ``prepare`` as is, so an encoder that pools several files per sample only has to accept
  a list there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._params import check_on_error
from .._errors import InputError
from ..views import Present, Views, check_views
from .base import MODALITIES, Encoder, ItemError, MissingItem, is_missing

__all__ = ["PASSTHROUGH", "Encoded", "Featurizer", "Passthrough", "as_columns",
           "build_encoders", "default_encoder", "is_passthrough", "resolve_encoders",
           "source_columns"]

Progress = Callable[[str, int, int], Any]


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


# -- the table -------------------------------------------------------------------------------


def as_columns(X: Any, encoders_given: bool = True) -> tuple[Mapping[str, Any], int]:
    """The columns of a DataFrame, a dict of arrays/lists, or a 2-D array (one view ``"x"``),
    and the number of rows."""
    import pandas as pd
    from scipy.sparse import issparse
    from sklearn.utils import check_array

    if issparse(X):  # before Mapping: a dok matrix is a dict
        check_array(X, accept_sparse=False)
    if isinstance(X, pd.DataFrame):
        if encoders_given is False and len(X.columns) and all(
                pd.api.types.is_numeric_dtype(t) for t in X.dtypes):
            return {"x": check_array(X.to_numpy(), ensure_all_finite="allow-nan")}, len(X)
        return X, len(X)
    if isinstance(X, Mapping):
        if not X:
            raise InputError("X is an empty dict; expected modality name -> samples")
        lengths = {k: len(v) for k, v in X.items()}
        if len(set(lengths.values())) > 1:
            raise InputError(f"all modalities must have the same number of samples; got {lengths}")
        return X, next(iter(lengths.values()))
    if isinstance(X, (np.ndarray, list)) or hasattr(X, "__array__") or issparse(X):
        # A plain feature matrix is one pre-extracted view named "x" (scikit-learn's usual
        # input); check_array gives the standard messages for sparse, complex or 1-D input.
        arr = check_array(X, ensure_all_finite="allow-nan", dtype="numeric")
        return {"x": arr}, arr.shape[0]
    raise InputError(
        f"X must be a DataFrame, a dict of modality -> samples, or a 2-D array; "
        f"got {type(X).__name__}"
    )


def resolve_encoders(encoders: Any, columns: Mapping[str, Any]) -> dict[str, Any]:
    """Map each used column to an encoder spec: a registered name, an Encoder, or
    :data:`PASSTHROUGH`, or the :class:`~mmfuse.encoders.candidates.Candidates` it chooses
    from (``"auto"`` or a list of names). Nothing is built (see :func:`build_encoders`)."""
    import pandas as pd

    from .registry import check_modality, create_encoder

    if encoders is None:
        if isinstance(columns, pd.DataFrame) and not all(
                _holds_vectors(columns[c]) for c in columns.columns):
            raise InputError(
                "encoders is required for a DataFrame: e.g. encoders={'image': 'hog', "
                "'text': 'tfidf'} (keys are column names); see `mmfuse encoders`"
            )
        return {k: PASSTHROUGH for k in sorted(columns)}
    if isinstance(encoders, str):
        if encoders != "auto":
            raise InputError(f"encoders must be a dict or 'auto'; got {encoders!r}")
        cols = [c for c in columns if c in MODALITIES]
        if not cols:
            raise InputError(
                f"encoders='auto' picks an encoder for columns named {list(MODALITIES)}; "
                f"the data has {sorted(map(str, columns))}"
            )
        # every installed encoder of each modality is a candidate (mmfuse.encoder_choice)
        from .candidates import parse_candidates

        return {c: parse_candidates("auto", c) for c in sorted(cols)}
    if not isinstance(encoders, Mapping) or not encoders:
        raise InputError(f"encoders must be a non-empty dict of column -> encoder; got {encoders!r}")
    missing = sorted(c for c in encoders
                     if not set(source_columns(c, encoders[c])) <= set(columns))
    if missing:
        raise InputError(
            f"encoders name columns the data does not have: {missing}; "
            f"available columns: {sorted(map(str, columns))}"
        )
    from .candidates import Candidates, is_choice, parse_candidates

    out: dict[str, Any] = {}
    for col in sorted(encoders):
        spec = encoders[col]
        if isinstance(spec, Candidates):
            out[col] = spec
        elif is_choice(spec):  # "auto" or a list of candidate encoders
            out[col] = parse_candidates(spec, col)
        elif is_passthrough(spec):
            out[col] = PASSTHROUGH
        elif isinstance(spec, Encoder):
            out[col] = spec
        elif isinstance(spec, str):
            create_encoder(spec)  # fail early on unknown names, with the list
            out[col] = spec
        else:
            raise InputError(f"encoder for column {col!r} must be a name, an Encoder, 'auto' or "
                             f"a list of candidate names; got {spec!r}")
        if not is_passthrough(out[col]):
            check_modality(col, out[col])
    return out


def source_columns(view: str, encoder: Any) -> tuple[str, ...]:
    """The table columns a view reads: the encoder's ``input_columns`` when it has some (a
    multi-column encoder), else the column named like the view."""
    columns = getattr(encoder, "input_columns", None)
    if columns is None or isinstance(encoder, str):
        return (view,)
    return tuple(columns)


def build_encoders(specs: Mapping[str, Any]) -> dict[str, Any]:
    """Fresh encoders for resolved specs (names built, Encoder instances copied)."""
    from .registry import create_encoder

    return {c: PASSTHROUGH if is_passthrough(s) else create_encoder(s)
            for c, s in sorted(specs.items())}


def default_encoder(modality: str) -> str:
    """The best installed encoder for a modality (pretrained when it is available)."""
    from .pretrained import best_available_encoder

    return best_available_encoder(modality)


def _holds_vectors(column: Any) -> bool:
    """True when a DataFrame column holds pre-extracted feature vectors (see views_to_frame)."""
    for value in column:
        if not (isinstance(value, float) and np.isnan(value)) and not is_missing(value):
            return isinstance(value, (np.ndarray, list, tuple))
    return False


# -- the featurizer --------------------------------------------------------------------------


@dataclass
class Encoded:
    """What a :class:`Featurizer` returns: views and presence masks (sorted keys), the item
    errors, and for :meth:`Featurizer.transform_deferred` the prepared items of the
    stateful encoders (their views are placeholders until :meth:`Featurizer.fit_fold`)."""

    views: Views
    present: Present
    errors: list[ItemError] = field(default_factory=list)
    deferred: dict[str, list[Any]] = field(default_factory=dict)
    #: features the on-disk cache failed to store
    not_cached: int = 0

    def __iter__(self):  # unpacks as (views, present, errors)
        return iter((self.views, self.present, self.errors))


class Featurizer:
    """Raw columns in, views + presence masks + item errors out.

    Parameters
    ----------
    encoders : dict
        View name -> Encoder or :data:`PASSTHROUGH` (built, e.g. by :func:`build_encoders`).
        They are used as given: :meth:`fit_transform` fits the stateful ones in place.
    dims : dict, default=None
        View name -> width the views must have (a fitted model's ``view_dims_``); checked
        by :meth:`transform`.
    sources : dict, default=None
        View name -> the input columns it reads (default: the column of its own name). A
        view with several columns gets one ``{column: cell}`` record per row.
    owner : str, default="the model"
        Named in width errors (scikit-learn's "... but X is expecting N features").
    """

    def __init__(self, encoders: Mapping[str, Any], *, dims: Mapping[str, int] | None = None,
                 sources: Mapping[str, Sequence[str]] | None = None, owner: str = "the model",
                 pooling: str = "mean"):
        self.encoders = {c: (PASSTHROUGH if is_passthrough(e) else e)
                         for c, e in sorted(encoders.items())}
        self.dims = dict(dims or {})
        self.sources = {v: (tuple(sources[v]) if sources and v in sources
                            else source_columns(v, e)) for v, e in self.encoders.items()}
        self.owner = owner
        #: how a cell holding several files is pooled (see :mod:`mmfuse.encoders.cells`)
        self.pooling = pooling

    # -- what the views are -----------------------------------------------------------
    @property
    def views(self) -> list[str]:
        """The view names, sorted."""
        return list(self.encoders)

    @property
    def columns(self) -> list[str]:
        """The input columns read, sorted."""
        return sorted({c for cols in self.sources.values() for c in cols})

    def kind(self, view: str) -> str:
        """``"image"``, ``"text"``, ``"audio"``... for an encoded view, ``"features"`` for a
        passthrough one."""
        return self.encoders[view].modality

    def dim(self, view: str) -> int | None:
        """The width of ``view``, or None when it is not known (before fitting)."""
        if view in self.dims:
            return int(self.dims[view])
        enc = self.encoders[view]
        if is_passthrough(enc):
            return None
        try:
            return int(enc.dim)
        except Exception:  # noqa: BLE001 - an encoder whose dim is known once fitted
            return None

    # -- whole tables ---------------------------------------------------------------------
    def fit_transform(self, X: Any, *, on_error: str = "raise", cache: Any = True,
                      progress: Progress | None = None) -> Encoded:
        """Encode ``X``, fitting the stateful encoders on all of its rows."""
        return self._encode(X, "fit", on_error, cache, progress, "error")

    def transform(self, X: Any, *, on_error: str = "raise", cache: Any = True,
                  progress: Progress | None = None, missing_columns: str = "error",
                  n_rows: int | None = None) -> Encoded:
        """Encode ``X`` with the (fitted) encoders.

        ``missing_columns="absent"`` makes a column that ``X`` lacks missing for every row
        (``n_rows`` rows when ``X`` has no column at all).
        """
        return self._encode(X, "transform", on_error, cache, progress, missing_columns,
                            n_rows)

    def transform_deferred(self, X: Any, *, on_error: str = "raise", cache: Any = True,
                           progress: Progress | None = None) -> Encoded:
        """Encode what cannot leak (passthrough and stateless encoders) once; keep the
        stateful encoders' prepared items in ``Encoded.deferred`` for :meth:`fit_fold`."""
        return self._encode(X, "defer", on_error, cache, progress, "error")

    def fit_fold(self, encoded: Encoded, train: np.ndarray) -> Views:
        """Views of every row, with the deferred (stateful) encoders fit on ``train`` rows
        only, on copies: the featurizer's encoders are not changed."""
        import copy

        views = dict(encoded.views)
        for view, prepared in encoded.deferred.items():
            mask = encoded.present[view]
            index = np.cumsum(mask) - 1  # position of each present row in ``prepared``
            train_items = [prepared[index[r]] for r in train if mask[r]]
            fold_encoder = copy.deepcopy(self.encoders[view]).fit_prepared(train_items)
            views[view] = fold_encoder.assemble(prepared, mask)
        return views

    def _encode(self, X: Any, mode: str, on_error: str, cache: Any, progress: Progress | None,
                missing_columns: str, n_rows: int | None = None) -> Encoded:
        check_on_error(on_error)
        if missing_columns not in ("error", "absent"):
            raise InputError(f"missing_columns must be 'error' or 'absent'; got "
                             f"{missing_columns!r}")
        if isinstance(X, Mapping) and not X and n_rows is not None:
            columns, n = {}, n_rows
        else:
            columns, n = as_columns(X)
        lacking = [c for c in self.columns if c not in columns]
        if lacking and missing_columns == "error":
            raise InputError(
                f"X lacks the columns the model was trained on: {lacking}; "
                f"got {sorted(map(str, columns))} (use None cells for a missing modality)"
            )
        out = Encoded({}, {})
        given_present: set[str] = set()
        for view, enc in self.encoders.items():
            cells = self._cells(columns, view, n)
            if is_passthrough(enc):
                out.views[view], mask = enc.view(view, cells, self.dims.get(view))
                if mask is not None:
                    out.present[view] = mask
                    given_present.add(view)
                continue
            cells = cells.tolist() if hasattr(cells, "tolist") and not isinstance(
                cells, np.ndarray) else list(cells)
            if enc.stateless:
                from ..extract import extract_features
                from .cells import pooled

                tick = None if progress is None else (
                    lambda done, total, v=view: progress(f"features: {v}", done, total))
                counts: dict[str, Any] = {}
                # a cell with several files is embedded file by file, then pooled
                view_, mask, errors = pooled(
                    lambda items, oe, enc=enc, view=view, tick=tick, counts=counts:
                    extract_features(enc, items, cache=cache, on_error=oe, column=view,
                                     progress=tick, stats=counts),
                    cells, pooling=self.pooling, on_error=on_error, column=view)
                out.not_cached += counts.get("not_cached", 0)
            else:
                prepared, mask, errors = enc.prepare_all(cells, on_error, column=view)
                if mode == "defer":
                    out.deferred[view] = prepared
                    view_ = np.full((n, 1), np.nan, np.float32)  # placeholder until fit_fold
                else:
                    if mode == "fit":
                        enc.fit_prepared(prepared)
                    view_ = enc.assemble(prepared, mask)
            out.views[view], out.present[view] = view_, mask
            given_present.add(view)
            out.errors += errors
        if mode == "transform":
            self._check_dims(out.views)
        fixed = [v for v in out.views if v not in out.deferred]
        if fixed:
            views, present = check_views(
                {v: out.views[v] for v in fixed},
                {v: out.present[v] for v in fixed if v in given_present} or None)
            out.views.update(views)
            out.present.update(present)
        out.views = dict(sorted(out.views.items()))
        out.present = dict(sorted(out.present.items()))
        out.errors.sort(key=lambda e: e.row)
        return out

    def _cells(self, columns: Mapping[str, Any], view: str, n: int) -> Any:
        """The raw cells of ``view``: its column's (None where the column is absent), or one
        ``{column: cell}`` record per row when it reads several columns."""
        sources = self.sources[view]
        if len(sources) == 1:
            values = columns.get(sources[0]) if isinstance(columns, Mapping) else (
                columns[sources[0]] if sources[0] in columns else None)
            return [None] * n if values is None else values
        lists = [list(columns[c]) if c in columns else [None] * n for c in sources]
        return [None if all(is_missing(v) for v in row) else dict(zip(sources, row))
                for row in zip(*lists)]

    def _check_dims(self, views: Views) -> None:
        for view, dim in self.dims.items():
            if view in views and views[view].shape[1] != dim:
                where = "" if view == "x" else f" in column {view!r}"
                raise InputError(
                    f"X has {views[view].shape[1]} features{where}, but {self.owner} is "
                    f"expecting {dim} features as input"
                )

    # -- one item at a time (the HTTP service) ----------------------------------------------
    def prepare_item(self, view: str, raw: Any) -> Any:
        """One decoded item of ``view``, ready for :meth:`views_from_prepared`. Raises
        :class:`~mmfuse.encoders.MissingItem` when the item turns out empty, and the
        decoder's error when it is unreadable. Passthrough vectors pass as they are."""
        enc = self.encoders[view]
        if is_passthrough(enc):
            return raw
        if is_missing(raw):
            raise MissingItem(view)
        return enc.prepare(raw)

    def views_from_prepared(self, batch: Sequence[Mapping[str, Any]]) -> tuple[Views, Present]:
        """Views of a batch of samples, each a ``{view: prepared item}`` dict (a view it
        lacks is missing): one encoder call per view."""
        n = len(batch)
        views: Views = {}
        present: Present = {}
        for view, enc in self.encoders.items():
            mask = np.array([view in item for item in batch], dtype=bool)
            items = [item[view] for item in batch if view in item]
            if is_passthrough(enc):
                dim = self.dim(view) or (len(items[0]) if items else 1)
                out = np.full((n, dim), np.nan, dtype=np.float32)
                if items:
                    out[mask] = np.stack(items)
            else:
                out = enc.assemble(items, mask)
            views[view], present[view] = out, mask
        return check_views(views, present)
