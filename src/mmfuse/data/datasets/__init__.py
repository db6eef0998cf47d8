"""Bundled real datasets: small, licensed, pinned upstream sources loaded as file tables.

Loading only lists files (no decoding): image and audio cells are absolute paths (MNIST
images are 28x28 uint8 arrays), text cells are strings, a missing modality is None.

The data root is ``root=``, else ``$MMFUSE_DATA``, else ``<user cache>/mmfuse/datasets``;
each raw source lives in ``<root>/fsdd``, ``<root>/sign-digits``, ``<root>/tuxpaint`` and
``<root>/icons/<theme>`` with its upstream layout, and is downloaded (Debian packages with
``apt-get download``) and verified there when missing.

Examples
--------
>>> from mmfuse.data.datasets import load_dataset
>>> X, y, groups = load_dataset("fsdd")  # doctest: +SKIP
>>> list(X.columns)  # doctest: +SKIP
['audio', 'label', 'group']
"""

from __future__ import annotations

import copy
import importlib
import os
import pkgutil
from typing import Any

import numpy as np
import pandas as pd

from ..._params import check_on_error
from ..._errors import InputError
from ._registry import DATASETS, resolve_root

# Every public module of this package registers its datasets on import, so adding a dataset
# is one new module (helpers start with "_").
for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["dataset_info", "list_datasets", "load_dataset", "verify_dataset"]

_PUBLIC_META = ("modalities", "n_samples", "n_classes", "licence", "citation", "source", "cv",
                "description", "options")


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    on_error: str = "raise",
    download: bool = True,
    **options: Any,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Load a bundled dataset as a table of file paths, labels and groups.

    Parameters
    ----------
    name : str
        One of the names from :func:`list_datasets`.
    root : str or path-like, default=None
        Data root; None means ``$MMFUSE_DATA``, else ``<user cache>/mmfuse/datasets``.
    on_error : {"raise", "skip"}, default="raise"
        What to do with an unusable file (zero bytes, unparsable name): raise an
        :class:`~mmfuse.InputError` naming it, or drop its row and record it in
        ``X.attrs["skipped"]`` as ``{"file": ..., "reason": ...}``.
    download : bool, default=True
        Whether a missing raw folder may be downloaded from its pinned source.
    **options
        Dataset options, e.g. ``require_all`` and ``min_per_class`` for ``tuxpaint``.

    Returns
    -------
    X : pandas.DataFrame
        Modality columns (``audio``, ``image``, ``text``, those the dataset has), ``label``
        and, for grouped datasets, ``group``. ``X.attrs`` holds ``dataset`` and ``skipped``.
    y : numpy.ndarray
        The labels.
    groups : numpy.ndarray or None
        The groups for a group-aware split (speakers), or None.

    Raises
    ------
    InputError
        For an unknown name or option, a missing folder that cannot be fetched, or an
        unusable file with ``on_error="raise"``.
    """
    entry = DATASETS.entry(name)
    check_on_error(on_error)
    unknown = sorted(set(options) - set(entry.meta["options"]))
    if unknown:
        valid = ", ".join(sorted(entry.meta["options"])) or "(none)"
        raise InputError(f"unknown option(s) {', '.join(unknown)} for dataset {name!r}; "
                         f"valid options: {valid}")
    X, y, groups = entry.builder(
        resolve_root(root), on_error=on_error, download=download, **options
    )
    X.attrs["dataset"] = name
    return X, y, groups


def dataset_info(name: str) -> dict[str, Any]:
    """Metadata of one dataset: modalities, sizes, licence, citation, source and the cv.

    ``cv`` is the recommended evaluation, e.g. ``{"kind": "group", "n_splits": 6}`` for
    leave-one-speaker-out. The sizes are those of the default options.

    Raises
    ------
    InputError
        For an unknown name; the message lists the valid ones.
    """
    meta = DATASETS.entry(name).meta
    info = {"name": name, **copy.deepcopy({key: meta[key] for key in _PUBLIC_META})}
    if "tabular" in meta:  # the table columns by kind, for datasets that have them
        info["tabular"] = copy.deepcopy(meta["tabular"])
    return info


def list_datasets() -> list[dict[str, Any]]:
    """Metadata of every dataset (see :func:`dataset_info`), sorted by name."""
    return [dataset_info(name) for name in DATASETS.names()]


def verify_dataset(name: str, root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Recompute the content hash of the raw sources a dataset is built from.

    Parameters
    ----------
    name : str
        Dataset name.
    root : str or path-like, default=None
        Data root, resolved as in :func:`load_dataset`.

    Returns
    -------
    dict
        ``{"dataset", "ok", "sources": [{"source", "path", "n_files", "sha256",
        "expected", "ok"}, ...]}``.

    Raises
    ------
    InputError
        For an unknown name, or when a raw folder is not there.
    """
    meta = DATASETS.entry(name).meta
    folder_root = resolve_root(root)
    parts = [source.verify(folder_root) for source in meta["sources"]]
    return {"dataset": name, "ok": all(part["ok"] for part in parts), "sources": parts}
