"""Predictions as a table: label, per-class probabilities, the modalities each row used, and
what went wrong per row.

The functions here read the fitted model and never change it, so one model can serve
several threads (the HTTP service relies on that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.utils.validation import check_is_fitted

from ._params import check_on_error
from ._errors import InputError
from .encoders.base import ItemError
from .views import Present, Views

PROBA_PREFIX = "proba_"


def model_columns(model: Any) -> list[str]:
    """The input columns of a fitted model, sorted."""
    return model.featurizer().columns


def source_columns(model: Any) -> dict[str, str]:
    """Model column -> the column of the table it was trained on, where they differ (empty
    for a model fitted on its own column names, or saved before models remembered them)."""
    return dict(getattr(model, "source_columns_", None) or {})


def display_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A copy of a prediction table for display: probabilities and modality shares rounded
    to ``digits`` (a file written by :func:`write_predictions` keeps full precision)."""
    from .explain import SHARE_PREFIX

    out = table.copy()
    for col in out.columns:
        if str(col).startswith((PROBA_PREFIX, SHARE_PREFIX)) and pd.api.types.is_float_dtype(
                out[col]):
            out[col] = out[col].round(digits)
    return out


def column_kind(model: Any, column: str) -> str:
    """``"image"``, ``"text"`` or ``"audio"`` for an encoded column, ``"features"`` for a
    passthrough column (pre-extracted feature vectors)."""
    return model.featurizer().kind(column)


def view_dim(model: Any, column: str) -> int | None:
    """Width of ``column``'s view, or None when the model does not record it."""
    return model.featurizer().dim(column)


def encode(model: Any, columns: Mapping[str, Sequence[Any]], n_rows: int,
           on_error: str = "raise", progress: Any = None
           ) -> tuple[Views, Present, list[ItemError]]:
    """The fitted encoders' views of raw columns, without touching the model's state.

    ``columns`` maps each model column to ``n_rows`` raw items (missing items: None, NaN,
    ""). A column absent from ``columns`` is missing for every row. ``progress(stage,
    done, total)`` is called as the features are computed.
    """
    encoded = model.featurizer().transform(dict(columns), on_error=on_error,
                                           missing_columns="absent", n_rows=n_rows,
                                           progress=progress)
    return encoded.views, encoded.present, encoded.errors


def predict_views(model: Any, views: Views, present: Present) -> np.ndarray:
    """Class probabilities (n, n_classes) of views built by :func:`encode`; rows with no
    usable modality get the strategy's answer for an empty row (the class prior)."""
    return model.predict_views(views, present)


def modalities_used(model: Any, present: Present | None = None) -> Any:
    """The columns the fitted fusion strategy uses (a column missing from every training row
    is dropped by the strategy and never used), sorted; with ``present`` (column -> row
    mask), per row the ones that were present and used."""
    used = list(getattr(model.fusion_, "modalities_", model_columns(model)))
    if present is None:
        return used
    n = len(next(iter(present.values()))) if present else 0
    return [[m for m in used if m in present and bool(present[m][i])] for i in range(n)]


