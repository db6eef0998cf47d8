"""Per-view scaling on the present training rows (dense: standardised; sparse: row norms)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..views import is_sparse

EPS = 1e-6


class ViewScaler:
    """Scale one view on its present training rows; missing rows become 0.

    Dense views are standardised (centred, unit variance per column, so 0 is the mean).
    Sparse views (TF-IDF) are never centred, which would make them dense and inflate rare
    columns: each row is scaled to L2 norm sqrt(d) (unit rows times the square root of the
    width, so the block's total variance is d like a standardised dense block's), and
    missing rows stay all-zero.
    """

    def fit(self, x: Any, present: np.ndarray) -> "ViewScaler":
        self.sparse_ = bool(is_sparse(x))
        if self.sparse_:
            return self
        rows = x[present] if present.any() else np.zeros((1, x.shape[1]), np.float32)
        self.mean_ = rows.mean(axis=0)
        std = rows.std(axis=0)
        self.scale_ = np.where(std > EPS, std, 1.0).astype(np.float32)
        return self

    def transform(self, x: Any, present: np.ndarray) -> Any:
        if getattr(self, "sparse_", False) or is_sparse(x):
            from scipy import sparse
            from sklearn.preprocessing import normalize

            if not is_sparse(x):
                x = sparse.csr_matrix(np.nan_to_num(x))
            # unit rows times sqrt(width): the block's total variance is then its width, as
            # for a standardised dense view (plain unit rows starve it under the default
            # penalty; measured on tuxpaint, see benchmarks/RESULTS.md)
            z = normalize(x.tocsr().astype(np.float32), norm="l2", copy=True)
            z = z * np.float32(np.sqrt(x.shape[1]))
            if not np.all(present):
                z = (sparse.diags(np.asarray(present, np.float32)) @ z).tocsr()
            return z
        z = (x - self.mean_) / self.scale_
        z[~present] = 0.0
        return z.astype(np.float32, copy=False)


def leading_variance(z: Any, present: np.ndarray) -> float:
    """The largest eigenvalue of the covariance of ``z``'s present rows (centred): the
    variance of the view's first principal direction.

    Dense or sparse; a sparse block is centred implicitly (a linear operator), so it stays
    sparse. One leading singular value through ARPACK (:func:`scipy.sparse.linalg.svds`,
    fixed start) where the block is large, an exact SVD where it is small. 1.0 when fewer
    than two rows are present or the block is constant (nothing to scale).
    """
    idx = np.flatnonzero(present)
    n, d = len(idx), z.shape[1]
    if n < 2 or d == 0:
        return 1.0
    if is_sparse(z):
        from scipy.sparse.linalg import LinearOperator

        rows = z.tocsr()[idx].astype(np.float64)
        mean = np.asarray(rows.mean(axis=0)).ravel()

        def matvec(v: np.ndarray) -> np.ndarray:
            v = np.asarray(v).ravel()
            return rows @ v - mean @ v

        def rmatvec(u: np.ndarray) -> np.ndarray:
            u = np.asarray(u).ravel()
            return rows.T @ u - mean * u.sum()

        op = LinearOperator((n, d), matvec=matvec, rmatvec=rmatvec, dtype=np.float64)
        if min(n, d) <= 64:  # small enough to centre densely
            op = rows.toarray() - mean
    else:
        op = np.asarray(z, dtype=np.float64)[idx]
        op = op - op.mean(axis=0)
    if min(n, d) <= 64:
        top = float(np.linalg.svd(op, compute_uv=False)[0])
    else:
        from scipy.sparse.linalg import svds

        top = float(svds(op, k=1, tol=1e-6, return_singular_vectors=False,
                         random_state=0)[0])
    lam = top * top / n
    return lam if lam > EPS else 1.0
