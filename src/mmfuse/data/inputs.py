"""Where the command line's data comes from: a manifest, a bundled dataset, pre-extracted
arrays or a feature store, all turned into one :class:`Input` (``X, y, groups``, the
dataset's preferred number of folds, and a title that carries no path)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .._constants import MODALITIES
from .._errors import InputError


class Input(NamedTuple):
    """What :func:`load_input` returns (unpacks as a 5-tuple)."""

    X: Any
    y: np.ndarray
    groups: Any
    default_cv: Any
    title: str


def load_input(*, manifest: Any = None, columns: Mapping[str, str | None] | None = None,
               label: str | None = None, group: str | None = None,
               views: Mapping[str, str] | None = None, labels: Any = None,
               dataset: str | None = None, features: Any = None,
               encoders: Any = None, tabular: Any = None) -> Input:
    """Load the data named by exactly one source, in this order of precedence: a feature
    store (``features``), a bundled ``dataset``, pre-extracted ``views`` (modality -> .npy,
    with ``labels``), or a ``manifest`` whose ``columns`` maps modality -> column name.

    Error messages name the command-line options (``--label``, ``--views``...), since the
    command line is where these sources are given. ``tabular`` (a
    :class:`~mmfuse.encoders.tabular.TabularEncoder`) keeps its table columns beside the
    modality columns.
    """
    table_cols = list(tabular.columns) if tabular is not None else []
    if features:
        return load_feature_store(features, label, group, encoders, table_cols)
    if dataset:
        from .datasets import dataset_info, load_dataset

        X, y, groups = load_dataset(dataset)
        info = dataset_info(dataset)
        mods = [m for m in MODALITIES if m in X.columns]
        mods += [c for c in table_cols if c not in mods]
        return Input(X[mods], y, groups, info.get("cv", 5), f"dataset {dataset}")
    if views:
        from .manifest import load_arrays

        if labels is None:
            raise InputError("--views needs --labels labels.npy")
        arrays = load_arrays(views)
        y = load_arrays({"__labels__": labels})["__labels__"]
        return Input(arrays, np.asarray(y).reshape(-1), None, 5, "pre-extracted views")
    from .manifest import read_manifest

    mapping = {m: c for m, c in (columns or {}).items() if c}
    if not mapping and not table_cols:
        raise InputError("name at least one modality column: --image COL, --text COL or --audio "
                         "COL (or tabular columns: --numeric A,B --categorical C)")
    if not label:
        raise InputError("--label COL is required with --manifest")
    clash = sorted(set(table_cols) & (set(mapping.values()) | set(MODALITIES) | {label}))
    if clash:
        raise InputError(f"tabular column(s) {clash} are also a modality or label column, or "
                         f"named like a modality; rename them")
    df = read_manifest(manifest, label=label, columns=list(mapping.values()) + table_cols,
                       group=group, path_columns=[c for m, c in mapping.items() if m != "text"])
    X = df[list(mapping.values()) + table_cols].rename(
        columns={c: m for m, c in mapping.items()})
    groups = df[group].to_numpy() if group else None
    # the file name only: titles go into reports and JSON, which carry no paths
    return Input(X, df[label].to_numpy(), groups, 5, f"manifest {Path(manifest).name}")



def check_store_options(label: Any, encoders: Any) -> None:
    """The options ``--features DIR`` needs and refuses: a ``--label``, and no
    ``--encoders auto`` (the store's encoders are fixed)."""
    if not label:
        raise InputError("--label COL is required with --features (a manifest column kept in "
                         "the store)")
    if encoders == "auto":
        raise InputError("--encoders auto cannot be used with --features: the store's "
                         "encoders are fixed; drop --encoders or name them")

def load_feature_store(path: Any, label: str | None, group: str | None,
                       encoders: Any, table_cols: Any = ()) -> Input:
    """Views, labels and groups from a feature store (``--features DIR``), with the raw
    tabular columns ``table_cols`` the store kept (every non-modality column is kept)."""
    from ..encoders.base import is_missing
    from ..features import load

    check_store_options(label, encoders)
    store = load(path, encoders=encoders or None)
    y = store.column(label)
    groups = store.column(group) if group else None
    for name, values in ((label, y), (group, groups)):
        if values is not None:
            bad = [i for i, v in enumerate(values) if is_missing(v)]
            if bad:
                raise InputError(f"feature store {str(path)!r}: column {name!r} is empty in row "
                                 f"{bad[0]} ({len(bad)} rows); every sample needs a {name}")
    X = dict(store.views)
    for col in table_cols:
        if col in X:
            raise InputError(f"tabular column {col!r} is also a view of the feature store")
        X[col] = store.column(col)
    return Input(X, y, groups, 5, f"features {Path(path).name}")