def predict_table(model: Any, df: pd.DataFrame | Mapping[str, Sequence[Any]], *,
                  on_error: str | None = None, keep: Sequence[str] = (),
                  missing_columns: str = "error", explain: bool = False,
                  progress: Any = None, sets: bool = False) -> pd.DataFrame:
    """Predict every row of a table.

    Parameters
    ----------
    model : MultimodalClassifier
        A fitted (or loaded) model.
    df : DataFrame or dict of column -> items
        One row per sample, one column per model column (see ``model.encoders_``); missing
        items are None, NaN or "".
    on_error : {"raise", "skip"} or None, default=None
        None uses the model's ``on_error``. ``"raise"``: an unreadable item, or a row with no
        usable modality, raises :class:`~mmfuse.InputError` naming the row and column.
        ``"skip"``: the item counts as missing and its message goes to the row's ``error``
        column; a row with no usable modality gets the class prior and an error.
    keep : sequence of str, default=()
        Columns of ``df`` copied to the front of the result (an id, a path...).
    missing_columns : {"error", "absent"}, default="error"
        What a model column that ``df`` lacks does: an error, or the modality is missing for
        every row.
    explain : bool, default=False
        Add one ``share_<modality>`` column per modality of the fusion strategy: how much
        it moved the row's prediction (see :mod:`mmfuse.explain`).
    progress : callable, default=None
        ``progress(stage, done, total)``, called as the features are computed.
    sets : bool, default=False
        Add a ``set`` column: the row's conformal prediction set, its labels joined by
        ``|`` ("" for an empty set); needs a model fitted with ``coverage``.

    Returns
    -------
    DataFrame
        Same index as ``df``: the kept columns, ``label``, one ``proba_<class>`` column per
        class, with ``sets`` the ``set`` column, ``modalities_used`` (the columns used,
        joined by "+"), with ``explain`` the ``share_<modality>`` columns, and ``error``
        ("" when none).

    Examples
    --------
    >>> predict_table(mmfuse.load("m.mmfuse"), df).head()  # doctest: +SKIP
    """
    check_is_fitted(model, "fusion_")
    unc = getattr(model, "uncertainty_", None)
    if sets and (unc is None or unc.conformal is None):
        raise InputError("prediction sets need a model trained with a coverage (mmfuse train "
                         "--coverage 0.9, or coverage=0.9)")
    on_error = model.on_error if on_error is None else on_error
    check_on_error(on_error)
    if missing_columns not in ("error", "absent"):
        raise InputError(f"missing_columns must be 'error' or 'absent'; got {missing_columns!r}")
    if not isinstance(df, pd.DataFrame):
        if not isinstance(df, Mapping):
            raise InputError(f"expected a DataFrame or a dict of columns; got {type(df).__name__}")
        df = pd.DataFrame(dict(df))
    cols = model_columns(model)
    missing = [c for c in cols if c not in df.columns]
    if missing and missing_columns == "error":
        raise InputError(
            f"the table lacks the model's columns {missing}; it has {sorted(map(str, df.columns))} "
            f"(the model's columns are {cols}; add empty columns to predict without them)"
        )
    unknown_keep = [c for c in keep if c not in df.columns]
    if unknown_keep:
        raise InputError(f"keep names columns the table does not have: {unknown_keep}")

    n = len(df)
    columns = {c: df[c] for c in cols if c in df.columns}
    views, present, errors = encode(model, columns, n, on_error, progress)
    used = modalities_used(model, present)
    empty = [i for i, u in enumerate(used) if not u]
    if empty and on_error == "raise":
        raise InputError(
            f"row {df.index[empty[0]]!r} has no usable modality ({len(empty)} such rows); "
            f"nothing to predict from (use on_error='skip' to get the class prior)"
        )
    proba = predict_views(model, views, present) if n else np.zeros((0, len(model.classes_)))

    messages: list[list[str]] = [[] for _ in range(n)]
    for e in errors:
        messages[e.row].append(f"{e.column}: {e.message}" if e.column else e.message)
    for i in empty:
        messages[i].append("no usable modality: predicted the class prior")

    out = pd.DataFrame(index=df.index)
    for c in keep:
        out[c] = df[c].to_numpy()
    classes = np.asarray(model.classes_)
    out["label"] = classes[np.argmax(proba, axis=1)] if n else classes[:0]
    for k, cls in enumerate(classes):
        out[f"{PROBA_PREFIX}{cls}"] = proba[:, k]
    if sets:
        chosen = model.predict_set_views(views, present, proba) if n else np.zeros((0, 0), bool)
        out["set"] = ["|".join(map(str, classes[row])) for row in chosen]
    out["modalities_used"] = ["+".join(u) for u in used]
    if explain:
        from .explain import SHARE_PREFIX, explain_views

        exp = explain_views(model.fusion_, views, present)
        for j, m in enumerate(exp.modalities):
            out[f"{SHARE_PREFIX}{m}"] = exp.shares[:, j] if n else np.zeros(0)
    out["error"] = ["; ".join(m) for m in messages]
    return out


