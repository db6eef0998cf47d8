"""Linear classifiers for the strategies: the default classifier, exact Gram-factor fits of
wide logistic regressions, and ``predict_proba`` without per-call validation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.linear_model import LogisticRegression

from .._errors import InputError
from ..views import is_sparse


#: The key of a per-view classifier dict (see :func:`classifier_for`) that names the
#: classifier of every view the dict does not name, and of models over all views together.
ANY_VIEW = "*"


def classifier_for(classifier: Any, view: str | None) -> Any:
    """The classifier of one view's expert, or with ``view=None`` the base classifier (of
    models fitted on all views together: early fusion, the seed baseline, weighted's F).

    A strategy's ``classifier`` is an estimator, None (LogisticRegression), or a dict
    ``{view: estimator or None}`` whose :data:`ANY_VIEW` entry (default None) is the
    base: the encoder choice gives a view of separate experts ``"a|b"`` its own
    :class:`SplitExperts` this way (:mod:`mmfuse.encoder_choice`).
    """
    if not isinstance(classifier, dict):
        return classifier
    if view is not None and view in classifier:
        return classifier[view]
    return classifier.get(ANY_VIEW)


def with_view_classifiers(classifier: Any, own: Mapping[str, Any]) -> Any:
    """``classifier`` with ``own`` per-view classifiers added where they differ from it
    (a per-view dict, see :func:`classifier_for`); ``classifier`` itself when none does.
    Each entry of ``own`` is the view's classifier given ``classifier_for(classifier,
    view)``: an entry that *is* that classifier adds nothing."""
    base = dict(classifier) if isinstance(classifier, dict) else {ANY_VIEW: classifier}
    added = {v: c for v, c in sorted(own.items()) if c is not classifier_for(classifier, v)}
    return {**base, **added} if added else classifier


def make_classifier(classifier: Any, random_state: Any = None, x: Any = None) -> Any:
    """A fresh copy of ``classifier``; None means LogisticRegression (the seed's choice);
    a per-view dict means its base classifier (:func:`classifier_for`).

    The default logistic regression uses the Newton-CG solver on a sparse ``x`` with fewer
    than 20 stored values per column on average (a TF-IDF block): the same model, but there
    L-BFGS-B's own bookkeeping over its K·d coefficients (about 2·10 passes over them per
    iteration, 10 being its memory) outweighs a pass over the data, and it needed many more
    iterations (measured on tuxpaint's text: 118 L-BFGS iterations, 8 s, against 13 Newton
    steps, 0.7 s, same predictions). On denser input (TF-IDF concatenated with dense
    blocks) a Hessian-vector product costs a pass over the data, and L-BFGS stays faster.
    """
    classifier = classifier_for(classifier, None)
    if classifier is None:
        newton = is_sparse(x) and x.nnz < 20 * x.shape[1]
        return LogisticRegression(max_iter=2000, C=1.0,
                                  solver="newton-cg" if newton else "lbfgs")
    if not hasattr(classifier, "fit") or not hasattr(classifier, "predict_proba"):
        raise InputError(
            f"classifier must be a scikit-learn classifier with predict_proba; got {classifier!r}"
        )
    est = clone(classifier)
    if random_state is not None and "random_state" in est.get_params():
        if est.get_params()["random_state"] is None:
            est.set_params(random_state=random_state)
    return est


#: Solvers of scikit-learn's LogisticRegression that minimise the plain objective (an
#: unpenalised intercept); liblinear penalises the intercept, so it is left alone.
_GRAM_SOLVERS = ("lbfgs", "newton-cg", "newton-cholesky", "sag", "saga")


#: The Gram factor pays for its eigendecomposition (about n^3 work, once) only when a pass
#: over the design (n x width) is dearer than n^3 / GRAM_ROWS: a design of n rows must also
#: be at least n^2 / GRAM_ROWS wide. Measured on sign-av's inner folds (1,375 rows, hog +
#: efficientnet-lite0 + speech-embedding, 3,140 dense columns: more than twice as wide as
#: tall): early fusion took 5.4 s over five inner folds through the factor (eigh alone
#: 0.5 s a fit) and 1.5 s directly; TF-IDF designs of tuxpaint's 690 rows stay on the factor.
#: (Measured with the eigendecomposition; where :func:`gram_factor` takes Cholesky the
#: factor costs less, so the rule is conservative there.)
GRAM_ROWS = 200


def gram_applicable(model: Any, n_rows: int, width: int) -> bool:
    """Whether :func:`fit_logistic_gram` fits ``model`` exactly, and is worth it: an
    L2-penalised :class:`~sklearn.linear_model.LogisticRegression` on a design at least
    twice as wide as it is tall, and at least ``n_rows**2 / GRAM_ROWS`` wide (below that,
    the eigendecomposition of the n x n Gram matrix costs more than the fit it saves)."""
    if (type(model) is not LogisticRegression or width < 2 * n_rows
            or width * GRAM_ROWS < n_rows ** 2):
        return False
    p = model.get_params()
    return (p["penalty"] in ("l2", "deprecated") and p["l1_ratio"] in (None, 0, 0.0)
            and not p["dual"] and p["solver"] in _GRAM_SOLVERS and not p["warm_start"])


#: A column of a sparse block storing values in more than this share of the rows is
#: multiplied densely in :func:`_block_gram` (see there).
DENSE_COLUMN_SHARE = 0.1


def _block_gram(b: Any) -> np.ndarray:
    """``b @ b.T`` as a dense float64 array. A sparse block's columns that store values in
    most rows (a dense embedding concatenated to TF-IDF: ``tfidf+minilm``) go through a
    dense product: a sparse-sparse product costs about the sum of the squared column
    counts, with a per-entry overhead, where BLAS does the same work an order of magnitude
    faster (measured on icons-family's text view, 1,504 rows, 7,922 columns of which 471
    dense: 2.6 s as one sparse product, 0.1 s split; the same matrix to 1e-10)."""
    if not is_sparse(b):
        return b @ b.T
    b = b.tocsc()
    counts = np.diff(b.indptr)
    dense_cols = counts > DENSE_COLUMN_SHARE * b.shape[0]
    gram = np.zeros((b.shape[0], b.shape[0]))
    if dense_cols.any():
        d = b[:, np.flatnonzero(dense_cols)].toarray()
        gram += d @ d.T
    if not dense_cols.all():
        s = b[:, np.flatnonzero(~dense_cols)].tocsr()
        gram += (s @ s.T).toarray()
    return gram


#: Directions of the Gram matrix whose remaining variance is below this share of its
#: largest diagonal entry are dropped by :func:`gram_factor` (they carry no signal at that
#: precision).
GRAM_RCOND = 1e-10


def gram_factor(gram: np.ndarray) -> tuple[np.ndarray, Any]:
    """A factor F of the symmetric positive semi-definite ``gram`` (F F^T = gram, n x r)
    and the map ``β -> back`` with ``back F = β`` (``back`` zero off the rows F's
    triangle uses), which takes coefficients fitted on F back to the rows' space (see
    :func:`fit_logistic_gram`).

    Cholesky with pivoting (LAPACK ``dpstrf``), which stops at the numerical rank:
    directions whose remaining variance is below :data:`GRAM_RCOND` of the largest
    diagonal entry are dropped. A sum of centred blocks (the seed baseline's standardised
    sum) has the constant row direction in its null space, which plain Cholesky cannot
    factor. About a tenth of the eigendecomposition's work (n^3/3 flops against several
    n^3; measured on 1,300 x 1,300, one thread: 0.035 s against 0.43 s), which it replaces:
    V Λ^{1/2} and this F are the design rotated onto the span of its rows alike, so both
    fit the same model. The eigendecomposition remains where LAPACK reports an error.
    """
    from scipy.linalg import lapack, solve_triangular

    n = gram.shape[0]
    tol = GRAM_RCOND * max(float(np.max(np.diag(gram))), 0.0) if n else 0.0
    c, piv, rank, info = lapack.dpstrf(gram, tol=tol, lower=1)
    if info >= 0 and rank > 0:
        piv = piv[:n] - 1  # LAPACK's pivots are 1-based: gram[piv][:, piv] = L L^T
        low = np.tril(c)[:, :rank]
        factor = np.empty((n, rank))
        factor[piv] = low
        head, used = low[:rank], piv[:rank]

        def back(coef: Any) -> np.ndarray:
            coef = np.asarray(coef)
            out = np.zeros((coef.shape[0], n))
            out[:, used] = solve_triangular(head, coef.T, lower=True, trans="T",
                                            check_finite=False).T
            return out

        return factor, back
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > max(float(vals.max()), 0.0) * GRAM_RCOND
    vals, vecs = vals[keep], vecs[:, keep]
    root = np.sqrt(vals)
    return vecs * root, lambda coef: (np.asarray(coef) / root) @ vecs.T


def fit_logistic_gram(model: Any, blocks: list, y: np.ndarray) -> Any:
    """Fit an L2 logistic regression on the column blocks of a wide design ``[B_1 ... B_k]``
    through an exact factor of its Gram matrix; ``model`` comes back with primal
    coefficients, as if fitted on the design itself.

    The penalised loss depends on the design D (n x d) only through D D^T: any F with
    F F^T = D D^T (:func:`gram_factor`: pivoted Cholesky) has the same inner products, a
    model with coefficients β on F predicts as one with W = back(β) D on D (back(β) F = β),
    and ||W|| = ||β||, so the minimiser on F maps to the minimiser on D (the intercept is
    not penalised by these solvers). F is D rotated onto the span of its rows, so L-BFGS
    started at zero follows nearly the same path (its stopping test looks at the largest
    gradient component, which a rotation changes: predictions agree to the solver's
    tolerance, tested), each step costing n·r·K rather than nnz(D)·K. The same holds
    between two factors: the Cholesky factor replaced the eigen factor V Λ^{1/2}, and
    the fits differ only where the stopping test ends them (measured on every Gram fit of
    one outer fold of the one command on tuxpaint-grouped, icons-family and icons-theme:
    11 of 18 stopped up to 5 iterations apart, training probabilities within 0.011, no
    training prediction changed; the fits' CPU time fell by 36-49%). Dense blocks go
    through BLAS, sparse ones (TF-IDF) through sparse products, and the concatenation of
    the blocks is never built.
    """
    gram = None
    blocks = [b.astype(np.float64) if is_sparse(b) else np.asarray(b, dtype=np.float64)
              for b in blocks]
    for b in blocks:
        part = _block_gram(b)
        gram = part if gram is None else gram + part
    factor, back_of = gram_factor(gram)
    inner = clone(model)
    if inner.get_params()["solver"] not in ("lbfgs", "newton-cg", "newton-cholesky"):
        inner.set_params(solver="lbfgs")
    inner.fit(factor, y)
    # W = back(β) D, block by block
    back = back_of(inner.coef_)  # (K', n)
    coef = []
    for b in blocks:
        part = (b.T @ back.T).T if is_sparse(b) else back @ b
        coef.append(np.asarray(part))
    model.coef_ = np.hstack(coef)
    model.intercept_ = inner.intercept_.copy()
    model.classes_ = inner.classes_
    model.n_features_in_ = int(model.coef_.shape[1])
    model.n_iter_ = inner.n_iter_
    return model


def linear_proba(model: Any, x: Any) -> np.ndarray | None:
    """A fitted multiclass :class:`~sklearn.linear_model.LogisticRegression`'s
    ``predict_proba`` without its per-call input validation, or None where it does not apply.

    The same operations as scikit-learn's own (``safe_sparse_dot(x, coef_.T) + intercept_``,
    then its ``softmax``), so the same numbers (tested); what is skipped is the validation
    (namespace, dataframe and finiteness checks: about half a millisecond a call), which
    dominates the one-row requests of the service, where each modality runs one call per
    cross-fitted inner-fold expert. Anything unusual (another classifier, a binary model,
    a non-float or non-finite input, a width mismatch) returns None: the caller then uses
    ``predict_proba``, with its checks and errors.
    """
    if type(model) is not LogisticRegression or not hasattr(model, "coef_"):
        return None
    if len(model.classes_) <= 2 or getattr(x, "ndim", 0) != 2:
        return None
    if is_sparse(x):
        if x.format != "csr" or x.dtype not in (np.float32, np.float64) \
                or not np.isfinite(x.data).all():
            return None
    elif not (isinstance(x, np.ndarray) and x.dtype in (np.float32, np.float64)
              and np.isfinite(x).all()):
        return None
    if x.shape[1] != model.coef_.shape[1]:
        return None
    from sklearn.utils.extmath import safe_sparse_dot, softmax

    scores = safe_sparse_dot(x, model.coef_.T, dense_output=True) + model.intercept_
    return softmax(scores, copy=False)


class SplitExperts(ClassifierMixin, BaseEstimator):
    """Separate experts on the column blocks of one view, combined with equal weights.

    The per-view classifier of a candidate ``"a|b"`` of the encoder choice (two encoders
    of one modality kept as separate experts): the view is the concatenation ``a+b``
    (:func:`mmfuse.encoders.concat.concat_views`), and this classifier fits one clone of
    ``estimator`` on each block of ``widths`` columns; its probabilities are the softmax of
    the mean of the blocks' log-probabilities (floored at ``LOG_FLOOR``), which is what
    late fusion with equal weights does across modalities. Unlike one classifier on the
    concatenation, no block's features compete with the other's under one penalty.

    On a sparse view (a concatenation with TF-IDF: every part's rows unit-norm) each
    block's rows are rescaled to L2 norm sqrt(width), as
    :class:`~mmfuse.fusion.scaling.ViewScaler` scales a sparse view alone, so that a block
    is fitted as its encoder alone would be; dense views arrive standardised per column,
    which is the same per block.

    Parameters
    ----------
    widths : sequence of int
        The blocks' widths (at least two), in column order; they sum to the view's width.
    estimator : estimator or None, default=None
        The classifier of each block (cloned); None: :func:`make_classifier`'s default.
    random_state : int or None, default=None
        Passed to each block's classifier that has none.

    Attributes
    ----------
    classes_ : ndarray
    estimators_ : list of fitted classifiers, one per block
    """

    _model_file_safe = True  # a model file may hold it (mmfuse.persist.allowlist)
    LOG_FLOOR = 1e-9

    def __init__(self, widths: Any = (), estimator: Any = None, random_state: Any = None):
        self.widths = widths
        self.estimator = estimator
        self.random_state = random_state

    def _bounds(self, n_columns: int) -> list[tuple[int, int]]:
        widths = [int(w) for w in self.widths] if isinstance(
            self.widths, (list, tuple, np.ndarray)) else []
        if len(widths) < 2 or min(widths) < 1 or sum(widths) != n_columns:
            raise InputError(f"SplitExperts needs at least two positive block widths summing "
                             f"to the view's {n_columns} columns; got widths={self.widths!r}")
        ends = np.cumsum(widths)
        return [(int(e - w), int(e)) for w, e in zip(widths, ends)]

    def _blocks(self, x: Any) -> list:
        out = []
        for a, b in self._bounds(x.shape[1]):
            if is_sparse(x):
                from sklearn.preprocessing import normalize

                block = normalize(x.tocsr()[:, a:b], norm="l2", copy=True)
                out.append((block * np.float32(np.sqrt(b - a))).tocsr())
            else:
                out.append(x[:, a:b])
        return out

    def fit(self, X: Any, y: Any) -> "SplitExperts":
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.estimators_ = [make_classifier(self.estimator, self.random_state, block).fit(block, y)
                            for block in self._blocks(X)]
        self.n_features_in_ = int(X.shape[1])
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Softmax of the mean of the blocks' log-probabilities (columns: ``classes_``)."""
        from scipy.special import softmax

        k = len(self.classes_)
        logs = np.zeros((X.shape[0], k))
        for est, block in zip(self.estimators_, self._blocks(X)):
            proba = linear_proba(est, block)
            if proba is None:
                proba = est.predict_proba(block)
            p = np.zeros((X.shape[0], k))
            p[:, np.searchsorted(self.classes_, est.classes_)] = proba
            logs += np.log(np.clip(p, self.LOG_FLOOR, 1.0))
        return softmax(logs / len(self.estimators_), axis=1)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def aligned_proba(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class 0..K-1, even if a fold lacked some classes."""
    proba = linear_proba(model, x)
    if proba is None:
        proba = model.predict_proba(x)
    out = np.zeros((x.shape[0], n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = proba
    return out
