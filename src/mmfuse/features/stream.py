"""Reading a feature store shard by shard, without loading it: the store's columns (label,
group) on their own, the views of one shard at a time, and per-modality standardisation
statistics for every outer fold's training rows in one streamed pass.

Memory stays that of one shard (``rows_per_shard`` rows) plus a few numbers per row,
whatever the store's size; the out-of-core fitting (:mod:`mmfuse.fusion.streamed`,
:mod:`mmfuse.evaluate.streamed`) is built on these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import InputError, require
from .store import ROW, SHARD_NAME, read_header


@dataclass
class Shard:
    """One shard's rows: ``rows`` (store row numbers), ``views`` (modality -> float32
    ``(n, d)``, NaN where absent) and ``present`` (modality -> bool ``(n,)``)."""

    index: int
    rows: np.ndarray
    views: dict[str, np.ndarray]
    present: dict[str, np.ndarray]


#: a store whose features take at most this many bytes keeps its decoded shards between
#: passes (it fits in memory anyway; a streamed fit reads every shard several times)
CACHE_BYTES = 64 * 2**20


class StoreStream:
    """A complete feature store opened for streaming (nothing is read but its header).

    Parameters
    ----------
    path : the store folder
    modalities : list of str, optional
        The views to read (default: all the store holds).
    """

    _cache: dict[int, "Shard"]

    def __init__(self, path: str | os.PathLike, modalities: Sequence[str] | None = None):
        require("pyarrow.parquet", "parquet")
        self.path = Path(path)
        self.header = read_header(self.path)
        if not self.header.get("complete"):
            raise InputError(f"feature store {str(self.path)!r} is incomplete; run the same "
                             f"`mmfuse extract` again to finish it")
        stored = self.header["encoders"]
        self.modalities = sorted(stored) if modalities is None else sorted(modalities)
        unknown = sorted(set(self.modalities) - set(stored))
        if unknown:
            raise InputError(f"feature store {str(self.path)!r} has no features for {unknown}; "
                             f"it holds {sorted(stored)}")
        self.dims = {m: int(stored[m]["dim"]) for m in self.modalities}
        self.files = [self.path / SHARD_NAME.format(i) for i in range(self.n_shards)]
        absent = [f.name for f in self.files if not f.is_file()]
        if absent:
            raise InputError(f"feature store {str(self.path)!r} lacks shard(s) {absent[:5]}; "
                             f"run the same `mmfuse extract` again to restore them")
        self._cache = {}

    @property
    def n_rows(self) -> int:
        return int(self.header["n_rows"])

    @property
    def n_shards(self) -> int:
        return int(self.header["n_shards"])

    @property
    def nbytes(self) -> int:
        """Size of the float32 feature table the store holds (rows x total width x 4)."""
        return self.n_rows * sum(self.dims.values()) * 4

    def _read(self, index: int, columns: list[str]) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self.files[index], columns=columns)
        except Exception as exc:  # pyarrow's own error types
            raise InputError(f"feature store {str(self.path)!r}: shard "
                             f"{self.files[index].name} cannot be read: {exc}") from None

    def column(self, name: str) -> np.ndarray:
        """A kept manifest column (label, group...) for every row, read without the
        features."""
        kept = list(self.header["kept_columns"])
        if name not in kept:
            raise InputError(f"feature store {str(self.path)!r} has no column {name!r}; it has "
                             f"{kept}")
        parts, rows = [], []
        for i in range(self.n_shards):
            t = self._read(i, [ROW, name])
            rows.append(t.column(ROW).to_numpy())
            parts.append(t.column(name).to_pandas().to_numpy())
        rows_all = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        if len(rows_all) != self.n_rows or not np.array_equal(rows_all, np.arange(self.n_rows)):
            raise InputError(f"feature store {str(self.path)!r} does not hold rows "
                             f"0..{self.n_rows - 1} exactly once; extract it again with "
                             f"--overwrite")
        return np.concatenate(parts) if parts else np.zeros(0, dtype=object)

    def shard(self, index: int) -> Shard:
        """The views of shard ``index`` (kept for the next pass when the whole store is
        small: :data:`CACHE_BYTES`)."""
        if index in self._cache:
            return self._cache[index]
        cols = [ROW] + [c for m in self.modalities for c in (m, f"{m}_present")]
        t = self._read(index, cols)
        n = t.num_rows
        views, present = {}, {}
        for m in self.modalities:
            col = t.column(m).combine_chunks()
            views[m] = np.asarray(col.flatten().to_numpy(zero_copy_only=False),
                                  dtype=np.float32).reshape(n, self.dims[m])
            present[m] = t.column(f"{m}_present").to_numpy(zero_copy_only=False).astype(bool)
            bad = present[m] & ~np.isfinite(views[m]).all(axis=1)
            if bad.any():
                raise InputError(f"feature store {str(self.path)!r}: modality {m!r} row "
                                 f"{int(t.column(ROW)[int(np.flatnonzero(bad)[0])].as_py())} "
                                 f"is marked present but holds NaN")
        shard = Shard(index, t.column(ROW).to_numpy(), views, present)
        if self.nbytes <= CACHE_BYTES:
            self._cache[index] = shard
        return shard

    def shards(self, order: Sequence[int] | None = None) -> Iterator[Shard]:
        """Every shard (in ``order``, default store order), one at a time."""
        for i in (range(self.n_shards) if order is None else order):
            yield self.shard(int(i))


@dataclass
class FoldScalers:
    """Per outer fold and modality, the mean and standard deviation of the fold's
    training rows that have the modality (a zero deviation counts as 1); and per inner
    fold ``(f, j)`` of an outer fold, those of its inner training rows (``inner_mean``,
    ``inner_scale``: modality -> {(f, j): (d,) float32}), so that an inner fold's models
    are standardised by their own training rows, as in memory."""

    mean: dict[str, np.ndarray]   # modality -> (n_folds, d) float32
    scale: dict[str, np.ndarray]  # modality -> (n_folds, d) float32
    inner_mean: dict[str, dict[tuple[int, int], np.ndarray]] = field(default_factory=dict)
    inner_scale: dict[str, dict[tuple[int, int], np.ndarray]] = field(default_factory=dict)

    def transform(self, modality: str, fold: int, x: np.ndarray) -> np.ndarray:
        """Standardised ``x`` (a new float32 array; absent rows, NaN, become 0: the mean)."""
        z = (x - self.mean[modality][fold]) / self.scale[modality][fold]
        return np.nan_to_num(z, copy=False, nan=0.0)

    def to_inner(self, modality: str, fold: int, inner: int, z: np.ndarray,
                 present: np.ndarray) -> np.ndarray:
        """Rows ``z`` standardised by outer fold ``fold`` (:meth:`transform`), standardised
        instead by its inner fold ``inner``'s training rows (a new array; rows without the
        modality stay 0, the inner mean)."""
        mu, sd = self.mean[modality][fold], self.scale[modality][fold]
        mu_j, sd_j = self.inner_scaler(modality, fold, inner)
        out = z * (sd / sd_j) + (mu - mu_j) / sd_j
        out[~np.asarray(present, bool)] = 0.0
        return out

    def inner_scaler(self, modality: str, fold: int, inner: int) -> tuple[np.ndarray,
                                                                            np.ndarray]:
        """``(mean, scale)`` of inner fold ``inner`` of outer fold ``fold``."""
        return (self.inner_mean[modality][fold, inner],
                self.inner_scale[modality][fold, inner])


#: rows per float64 block when summing a shard (bounds the copies to a few MB)
CHUNK_ROWS = 1024


def _moments(s: np.ndarray, q: np.ndarray, n: float, d: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and deviation (float32; a zero deviation counts as 1) from sums ``s``, sums of
    squares ``q`` and count ``n``; ``n <= 0``: mean 0, deviation 1."""
    if n <= 0:
        return np.zeros(d, np.float32), np.ones(d, np.float32)
    mu = s / n
    sd = np.sqrt(np.maximum(q / n - mu ** 2, 0.0))
    return mu.astype(np.float32), np.where(sd > 1e-12, sd, 1.0).astype(np.float32)