def _table_columns(model: Any) -> dict[str, list[str]]:
    """Multi-column views (tabular) -> the input columns they read."""
    return {v: list(e.input_columns) for v, e in model.encoders_.items()
            if getattr(e, "multi_column", False)}


def predict_manifest(model: Any, manifest: str | os.PathLike, *,
                     columns: Mapping[str, str] | None = None, keep: Sequence[str] = (),
                     on_error: str | None = None, trusted: Sequence[str] = (),
                     explain: bool = False, progress: Any = None,
                     sets: bool = False) -> pd.DataFrame:
    """Predict every row of a manifest file (CSV, TSV, JSONL or Parquet).

    Parameters
    ----------
    model : MultimodalClassifier, str or path-like
        A fitted model, or the path of a model file (loaded with :func:`mmfuse.load`).
    manifest : str or path-like
        One row per sample. Relative file paths are resolved against the manifest's folder.
    columns : dict, default=None
        Model column -> manifest column, for the model columns whose manifest column has
        another name (e.g. ``{"image": "photo"}``). It overrides what the model remembers
        (``source_columns_``: the columns of the manifest it was trained on); the other
        columns are looked up by their name.
    keep : sequence of str, default=()
        Manifest columns copied to the front of the result (an id, the true label...); one
        whose name clashes with a result column gets an ``input_`` prefix.
    on_error : {"raise", "skip"} or None, default=None
        As in :func:`predict_table`.
    trusted : sequence of str, default=()
        Passed to :func:`mmfuse.load` when ``model`` is a path.
    explain, progress, sets
        As in :func:`predict_table`.

    Returns
    -------
    DataFrame
        The kept columns, then what :func:`predict_table` returns.
    """
    from .data.manifest import read_manifest

    if isinstance(model, (str, os.PathLike)):
        from .persist import load

        model = load(model, trusted=trusted)
    cols = model_columns(model)
    mapping = dict(columns or {})
    unknown = sorted(set(mapping) - set(cols))
    mapping = {**source_columns(model), **mapping}
    if unknown:
        raise InputError(f"columns maps {unknown}, which the model does not use; its columns "
                         f"are {cols}")
    # a tabular view's input columns are plain table columns, not views
    views = set(model.featurizer().views) - set(_table_columns(model))
    source = {c: mapping.get(c, c) for c in cols}
    files = [source[c] for c in cols
             if c in views and column_kind(model, c) in ("image", "audio")]
    df = read_manifest(manifest, columns=list(dict.fromkeys([*source.values(), *keep])),
                       path_columns=files)
    table = pd.DataFrame({c: df[source[c]].to_numpy(dtype=object) for c in cols},
                         index=df.index)
    out = predict_table(model, table, on_error=on_error, explain=explain, progress=progress,
                        sets=sets)
    for position, name in enumerate(keep):
        target = f"input_{name}" if name in out.columns else name
        out.insert(position, target, df[name].to_numpy())
    return out


def write_predictions(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a prediction table atomically as CSV (``.csv``), TSV (``.tsv``) or JSON Lines
    (``.jsonl``); returns the path.

    In CSV and TSV, a text cell that a spreadsheet would run as a formula (it starts with
    ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, and is not a number) is written
    with a leading ``'`` (OWASP's advice against CSV injection); JSON Lines is written as is.
    """
    from ._io import atomic_write_text

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", "", ".tsv"):
        safe = table.copy()
        for col in safe.columns:
            if safe[col].dtype == object or pd.api.types.is_string_dtype(safe[col].dtype):
                safe[col] = safe[col].map(_defuse_formula)
        text = safe.to_csv(index=False, sep="\t" if suffix == ".tsv" else ",")
    elif suffix == ".jsonl":
        text = table.to_json(orient="records", lines=True, force_ascii=False)
    else:
        raise InputError(f"unknown output extension {path.suffix!r}; use .csv, .tsv or .jsonl")
    return atomic_write_text(path, text)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defuse_formula(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        try:
            float(value)
            return value  # "-1.5" is a number, not a formula
        except ValueError:
            return "'" + value
    return value
