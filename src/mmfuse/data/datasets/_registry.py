"""Dataset registry and the helpers every loader shares (root, problems, frame)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..._constants import MODALITIES, ON_ERROR  # noqa: F401 (ON_ERROR re-exported)
from ..._errors import InputError
from ..._registry import Registry

#: name -> builder ``(root, *, on_error, download, **options) -> (X, y, groups)``; the meta
#: holds what :func:`list_datasets` reports plus ``options`` and ``sources``.
DATASETS: Registry = Registry("dataset")



def resolve_root(root: str | os.PathLike | None) -> Path:
    """Data root: ``root``, else ``$MMFUSE_DATA``, else ``<user cache>/mmfuse/datasets``.

    The result is absolute but symbolic links are kept, so cell paths start with it.
    """
    if root is None:
        root = os.environ.get("MMFUSE_DATA") or None
    if root is None:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("mmfuse")) / "datasets"
    return Path(os.path.abspath(os.path.expanduser(os.fspath(root))))


def is_hidden(name: str) -> bool:
    """Dot files (``.DS_Store``, editor swap files) are not data and are ignored."""
    return name.startswith(".")


def file_size(path: str) -> int | None:
    """Size in bytes following links, or None when the file cannot be stat'ed."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


class Problems:
    """Files a loader could not use, reported together (never dropped silently)."""

    def __init__(self) -> None:
        self.items: list[dict[str, str]] = []

    def add(self, file: str | os.PathLike, reason: str) -> None:
        self.items.append({"file": os.fspath(file), "reason": reason})

    def check_size(self, path: str) -> bool:
        """Record a zero-byte or unreadable file; True when the file looks usable."""
        size = file_size(path)
        if size is None:
            self.add(path, "cannot be read (missing or broken link)")
        elif size == 0:
            self.add(path, "zero-byte file")
        return bool(size)

    def extend(self, other: Problems) -> None:
        self.items.extend(other.items)

    def resolve(self, dataset: str, on_error: str) -> list[dict[str, str]]:
        """Raise for ``on_error="raise"``, else return the sorted list of skipped files.

        Raises
        ------
        InputError
            Naming the first files and why they were rejected.
        """
        items = sorted(self.items, key=lambda item: (item["file"], item["reason"]))
        if items and on_error == "raise":
            shown = "; ".join(f"{item['file']}: {item['reason']}" for item in items[:5])
            more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
            raise InputError(
                f"{len(items)} unusable file(s) in dataset {dataset!r}: {shown}{more}; "
                f"fix or remove them, or pass on_error='skip' to drop those rows"
            )
        return items


def make_frame(
    dataset: str,
    modalities: dict[str, Sequence[Any]],
    labels: Sequence[Any],
    groups: Sequence[Any] | None,
    skipped: list[dict[str, str]],
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray | None]:
    """Assemble ``(X, y, groups)``: modality columns in sorted order, then label and group."""
    columns: dict[str, Any] = {}
    for name in sorted(modalities):
        if name not in MODALITIES:
            raise ValueError(f"unknown modality column {name!r}")
        columns[name] = _object_array(modalities[name])
    columns["label"] = _as_array(labels)
    if groups is not None:
        columns["group"] = _as_array(groups)
    X = pd.DataFrame(columns)
    X.attrs["dataset"] = dataset
    X.attrs["skipped"] = skipped
    y = X["label"].to_numpy()
    g = X["group"].to_numpy() if groups is not None else None
    return X, y, g


def _as_array(values: Sequence[Any]) -> np.ndarray:
    if len(values) and all(isinstance(v, (int, np.integer)) for v in values):
        return np.asarray(values, dtype=np.int64)
    return _object_array(values)


def _object_array(values: Sequence[Any]) -> np.ndarray:
    # Filled one by one so that array cells (MNIST images) stay cells, not a 3-D block.
    out = np.empty(len(values), dtype=object)
    for i, value in enumerate(values):
        out[i] = value
    return out