def fold_scalers(stream: StoreStream, fold_of_row: np.ndarray, n_folds: int,
                 progress: Any = None,
                 inner: Mapping[int, tuple[np.ndarray, int]] | None = None) -> FoldScalers:
    """Standardisation statistics of every outer fold's training rows, in one pass.

    ``fold_of_row[i]`` is the outer fold in which row ``i`` is tested (-1: in none, so in
    every training set). Sums and sums of squares are kept per test fold (float64); a
    fold's training statistics are the totals less its own test rows, so the rows a fold
    tests never enter its scaler. ``inner``: outer fold ``f`` -> ``(inner_of_row,
    n_inner)``, the inner fold that holds out each of ``f``'s training rows (-1 for the
    others); the same pass then keeps the sums per inner fold, and inner fold ``(f, j)``'s
    statistics are ``f``'s training statistics less the rows ``j`` holds out.
    """
    inner = dict(inner or {})
    keys = [(f, j) for f in sorted(inner) for j in range(inner[f][1])]
    width = n_folds + 1 + len(keys)  # test folds (the last column: no test fold), inner
    sums = {m: np.zeros((width, d)) for m, d in stream.dims.items()}
    squares = {m: np.zeros((width, d)) for m, d in stream.dims.items()}
    counts = {m: np.zeros(width) for m in stream.dims}
    for done, shard in enumerate(stream.shards()):
        fold = fold_of_row[shard.rows]
        onehot = np.zeros((len(shard.rows), width))
        onehot[np.arange(len(fold)), np.where(fold >= 0, fold, n_folds)] = 1.0
        for c, (f, j) in enumerate(keys, start=n_folds + 1):
            onehot[:, c] = inner[f][0][shard.rows] == j
        for m, x in shard.views.items():
            has = np.asarray(shard.present[m], bool)
            weight = onehot * has[:, None]
            counts[m] += weight.sum(axis=0)
            for lo in range(0, len(x), CHUNK_ROWS):  # float64 copies of a few MB at a time
                x64 = np.where(has[lo:lo + CHUNK_ROWS, None], x[lo:lo + CHUNK_ROWS], 0.0)
                w = weight[lo:lo + CHUNK_ROWS].T  # absent rows (NaN) count as 0 above
                sums[m] += w @ x64
                squares[m] += w @ np.square(x64, out=x64)
        if progress is not None:
            progress(done + 1, stream.n_shards)
    mean, scale = {}, {}
    inner_mean: dict[str, dict] = {}
    inner_scale: dict[str, dict] = {}
    for m, d in stream.dims.items():
        total_s = sums[m][:n_folds + 1].sum(0)
        total_q = squares[m][:n_folds + 1].sum(0)
        total_n = counts[m][:n_folds + 1].sum()
        mean[m] = np.zeros((n_folds, d), dtype=np.float32)
        scale[m] = np.ones((n_folds, d), dtype=np.float32)
        for f in range(n_folds):
            mean[m][f], scale[m][f] = _moments(total_s - sums[m][f], total_q - squares[m][f],
                                               total_n - counts[m][f], d)
        inner_mean[m], inner_scale[m] = {}, {}
        for c, (f, j) in enumerate(keys, start=n_folds + 1):
            inner_mean[m][f, j], inner_scale[m][f, j] = _moments(
                total_s - sums[m][f] - sums[m][c], total_q - squares[m][f] - squares[m][c],
                total_n - counts[m][f] - counts[m][c], d)
    return FoldScalers(mean, scale, inner_mean, inner_scale)
