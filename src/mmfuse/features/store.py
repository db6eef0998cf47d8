"""A feature store's format (header, shard names, the Parquet metadata key) and its
reading side: :func:`read_header`, :func:`load` (views, labels, groups, presence),
:func:`attach_encoders` and the encoder-fingerprint check."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._errors import InputError, require

HEADER = "_mmfuse_features.json"
FORMAT = "mmfuse-features"
VERSION = 1
ROW = "mmfuse_row"
SHARD_NAME = "part-{:06d}.parquet"
PATH_MODALITIES = ("image", "audio")
_META_KEY = b"mmfuse"

Progress = Callable[[int, int], Any]


@dataclass
class FeatureStore:
    """A loaded feature store (see :func:`load`).

    Attributes
    ----------
    views : dict of modality -> float32 ndarray (n_rows, dim)
        NaN rows where the modality is absent or its item failed.
    present : dict of modality -> bool ndarray (n_rows,)
    frame : pandas.DataFrame
        ``mmfuse_row`` and every non-modality column of the manifest.
    header : dict
        The store's JSON header.
    """

    path: Path
    views: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    frame: pd.DataFrame
    header: dict[str, Any]

    @property
    def n_rows(self) -> int:
        return int(self.header["n_rows"])

    @property
    def encoders(self) -> dict[str, str]:
        """Modality -> encoder name."""
        return {m: e["name"] for m, e in self.header["encoders"].items()}

    @property
    def fingerprints(self) -> dict[str, str]:
        return {m: e["fingerprint"] for m, e in self.header["encoders"].items()}

    @property
    def failed(self) -> list[dict[str, Any]]:
        return list(self.header.get("failed", []))

    def column(self, name: str) -> np.ndarray:
        """A manifest column kept in the store (label, group, id...), as an array."""
        if name not in self.frame.columns:
            raise InputError(f"feature store {str(self.path)!r} has no column {name!r}; it has "
                             f"{[c for c in self.frame.columns if c != ROW]}")
        return self.frame[name].to_numpy()

    def __len__(self) -> int:
        return self.n_rows


# -- reading ------------------------------------------------------------------------------


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of the store at ``path`` (an :class:`~mmfuse.InputError` if none)."""
    path = Path(path)
    head = path / HEADER
    if not head.is_file():
        raise InputError(f"{str(path)!r} is not a feature store (no {HEADER}); write one "
                         f"with `mmfuse extract --out {path}`")
    try:
        header = json.loads(head.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"feature store header {str(head)!r} cannot be read: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(f"{str(head)!r} is not an mmfuse feature store header")
    if header.get("version") != VERSION:
        raise InputError(f"feature store {str(path)!r} has format version "
                         f"{header.get('version')!r}; this mmfuse reads version {VERSION}")
    return header


def load(path: str | os.PathLike, *, encoders: Mapping[str, Any] | None = None,
         modalities: Any = None) -> FeatureStore:
    """Load a feature store written by :func:`extract_store` / ``mmfuse extract``.

    Parameters
    ----------
    path : path to the store folder
    encoders : dict of modality -> encoder name (or Encoder), optional
        The encoders the caller expects. Each must match the store's fingerprint (same
        encoder, same weights, same preprocessing), else an :class:`~mmfuse.InputError`
        says what differs. ``None``: whatever the store holds.
    modalities : list of str, optional
        Load only these modalities (default: those of ``encoders``, else all).

    Returns
    -------
    FeatureStore

    Examples
    --------
    >>> from mmfuse import MultimodalClassifier                       # doctest: +SKIP
    >>> store = load("features/")                                      # doctest: +SKIP
    >>> clf = MultimodalClassifier(fusion="late").fit(store.views, store.column("label"))
    ...                                                                # doctest: +SKIP
    """
    pq = require("pyarrow.parquet", "parquet")
    path = Path(path)
    header = read_header(path)
    if not header.get("complete"):
        done = sum(1 for i in range(header["n_shards"]) if (path / SHARD_NAME.format(i)).is_file())
        raise InputError(f"feature store {str(path)!r} is incomplete ({done} of "
                         f"{header['n_shards']} shards); run the same `mmfuse extract` again "
                         f"to finish it")
    stored = header["encoders"]
    if encoders:
        check_encoders(header, encoders, where=str(path))
    wanted = list(modalities) if modalities is not None else (
        sorted(encoders) if encoders else sorted(stored))
    unknown = sorted(set(wanted) - set(stored))
    if unknown:
        raise InputError(f"feature store {str(path)!r} has no features for {unknown}; it holds "
                         f"{sorted(stored)}")
    files = [path / SHARD_NAME.format(i) for i in range(header["n_shards"])]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise InputError(f"feature store {str(path)!r} lacks shard(s) {absent[:5]}; run the "
                         f"same `mmfuse extract` again to restore them")
    keep = [ROW] + list(header["kept_columns"]) + [
        c for m in wanted for c in (m, f"{m}_present")]
    try:
        tables = [pq.read_table(f, columns=keep) for f in files]
    except Exception as exc:  # pyarrow's own error types
        raise InputError(f"feature store {str(path)!r} cannot be read: {exc}") from None
    import pyarrow as pa

    table = pa.concat_tables(tables)
    n = header["n_rows"]
    rows = table.column(ROW).to_numpy()
    if len(rows) != n or not np.array_equal(rows, np.arange(n)):
        raise InputError(f"feature store {str(path)!r} does not hold rows 0..{n - 1} exactly "
                         f"once; extract it again with --overwrite")
    views, present = {}, {}
    for m in wanted:
        dim = int(stored[m]["dim"])
        col = table.column(m).combine_chunks()
        views[m] = np.asarray(col.flatten().to_numpy(zero_copy_only=False),
                              dtype=np.float32).reshape(n, dim)
        present[m] = table.column(f"{m}_present").to_numpy(zero_copy_only=False).astype(bool)
        bad = present[m] & ~np.isfinite(views[m]).all(axis=1)
        if bad.any():
            raise InputError(f"feature store {str(path)!r}: modality {m!r} row "
                             f"{int(np.flatnonzero(bad)[0])} is marked present but holds NaN")
    frame = table.select([ROW] + list(header["kept_columns"])).to_pandas()
    return FeatureStore(path, views, present, frame, header)


def attach_encoders(model: Any, store: "str | os.PathLike | FeatureStore") -> Any:
    """Give a model fitted on a store's views the store's encoders, so that it predicts from
    raw files (``mmfuse predict``, ``serve``) with exactly the features it was trained on.

    Only stateless encoders go into a store, so nothing needs fitting. Returns ``model``.
    """
    from ..encoders.registry import create_encoder

    header = store.header if isinstance(store, FeatureStore) else read_header(store)
    for col in list(getattr(model, "encoders_", {})):
        spec = header["encoders"].get(col)
        if spec is None:
            continue
        enc = create_encoder(spec["name"])
        if enc.fingerprint != spec["fingerprint"]:
            raise InputError(f"encoder {spec['name']!r} here has fingerprint {enc.fingerprint}; "
                             f"the store was extracted with {spec['fingerprint']} (another "
                             f"version of its weights or of mmfuse)")
        model.encoders_[col] = enc
    return model


def _stateless_default(modality: str) -> str | None:
    """The modality's default encoder when it learns nothing from data (a store can hold
    its features), else None."""
    from ..encoders.registry import create_encoder, default_encoder

    name = default_encoder(modality)
    return name if create_encoder(name).stateless else None


def check_encoders(header: Mapping[str, Any], encoders: Mapping[str, Any], where: str) -> None:
    """Raise an :class:`~mmfuse.InputError` unless every requested encoder's fingerprint is
    the one the store was extracted with."""
    from ..encoders.base import Encoder
    from ..encoders.registry import create_encoder

    stored = header["encoders"]
    for m, spec in sorted(encoders.items()):
        if m not in stored:
            held = ", ".join(f"{k}={v['name']}" for k, v in sorted(stored.items()))
            raise InputError(f"feature store {where!r} has no features for {m!r}; it holds "
                             f"{held}")
        enc = spec if isinstance(spec, Encoder) else create_encoder(spec)
        if enc.fingerprint != stored[m]["fingerprint"]:
            raise InputError(
                f"feature store {where!r} was extracted with {m}={stored[m]['name']} "
                f"(fingerprint {stored[m]['fingerprint']}); you asked for {m}={enc.name} "
                f"(fingerprint {enc.fingerprint}). Extract the store again with these "
                f"encoders, or drop --encoders to use the stored ones")
