"""The ``tabular`` encoder: several table columns (numbers, categories, booleans, dates) as
one view, learned on the training rows only.

Unlike the other encoders it reads several columns of the input table: each item is one row,
a mapping ``{column: value}`` built by :func:`row_items` from the columns the encoder names.
The view is called ``tabular`` (the key of ``encoders=``); it is "missing" for a row whose
tabular cells are all empty, exactly as an image cell that is None.

What is learned (``fit`` / ``fit_prepared``, training folds only), with scikit-learn's
transformers:

* numeric, boolean and date columns: :class:`~sklearn.impute.SimpleImputer` (median, plus a
  missing-value flag for every column that had a gap in training), then
  :class:`~sklearn.preprocessing.RobustScaler` (median / inter-quartile range), clipped to
  ``[-clip, clip]`` so that one extreme value cannot dominate a linear model;
* categorical columns: a ``"(missing)"`` level for empty cells, then
  :class:`~sklearn.preprocessing.OneHotEncoder` keeping the levels seen at least
  ``min_frequency`` times (at most ``max_levels`` per column); rarer levels share one
  ``infrequent`` level, and a level never seen in training goes there too (or, when training
  had no rare level, gets all zeros: "other/unseen").

Values are checked per row (``prepare``): text in a numeric column, ``inf``, an unparsable
date or boolean are item errors naming the row and the column, handled by ``on_error`` like
an unreadable image. Booleans accept ``true/false``, ``yes/no``, ``1/0`` (any case); dates
accept ISO 8601 strings, ``datetime``/``date`` and pandas timestamps and become the
fractional year (e.g. ``2024.5``). A column holding dates that is declared numeric is
refused with the hint to declare it under ``dates``.

The categorical levels seen in training are part of the fitted encoder (like the class
labels, they ship in a saved model).

Examples
--------
>>> import pandas as pd
>>> from mmfuse.encoders.tabular import TabularEncoder, row_items
>>> df = pd.DataFrame({"price": [1.0, 2.0, None, 4.0], "kind": ["a", "b", "a", None]})
>>> enc = TabularEncoder(numeric=["price"], categorical=["kind"], min_frequency=1)
>>> enc.fit_transform(row_items(df, enc)).shape
(4, 5)
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .base import Encoder, MissingItem, is_missing
from .registry import register_encoder

MISSING_LEVEL = "(missing)"
_TRUE = {"true", "yes", "y", "1", "t"}
_FALSE = {"false", "no", "n", "0", "f"}
KINDS = ("numeric", "categorical", "boolean", "dates")


def _names(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{what} must be a list of column names; got {value!r}")
    return list(value)


def parse_number(value: Any, column: str) -> float:
    """A finite float, or NaN for an empty cell; anything else is an InputError."""
    if is_missing(value):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (_dt.date, np.datetime64)) or type(value).__name__ == "Timestamp":
        raise InputError(f"column {column!r} holds a date ({value!s}); declare it under "
                         f"dates (--dates) rather than numeric")
    if isinstance(value, (int, float, np.integer, np.floating)):
        out = float(value)
    elif isinstance(value, str):
        try:
            out = float(value.strip())
        except ValueError:
            raise InputError(f"column {column!r} holds {value[:40]!r}; expected a number "
                             f"(or an empty cell)") from None
    else:
        raise InputError(f"column {column!r} holds a {type(value).__name__}; expected a number")
    if math.isnan(out):
        return math.nan
    if not math.isfinite(out):
        raise InputError(f"column {column!r} holds {value!r}; expected a finite number")
    return out


def parse_boolean(value: Any, column: str) -> float:
    """1.0 / 0.0, or NaN for an empty cell."""
    if is_missing(value):
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(bool(value))
    if isinstance(value, (int, np.integer, float, np.floating)) and value in (0, 1):
        return float(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise InputError(f"column {column!r} holds {str(value)[:40]!r}; expected a boolean "
                     f"(true/false, yes/no, 1/0)")


def parse_date(value: Any, column: str) -> float:
    """The fractional year of a date (``2024-07-02`` -> about 2024.5), NaN when empty."""
    if is_missing(value):
        return math.nan
    import pandas as pd

    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        raise InputError(f"column {column!r} holds the number {value!r}; expected a date "
                         f"(ISO 8601, e.g. 2024-07-02)")
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise InputError(f"column {column!r} holds {str(value)[:40]!r}; expected a date "
                         f"(ISO 8601, e.g. 2024-07-02)") from None
    if ts is pd.NaT:
        return math.nan
    start = pd.Timestamp(year=ts.year, month=1, day=1, tz=ts.tz)
    days = 366 if ts.is_leap_year else 365
    return ts.year + (ts - start).total_seconds() / (days * 86400.0)


def parse_category(value: Any, column: str) -> str:
    if is_missing(value):
        return MISSING_LEVEL
    if isinstance(value, (list, dict, tuple, set, np.ndarray)):
        raise InputError(f"column {column!r} holds a {type(value).__name__}; expected one "
                         f"categorical value")
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # 3.0 and "3" are one level
    return str(value).strip()


@register_encoder("tabular", modality="tabular", dim=None,
                  description="table columns: numbers (median-imputed, missing flags, robust "
                              "scaling), one-hot categories, booleans, dates")
class TabularEncoder(Encoder):
    """Numeric, categorical, boolean and date columns of a table as one learned view.

    Parameters
    ----------
    numeric : list of str, default=()
        Numeric columns: median imputation, a missing flag, robust scaling.
    categorical : list of str, default=()
        Categorical columns: one-hot of the frequent levels, one shared level for the rest.
    boolean : list of str, default=()
        Boolean columns (true/false, yes/no, 1/0), imputed and flagged like numbers.
    dates : list of str, default=()
        Date columns (ISO 8601), used as the fractional year, then like numbers.
    min_frequency : int, default=5
        A categorical level seen fewer times in training joins the ``infrequent`` level.
    max_levels : int, default=20
        At most this many one-hot columns per categorical column (the rest: infrequent).
    clip : float, default=5.0
        Scaled numbers are clipped to ``[-clip, clip]``.

    Attributes
    ----------
    numeric_ : sklearn Pipeline or None
        SimpleImputer(median, add_indicator=True) + RobustScaler, fitted.
    categorical_ : sklearn Pipeline or None
        OneHotEncoder, fitted.
    feature_names_ : list of str
        The names of the output columns (``price``, ``missing:price``, ``kind=a``...).
    """

    name = "tabular"
    modality = "tabular"
    stateless = False
    #: The encoder reads several table columns; the featurizer builds its items with
    #: :func:`row_items`.
    multi_column = True

    def __init__(self, *, numeric: Sequence[str] = (), categorical: Sequence[str] = (),
                 boolean: Sequence[str] = (), dates: Sequence[str] = (),
                 min_frequency: int = 5, max_levels: int = 20, clip: float = 5.0):
        self.numeric = numeric
        self.categorical = categorical
        self.boolean = boolean
        self.dates = dates
        self.min_frequency = min_frequency
        self.max_levels = max_levels
        self.clip = clip

    # -- columns ------------------------------------------------------------------------
    def _kinds(self) -> dict[str, list[str]]:
        kinds = {kind: _names(getattr(self, kind), kind) for kind in KINDS}
        seen: dict[str, str] = {}
        for kind, cols in kinds.items():
            for col in cols:
                if col in seen:
                    raise ValueError(f"column {col!r} is listed as both {seen[col]} and {kind}")
                seen[col] = kind
        if not seen:
            raise ValueError("the tabular encoder needs at least one column: numeric=[...], "
                             "categorical=[...], boolean=[...] or dates=[...] (CLI: "
                             "--numeric a,b --categorical c)")
        return kinds

    @property
    def columns(self) -> list[str]:
        """Every input column, in the order numeric, boolean, dates, categorical."""
        return list(self._plan()[0])

    @property
    def input_columns(self) -> list[str]:
        """The table columns this view reads (the featurizer's multi-column hook)."""
        return self.columns

    def config(self) -> dict[str, Any]:
        out = super().config()
        for kind in KINDS:
            out[kind] = _names(out.get(kind), kind)
        return out

    # -- the encoder contract -----------------------------------------------------------
    def _plan(self) -> tuple[list[str], list[Any], int]:
        """``(columns, parser per column, number of numeric-like columns)``, checked once
        per set of column parameters (the service prepares one row per request: checking
        the lists again every time would cost more than parsing the row)."""
        key = tuple(tuple(v) if isinstance(v, (list, tuple)) else v
                    for v in (self.numeric, self.boolean, self.dates, self.categorical))
        cached = self.__dict__.get("_plan_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        kinds = self._kinds()
        columns = kinds["numeric"] + kinds["boolean"] + kinds["dates"] + kinds["categorical"]
        parsers = ([parse_number] * len(kinds["numeric"]) + [parse_boolean] * len(kinds["boolean"])
                   + [parse_date] * len(kinds["dates"])
                   + [parse_category] * len(kinds["categorical"]))
        n_num = len(columns) - len(kinds["categorical"])
        self._plan_cache = (key, (columns, parsers, n_num))
        return columns, parsers, n_num

    def prepare(self, item: Any) -> tuple[list[float], list[str]]:
        """Check and convert one row: ``(numbers, categories)``; MissingItem when all empty."""
        columns, parsers, n_num = self._plan()
        if not isinstance(item, Mapping) and len(columns) == 1:
            item = {columns[0]: item}  # a one-column table arrives as its cells
        if not isinstance(item, Mapping):
            raise InputError(f"a tabular item is a mapping column -> value; got "
                             f"{type(item).__name__}")
        try:
            values = [item[c] for c in columns]
        except KeyError:
            absent = [c for c in columns if c not in item]
            raise InputError(f"tabular columns {absent} are absent from the row") from None
        if all(is_missing(v) for v in values):
            raise MissingItem()
        parsed = []
        for parse, v, c in zip(parsers, values, columns):
            try:
                parsed.append(parse(v, c))
            except InputError as exc:
                exc.column = c  # the service names this field in its 422 answer
                raise
        return parsed[:n_num], parsed[n_num:]

    def _check_params(self) -> None:
        for label, value, low in (("min_frequency", self.min_frequency, 1),
                                  ("max_levels", self.max_levels, 2)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{label} must be an integer >= {low}; got {value!r}")
        if isinstance(self.clip, bool) or not isinstance(self.clip, (int, float)) or not self.clip > 0:
            raise ValueError(f"clip must be a number > 0; got {self.clip!r}")

    def fit_prepared(self, prepared: Sequence[Any]) -> "TabularEncoder":
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, RobustScaler

        self._check_params()
        kinds = self._kinds()
        if not len(prepared):
            raise InputError("the tabular columns are empty in every training row; nothing "
                             "to learn from")
        num, cat = self._arrays(prepared)
        names: list[str] = []
        self.numeric_ = None
        self.categorical_ = None
        if num.shape[1]:
            self.numeric_ = Pipeline([
                ("impute", SimpleImputer(strategy="median", add_indicator=True,
                                         keep_empty_features=True)),
                ("scale", RobustScaler()),
            ]).fit(num)
            cols = kinds["numeric"] + kinds["boolean"] + kinds["dates"]
            flags = self.numeric_.named_steps["impute"].indicator_
            names += cols + ([f"missing:{cols[i]}" for i in flags.features_]
                             if flags is not None else [])
        if cat.shape[1]:
            self.categorical_ = Pipeline([
                ("onehot", OneHotEncoder(handle_unknown="infrequent_if_exist",
                                         min_frequency=int(self.min_frequency),
                                         max_categories=int(self.max_levels),
                                         sparse_output=False, dtype=np.float32)),
            ]).fit(cat)
            names += self._onehot_names(kinds["categorical"])
        self.feature_names_ = names
        return self

    def _onehot_names(self, cols: list[str]) -> list[str]:
        onehot = self.categorical_.named_steps["onehot"]
        out = []
        for col, levels, infrequent in zip(cols, onehot.categories_,
                                           onehot.infrequent_categories_):
            rare = set() if infrequent is None else set(infrequent.tolist())
            out += [f"{col}={lv}" for lv in levels.tolist() if lv not in rare]
            if rare:
                out.append(f"{col}=infrequent")
        return out

    def _arrays(self, prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        n_num = len(prepared[0][0]) if len(prepared) else 0
        n_cat = len(prepared[0][1]) if len(prepared) else 0
        num = np.array([p[0] for p in prepared], dtype=np.float64).reshape(len(prepared), n_num)
        cat = np.array([p[1] for p in prepared], dtype=object).reshape(len(prepared), n_cat)
        return num, cat

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:
        """The learned transform of a batch.

        It applies the fitted scikit-learn transformers' own parameters (imputer
        statistics, missing-flag features, scaler centre and scale, one-hot columns per
        level) directly: the same numbers as their ``transform`` (tested), without its
        per-call validation, which costs milliseconds on the one-row requests of the
        service. :meth:`embed_sklearn` is the reference path.
        """
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("the tabular encoder is not fitted; call fit first")
        num, cat = self._arrays(prepared)
        blocks = []
        if self.numeric_ is not None:
            fill, flagged, center, scale = self._numeric_params()
            missing = np.isnan(num)
            filled = np.where(missing, fill, num)
            if flagged is not None:
                filled = np.concatenate([filled, missing[:, flagged]], axis=1)
            scaled = (filled - center) / scale
            clip = float(self.clip)
            blocks.append(np.minimum(np.maximum(scaled, -clip), clip))
        if self.categorical_ is not None:
            lookup, unseen = self._onehot_lookup()
            out = np.zeros((len(cat), sum(len(u) for u in unseen)), dtype=np.float64)
            start = 0
            for j in range(cat.shape[1]):
                width = len(unseen[j])
                for i, level in enumerate(cat[:, j]):
                    out[i, start:start + width] = lookup[j].get(level, unseen[j])
                start += width
            blocks.append(out)
        out = blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1)
        return out.astype(np.float32)

    def _numeric_params(self) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
        """The fitted imputer's and scaler's numbers (fill values, flagged columns, centre,
        scale), read once from the fitted transformers themselves."""
        cached = self.__dict__.get("_numeric_cache")
        if cached is not None and cached[0] is self.numeric_:
            return cached[1]
        impute = self.numeric_.named_steps["impute"]
        scale = self.numeric_.named_steps["scale"]
        flagged = (np.asarray(impute.indicator_.features_)
                   if impute.indicator_ is not None else None)
        params = (np.asarray(impute.statistics_, dtype=np.float64)[None, :], flagged,
                  np.asarray(scale.center_, dtype=np.float64),
                  np.asarray(scale.scale_, dtype=np.float64))
        self._numeric_cache = (self.numeric_, params)
        return params

    def embed_sklearn(self, prepared: Sequence[Any]) -> np.ndarray:
        """:meth:`embed` through the transformers' ``transform`` (the reference)."""
        num, cat = self._arrays(prepared)
        blocks = []
        if self.numeric_ is not None:
            scaled = self.numeric_.transform(num)
            blocks.append(np.clip(scaled, -float(self.clip), float(self.clip)))
        if self.categorical_ is not None:
            import warnings

            with warnings.catch_warnings():  # unseen levels: counted as infrequent / other
                warnings.simplefilter("ignore", UserWarning)
                blocks.append(self.categorical_.transform(cat))
        return np.hstack(blocks).astype(np.float32)

    def _onehot_lookup(self) -> tuple[list[dict[str, np.ndarray]], list[np.ndarray]]:
        """Per categorical column, level -> its one-hot block, and the block of an unseen
        level; read once from the fitted OneHotEncoder itself."""
        cached = getattr(self, "_lookup", None)
        if cached is not None and cached[0] is self.categorical_:
            return cached[1], cached[2]
        import warnings

        onehot = self.categorical_.named_steps["onehot"]
        levels = [list(c) for c in onehot.categories_]
        rows = max(len(lv) for lv in levels) + 1
        probe = np.empty((rows, len(levels)), dtype=object)
        for j, lv in enumerate(levels):
            for r in range(rows):
                probe[r, j] = lv[r] if r < len(lv) else "\x00mmfuse-unseen-level"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            coded = onehot.transform(probe)
        lookup, unseen, start = [], [], 0
        for j, lv in enumerate(levels):
            infrequent = onehot.infrequent_categories_[j]
            rare = set() if infrequent is None else set(infrequent.tolist())
            width = sum(1 for level in lv if level not in rare) + (1 if rare else 0)
            block = coded[:, start:start + width]
            lookup.append({level: block[r].copy() for r, level in enumerate(lv)})
            unseen.append(block[rows - 1].copy())
            start += width
        self._lookup = (self.categorical_, lookup, unseen)
        return lookup, unseen

    @property
    def dim(self) -> int:
        if not hasattr(self, "feature_names_"):
            raise RuntimeError("the tabular encoder's width is known once it is fitted")
        return len(self.feature_names_)


def row_items(columns: Any, encoder: Encoder) -> list[dict[str, Any] | None]:
    """The items of a multi-column encoder: one ``{column: value}`` record per row (None
    where every cell is empty), built by :func:`mmfuse.encoders.cells.row_records` as the
    featurizer builds them.

    ``columns`` is a DataFrame or a mapping column -> sequence. A column the encoder needs
    and the table lacks is an :class:`~mmfuse.InputError` listing what is there.
    """
    from .cells import row_records

    needed = encoder.columns
    have = list(columns.columns) if hasattr(columns, "columns") else list(columns)
    absent = [c for c in needed if c not in have]
    if absent:
        raise InputError(f"the tabular columns {absent} are not in the data; it has "
                         f"{sorted(map(str, have))}")
    return row_records(columns, needed, len(columns[needed[0]]))


def gather_fields(fields: Mapping[str, Any], encoders: Mapping[str, Any]
                  ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a request's fields into the other fields and one ``{column: value}`` record per
    multi-column view (the HTTP service: a tabular view's fields are named after its
    columns; the record is built by :func:`mmfuse.encoders.cells.row_records`, as the
    featurizer builds a table's).

    A column absent from the request is an empty cell; a view none of whose columns was sent
    with a value gets no item (the modality is missing). A value that is not a JSON scalar
    is an :class:`~mmfuse.InputError` naming the field.
    """
    from .cells import row_records

    rest = dict(fields)
    tables: dict[str, dict[str, Any]] = {}
    for view, enc in encoders.items():
        columns = getattr(enc, "input_columns", None) if not isinstance(enc, str) else None
        if not columns or not getattr(enc, "multi_column", False):
            continue
        sent = {c: rest.pop(c) for c in columns if c in rest}
        for c, v in sent.items():
            if v is not None and not isinstance(v, (str, int, float, bool)):
                raise InputError(f"field {c!r} (a column of {view!r}) must be a number, a "
                                 f"string, a boolean or null; got {type(v).__name__}")
        record = row_records({c: [v] for c, v in sent.items()}, list(columns), 1)[0]
        if record is not None:
            tables[view] = record
    return rest, tables
