"""The one path from raw columns to views::

    raw table (DataFrame, dict of columns, 2-D array)
        ──► as_columns ──► resolve_encoders / build_encoders (fit only)
        ──► Featurizer: per view, the cells of its source column(s) (cells.row_records)
              passthrough   → the pre-extracted vectors themselves
              stateless     → extract_features (streamed, cached on disk), pooled per cell
              stateful      → prepare_all, fit_prepared (fit only), assemble
        ──► Encoded(views, present, errors)

Every caller encodes through a :class:`Featurizer` (``Featurizer._encode_cells`` is the one
place an encoder meets raw cells; ``tests/test_architecture.py`` checks that no other
module calls the extraction functions): the estimator (fit, predict, ``predict_table``,
explain), evaluation (:class:`~mmfuse.evaluate.FeatureTable`: fixed columns, and the
candidate encoders of an encoder choice, :func:`encode_candidates`), robustness, the
feature store (:mod:`mmfuse.features.write`) and the HTTP service, which uses its per-item
half (:meth:`Featurizer.prepare_item` per request, then :meth:`Featurizer.views_from_prepared`
on a micro-batch, pooling a cell of several files as :meth:`Featurizer.transform` does).

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
from .base import MODALITIES, Encoder, ItemError, MissingItem, fit_on_rows, is_missing
from .passthrough import PASSTHROUGH, Passthrough, is_passthrough

__all__ = ["PASSTHROUGH", "Encoded", "Featurizer", "Passthrough", "PreparedFiles",
           "as_columns", "build_encoders", "default_encoder", "encode_candidates",
           "is_passthrough", "resolve_encoders", "source_columns"]

Progress = Callable[[str, int, int], Any]


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


def encode_candidates(names: Sequence[str], X: Any, column: str, *, on_error: str = "raise",
                      cache: Any = True, progress: Progress | None = None,
                      stats: dict[str, Any] | None = None, scrub_pii: bool = False,
                      pooling: str = "mean") -> tuple[dict[str, Any], list[ItemError]]:
    """``({name: Part}, errors)``: every candidate encoder of column ``column`` of ``X`` (a
    table, or the column's cells) through a :class:`Featurizer`, as a fixed encoder (for
    :mod:`mmfuse.encoder_choice`; encoders that learn keep their prepared items). An
    item error is reported once per row (the first encoder's)."""
    from .parts import Part
    from .registry import create_encoder

    table = X if isinstance(X, Mapping) or hasattr(X, "columns") else {column: list(X)}
    parts: dict[str, Any] = {}
    errors: dict[int, ItemError] = {}
    for name in names:
        enc = create_encoder(name)
        if scrub_pii and enc.modality == "text":
            if not enc.scrubs_pii:
                raise InputError(f"scrub_pii=True, but the candidate encoder {name!r} of text "
                                 f"column {column!r} does not support scrubbing")
            enc.scrub_pii = True
        tick = None if progress is None else (lambda _, done, total, name=name: progress(
            f"features: {column} ({name})", done, total))
        out = Featurizer({column: enc}, sources={column: (column,)}, pooling=pooling
                         ).transform_deferred(table, on_error=on_error, cache=cache,
                                              progress=tick)
        present = np.asarray(out.present[column], bool)
        parts[name] = (Part(present, encoder=enc, prepared=out.deferred[column])
                       if column in out.deferred else Part(present, view=out.views[column]))
        if stats is not None:
            stats["not_cached"] = stats.get("not_cached", 0) + out.not_cached
        for e in out.errors:
            errors.setdefault(e.row, e)
    return parts, [errors[r] for r in sorted(errors)]


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
                  n_rows: int | None = None, batch_size: int | None = None,
                  workers: int | None = None) -> Encoded:
        """Encode ``X`` with the (fitted) encoders.

        ``missing_columns="absent"`` makes a column that ``X`` lacks missing for every row
        (``n_rows`` rows when ``X`` has no column at all). ``batch_size`` and ``workers``
        (decoding threads) tune the streamed extraction (:func:`mmfuse.extract.
        extract_features`; default: the encoder's preferences).
        """
        return self._encode(X, "transform", on_error, cache, progress, missing_columns,
                            n_rows, batch_size=batch_size, workers=workers)

    def transform_deferred(self, X: Any, *, on_error: str = "raise", cache: Any = True,
                           progress: Progress | None = None) -> Encoded:
        """Encode what cannot leak (passthrough and stateless encoders) once; keep the
        stateful encoders' prepared items in ``Encoded.deferred`` for :meth:`fit_fold`."""
        return self._encode(X, "defer", on_error, cache, progress, "error")

    def fit_fold(self, encoded: Encoded, train: np.ndarray) -> Views:
        """Views of every row, with the deferred (stateful) encoders fit on ``train`` rows
        only, on copies: the featurizer's encoders are not changed."""
        views = dict(encoded.views)
        for view, prepared in encoded.deferred.items():
            views[view] = fit_on_rows(self.encoders[view], prepared, encoded.present[view],
                                      train)
        return views

    def _encode(self, X: Any, mode: str, on_error: str, cache: Any, progress: Progress | None,
                missing_columns: str, n_rows: int | None = None, **stream: Any) -> Encoded:
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
            view_, mask, errors, prepared = self._encode_cells(
                view, cells, mode, on_error, cache, progress, out, **stream)
            if prepared is not None:
                out.deferred[view] = prepared
                view_ = np.full((n, 1), np.nan, np.float32)  # placeholder until fit_fold
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

    def _encode_cells(self, view: str, cells: Any, mode: str, on_error: str, cache: Any,
                      progress: Progress | None, out: Encoded, batch_size: int | None = None,
                      workers: int | None = None
                      ) -> tuple[Any, np.ndarray, list[ItemError], list[Any] | None]:
        """The one place an encoder meets raw cells: ``(view, present, errors, prepared)``.

        A stateless encoder streams through :func:`mmfuse.extract.extract_features` (the
        feature cache), a cell with several files embedded file by file and pooled
        (:func:`mmfuse.encoders.cells.pooled`); a stateful one prepares every cell, and is
        fit (``mode="fit"``), applied (``"transform"``) or keeps its prepared items for
        :meth:`fit_fold` (``"defer"``: ``prepared`` is returned, ``view`` is None).
        """
        enc = self.encoders[view]
        cells = cells.tolist() if hasattr(cells, "tolist") and not isinstance(
            cells, np.ndarray) else list(cells)
        if not enc.stateless:
            prepared, mask, errors = enc.prepare_all(cells, on_error, column=view)
            if mode == "defer":
                return None, mask, errors, prepared
            if mode == "fit":
                enc.fit_prepared(prepared)
            return enc.assemble(prepared, mask), mask, errors, None
        from ..extract import extract_features
        from .cells import pooled

        tick = None if progress is None else (
            lambda done, total: progress(f"features: {view}", done, total))
        counts: dict[str, Any] = {}
        view_, mask, errors = pooled(
            lambda items, oe: extract_features(enc, items, cache=cache, on_error=oe,
                                               column=view, progress=tick, stats=counts,
                                               batch_size=batch_size, workers=workers),
            cells, pooling=self.pooling, on_error=on_error, column=view)
        out.not_cached += counts.get("not_cached", 0)
        return view_, mask, errors, None

    def _cells(self, columns: Mapping[str, Any], view: str, n: int) -> Any:
        """The raw cells of ``view``: its column's (None where the column is absent), or one
        ``{column: cell}`` record per row when it reads several columns."""
        sources = self.sources[view]
        if len(sources) == 1:
            values = columns.get(sources[0]) if isinstance(columns, Mapping) else (
                columns[sources[0]] if sources[0] in columns else None)
            return [None] * n if values is None else values
        from .cells import row_records

        return row_records(columns, sources, n)

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
        """One decoded cell of ``view``, ready for :meth:`views_from_prepared`: the item
        prepared, or for a cell of several files (a list) each file prepared. Raises
        :class:`~mmfuse.encoders.MissingItem` when the cell turns out empty, and the
        decoder's error when a file is unreadable. Passthrough vectors pass as they are."""
        enc = self.encoders[view]
        if is_passthrough(enc):
            return raw
        from .cells import is_multi

        if enc.stateless and is_multi(raw):  # pooled in views_from_prepared, as in _encode
            files = []
            for item in raw:
                try:
                    files.append(enc.prepare(item))
                except MissingItem:
                    continue
            if not files:
                raise MissingItem(view)
            return PreparedFiles(files)
        if is_missing(raw):
            raise MissingItem(view)
        return enc.prepare(raw)

    def views_from_prepared(self, batch: Sequence[Mapping[str, Any]]) -> tuple[Views, Present]:
        """Views of a batch of samples, each a ``{view: prepared cell}`` dict (a view it
        lacks is missing): one encoder call per view, a cell of several files pooled as
        :meth:`transform` pools it."""
        from .cells import pooled

        n = len(batch)
        views: Views = {}
        present: Present = {}
        for view, enc in self.encoders.items():
            mask = np.array([view in item for item in batch], dtype=bool)
            if is_passthrough(enc):
                items = [item[view] for item in batch if view in item]
                dim = self.dim(view) or (len(items[0]) if items else 1)
                out = np.full((n, dim), np.nan, dtype=np.float32)
                if items:
                    out[mask] = np.stack(items)
            else:
                cells = [item.get(view) for item in batch]
                out, mask, _ = pooled(lambda items, oe, enc=enc: _assemble(enc, items),
                                      cells, pooling=self.pooling, column=view,
                                      items_of=PreparedFiles.items_of)
            views[view], present[view] = out, mask
        return check_views(views, present)


class PreparedFiles(list):
    """The prepared files of one cell of several files (see :meth:`Featurizer.prepare_item`)."""

    @staticmethod
    def items_of(cell: Any) -> list[Any] | None:
        return list(cell) if isinstance(cell, PreparedFiles) else None


def _assemble(enc: Any, items: list[Any]) -> tuple[Any, np.ndarray, list[ItemError]]:
    """``(view, present, [])`` of prepared items, None ones missing."""
    mask = np.array([i is not None for i in items], dtype=bool)
    return enc.assemble([i for i in items if i is not None], mask), mask, []
