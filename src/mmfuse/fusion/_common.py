"""Pieces shared by the strategies: classifiers, scaling, inner splits, per-modality experts."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import LeaveOneGroupOut, StratifiedGroupKFold, StratifiedKFold

from .._errors import InputError
from ..views import Present, Views, is_sparse

EPS = 1e-6

# Several strategies fitted on the same training fold need the same per-modality experts and
# out-of-fold probabilities. Inside `shared_experts()` they are computed once; outside it
# (the default) nothing is remembered, so no state leaks between fits.
_MEMO: contextvars.ContextVar[dict | None] = contextvars.ContextVar("mmfuse_memo", default=None)


@contextlib.contextmanager
def shared_experts() -> Iterator[None]:
    """Reuse per-modality experts and out-of-fold probabilities within this block (a block
    inside another one shares the outer memo: keys are content digests, so that is safe)."""
    outer = _MEMO.get()
    token = _MEMO.set({} if outer is None else outer)
    try:
        yield
    finally:
        _MEMO.reset(token)


def _digest(*arrays: Any) -> str:
    h = hashlib.sha1()
    for a in arrays:
        if a is None:
            h.update(b"none")
        elif is_sparse(a):
            a = a.tocsr()
            h.update(str(("csr", a.shape, a.dtype.str)).encode())
            for part in (a.indptr, a.indices, a.data):
                h.update(np.ascontiguousarray(part).tobytes())
        else:
            a = np.ascontiguousarray(a)
            h.update(str((a.shape, a.dtype.str)).encode())
            h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
    return h.hexdigest()


def _memo(key: tuple, compute: Any) -> Any:
    memo = _MEMO.get()
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def make_classifier(classifier: Any, random_state: Any = None, x: Any = None) -> Any:
    """A fresh copy of ``classifier``; None means LogisticRegression (the seed's choice).

    The default logistic regression uses the Newton-CG solver on a sparse ``x`` with fewer
    than 20 stored values per column on average (a TF-IDF block): the same model, but there
    L-BFGS-B's own bookkeeping over its K·d coefficients (about 2·10 passes over them per
    iteration, 10 being its memory) outweighs a pass over the data, and it needed many more
    iterations (measured on tuxpaint's text: 118 L-BFGS iterations, 8 s, against 13 Newton
    steps, 0.7 s, same predictions). On denser input (TF-IDF concatenated with dense
    blocks) a Hessian-vector product costs a pass over the data, and L-BFGS stays faster.
    """
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


def gram_applicable(model: Any, n_rows: int, width: int) -> bool:
    """Whether :func:`fit_logistic_gram` fits ``model`` exactly, and is worth it: an
    L2-penalised :class:`~sklearn.linear_model.LogisticRegression` on a design at least
    twice as wide as it is tall."""
    if type(model) is not LogisticRegression or width < 2 * n_rows:
        return False
    p = model.get_params()
    return (p["penalty"] in ("l2", "deprecated") and p["l1_ratio"] in (None, 0, 0.0)
            and not p["dual"] and p["solver"] in _GRAM_SOLVERS and not p["warm_start"])


def fit_logistic_gram(model: Any, blocks: list, y: np.ndarray) -> Any:
    """Fit an L2 logistic regression on the column blocks of a wide design ``[B_1 ... B_k]``
    through an exact factor of its Gram matrix; ``model`` comes back with primal
    coefficients, as if fitted on the design itself.

    The penalised loss depends on the design D (n x d) only through D D^T: with
    D D^T = V Λ V^T, the n-column G = V Λ^{1/2} has the same inner products, a model with
    coefficients β on G predicts as one with W = β Λ^{-1/2} V^T D on D, and
    ||W|| = ||β||, so the minimiser on G maps to the minimiser on D (the intercept is not
    penalised by these solvers). L-BFGS started at zero is invariant under the rotation, so
    it takes the same steps, each costing n·n·K rather than n·d·K. Directions with an
    eigenvalue below 1e-10 of the largest are dropped (they carry no signal at that
    precision). Dense blocks go through BLAS, sparse ones (TF-IDF) through sparse products.
    """
    gram = None
    blocks = [b.astype(np.float64) if is_sparse(b) else np.asarray(b, dtype=np.float64)
              for b in blocks]
    for b in blocks:
        part = b @ b.T
        part = part.toarray() if is_sparse(part) else part
        part = np.asarray(part, dtype=np.float64)
        gram = part if gram is None else gram + part
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > max(float(vals.max()), 0.0) * 1e-10
    vals, vecs = vals[keep], vecs[:, keep]
    root = np.sqrt(vals)
    factor = vecs * root
    inner = clone(model)
    if inner.get_params()["solver"] not in ("lbfgs", "newton-cg", "newton-cholesky"):
        inner.set_params(solver="lbfgs")
    inner.fit(factor, y)
    # W = β Λ^{-1/2} V^T D, block by block
    back = (inner.coef_ / root) @ vecs.T  # (K', n)
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


def grouped_splits(y: np.ndarray, groups: np.ndarray, n_splits: int, random_state: Any
                   ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """Stratified grouped splits: ``(splits, kind)``, no group ever on both sides.

    The rules (the same for outer and inner splits):

    - ``n_splits >= number of groups`` -> leave one group out (one fold per group, the
      most a grouped split can make); kind ``"leave-one-group-out"``.
    - otherwise scikit-learn's ``StratifiedGroupKFold(shuffle=True)`` seeded with
      ``random_state``: groups are dealt to folds so that each fold's class mix is as
      close to the whole as the groups allow; kind ``"stratified-group"``.
    - a fold left without test rows (possible when a few groups hold most rows) is
      dropped, so fewer than ``n_splits`` folds may come back.

    A class found in a single group cannot be in a training fold when that group is
    tested; the split still holds (such rows are simply never predicted right), and the
    caller decides whether to warn. ``random_state=None`` means 0: grouped splits were
    deterministic before they were shuffled, and stay reproducible by default.
    """
    y = np.asarray(y)
    groups = np.asarray(groups)
    dummy = np.zeros(len(y))
    n_groups = len(np.unique(groups))
    if n_splits >= n_groups:
        splitter: Any = LeaveOneGroupOut()
        kind = "leave-one-group-out"
    else:
        splitter = StratifiedGroupKFold(n_splits=int(n_splits), shuffle=True,
                                        random_state=_seed(0 if random_state is None
                                                           else random_state))
        kind = "stratified-group"
    import warnings

    with warnings.catch_warnings():
        # "The least populated class in y has only N members": expected with groups
        warnings.filterwarnings("ignore", message="The least populated class")
        splits = [(tr, te) for tr, te in splitter.split(dummy, y, groups=groups)
                  if len(te) and len(tr)]
    return splits, kind


def inner_splits(y: np.ndarray, groups: Any, n_splits: int, random_state: Any,
                 rows: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Inner CV splits over ``rows`` (indices into y), made like the outer ones.

    With groups: stratified grouped folds (:func:`grouped_splits`: shuffled
    ``StratifiedGroupKFold`` seeded with ``random_state``, leave one group out when there
    are no more groups than folds). Without: ``StratifiedKFold`` (shuffled, seeded) with
    at most as many folds as the smallest class has rows. Returned indices are positions in
    ``rows`` order; an empty list means too little data (fewer than 2 groups, or a class
    with a single row). Never an ungrouped split when groups exist (that would leak: see
    DESIGN.md, "Evaluation protocol").
    """
    rows = np.arange(len(y)) if rows is None else rows
    ys = y[rows]
    if groups is not None:
        gs = np.asarray(groups)[rows]
        if min(n_splits, len(np.unique(gs))) < 2:
            return []
        return grouped_splits(ys, gs, n_splits, random_state)[0]
    counts = np.bincount(ys)
    k = min(n_splits, int(counts[counts > 0].min()))
    if k < 2:
        return []
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=_seed(random_state))
    return list(cv.split(np.zeros(len(ys)), ys))


def _seed(random_state: Any) -> int | None:
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    return int(np.random.RandomState(random_state).randint(2**31 - 1))


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


def aligned_proba(model: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with one column per class 0..K-1, even if a fold lacked some classes."""
    proba = linear_proba(model, x)
    if proba is None:
        proba = model.predict_proba(x)
    out = np.zeros((x.shape[0], n_classes))
    out[:, np.asarray(model.classes_, dtype=int)] = proba
    return out


class ModalityExpert:
    """Scaler + classifier for one modality, trained on the rows that have it."""

    def __init__(self, classifier: Any, random_state: Any = None):
        self.classifier = classifier
        self.random_state = random_state

    def fit(self, x: Any, y: np.ndarray, present: np.ndarray, n_classes: int):
        self.n_classes_ = n_classes
        self.scaler_ = ViewScaler().fit(x, present)
        rows = np.flatnonzero(present)
        self.prior_ = np.bincount(y, minlength=n_classes) / len(y)
        if len(np.unique(y[rows])) < 2:  # too few labels for a model: predict the prior
            self.model_ = None
            return self
        z = self.scaler_.transform(x[rows], present[rows])
        self.model_ = make_classifier(self.classifier, self.random_state, z)
        self.model_.fit(z, y[rows])
        return self

    def predict_proba(self, x: Any, present: np.ndarray) -> np.ndarray:
        """Probabilities for every row; rows without the modality get NaN."""
        out = np.full((x.shape[0], self.n_classes_), np.nan)
        if present.any():
            if self.model_ is None:
                out[present] = self.prior_
            else:
                rows = np.flatnonzero(present)
                z = self.scaler_.transform(x[rows], present[rows])
                out[rows] = aligned_proba(self.model_, z, self.n_classes_)
        return out


class CrossFitExpert:
    """One modality's inner-fold experts, averaged at prediction (k-fold bagging).

    The out-of-fold probabilities a meta level (weights, a stacking meta-model, a
    weighted-sum classifier) is trained on come from these very experts, each trained on
    the groups of its inner training fold. Predicting with their average, rather than with
    one expert refit on every training row, gives the meta level inputs calibrated like the
    ones it was fitted on: a refit expert has seen more groups and is more confident, which
    is exactly what a learned combination misreads under group shift.

    Parameters
    ----------
    experts : list of ModalityExpert
        Fitted experts, one per inner fold.
    """

    def __init__(self, experts: list[ModalityExpert]):
        self.experts = experts

    @property
    def n_classes_(self) -> int:
        return self.experts[0].n_classes_

    def predict_proba(self, x: Any, present: np.ndarray) -> np.ndarray:
        """Mean of the fold experts' probabilities; rows without the modality get NaN."""
        out = np.full((x.shape[0], self.n_classes_), np.nan)
        if present.any():
            rows = np.flatnonzero(present)
            xr, pr = x[rows], present[rows]
            out[rows] = np.mean([e.predict_proba(xr, pr) for e in self.experts], axis=0)
        return out


def predict_cross_fitted(experts: Mapping[str, Any], views: Views, present: Present,
                         meta: Any) -> np.ndarray:
    """``meta(probas, present)`` on each inner fold's experts, averaged over the folds.

    With cross-fitted experts (all from the same inner splits), fold ``j``'s experts give
    every modality's probabilities exactly as one out-of-fold row saw them (the same
    single-expert calibration, the same fold for every modality), so the meta level runs
    on inputs like its training inputs; the meta outputs are then averaged, as k-fold
    bagging averages whole models. Other experts are used as they are.
    """
    mods = sorted(views)
    folds = {len(experts[m].experts) for m in mods if isinstance(experts[m], CrossFitExpert)}
    if len(folds) != 1 or not all(isinstance(experts[m], CrossFitExpert) for m in mods):
        return meta({m: experts[m].predict_proba(views[m], present[m]) for m in mods}, present)
    outs = [meta({m: experts[m].experts[j].predict_proba(views[m], present[m]) for m in mods},
                 present) for j in range(folds.pop())]
    return np.mean(outs, axis=0)


def out_of_fold_probas(views: Views, y: np.ndarray, present: Present, groups: Any,
                       classifier: Any, n_splits: int, random_state: Any) -> dict[str, np.ndarray]:
    """Out-of-fold probabilities of each modality's expert (NaN where the modality is missing).

    Inner splits are shared by all modalities and made like the outer ones (stratified,
    grouped when groups are given). Within :func:`shared_experts` they are computed once
    per training set, whichever strategy asks first.
    """
    return {m: r[0] for m, r in _cross_fit(views, y, present, groups, classifier, n_splits,
                                            random_state).items()}


def cross_fitted_experts(views: Views, y: np.ndarray, present: Present, groups: Any,
                         classifier: Any, n_splits: int, random_state: Any
                         ) -> dict[str, CrossFitExpert]:
    """The experts behind :func:`out_of_fold_probas` (same splits, same memo), averaged."""
    return {m: CrossFitExpert(r[1]) for m, r in _cross_fit(views, y, present, groups,
                                                           classifier, n_splits,
                                                           random_state).items()}


def _cross_fit(views, y, present, groups, classifier, n_splits, random_state):
    n_classes = int(y.max()) + 1
    base = (repr(classifier), n_splits, repr(random_state), _digest(y, groups))
    return {m: _memo(("oof", m, _digest(x, present[m])) + base,
                     lambda m=m, x=x: _oof_one(x, y, present[m], groups, classifier, n_splits,
                                               random_state, n_classes))
            for m, x in views.items()}


def _oof_one(x: Any, y: np.ndarray, present: np.ndarray, groups: Any, classifier: Any,
             n_splits: int, random_state: Any, n_classes: int
             ) -> tuple[np.ndarray, list[ModalityExpert]]:
    splits = inner_splits(y, groups, n_splits, random_state)
    if not splits:
        raise InputError(
            "too few samples (or groups) per class to learn fusion weights out-of-fold; "
            "use weights='equal' or more data"
        )
    oof = np.full((len(y), n_classes), np.nan)
    experts = []
    for train, test in splits:
        expert = ModalityExpert(classifier, random_state)
        expert.fit(x[train], y[train], present[train], n_classes)
        oof[test] = expert.predict_proba(x[test], present[test])
        experts.append(expert)
    return oof, experts


def fit_experts(views: Views, y: np.ndarray, present: Present, classifier: Any,
                random_state: Any) -> dict[str, ModalityExpert]:
    n_classes = int(y.max()) + 1
    base = (repr(classifier), repr(random_state), _digest(y))
    return {m: _memo(("expert", m, _digest(x, present[m])) + base,
                     lambda m=m, x=x: ModalityExpert(classifier, random_state)
                     .fit(x, y, present[m], n_classes))
            for m, x in views.items()}


def one_se_choice(fold_scores: Mapping[str, np.ndarray], simple: Any) -> str:
    """The best candidate by mean per-fold score, unless it is not one of the ``simple``
    ones and does not beat the best simple one by more than one standard error of their
    paired per-fold differences (the one-standard-error rule of Breiman et al., 1984):
    then the best simple one.

    ``fold_scores`` maps candidate name -> per-fold scores (higher is better), in order of
    preference among exact ties (the first wins).
    """
    names = list(fold_scores)
    means = {n: float(np.mean(fold_scores[n])) for n in names}
    best = max(names, key=lambda n: (means[n], -names.index(n)))
    plain = [n for n in names if n in set(simple)]
    if best in plain or not plain:
        return best
    ref = max(plain, key=lambda n: (means[n], -names.index(n)))
    diff = np.asarray(fold_scores[best], float) - np.asarray(fold_scores[ref], float)
    se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return best if diff.mean() > se else ref


def normalise_weights(raw: Mapping[str, float]) -> dict[str, float]:
    total = float(sum(max(v, 0.0) for v in raw.values()))
    if total <= 0:
        return {m: 1.0 / len(raw) for m in raw}
    return {m: max(float(v), 0.0) / total for m, v in raw.items()}


def check_weight_spec(weights: Any, modalities: list[str], allowed: tuple[str, ...]) -> Any:
    """Validate ``weights``: one of ``allowed`` names or a dict over exactly the modalities."""
    if isinstance(weights, str):
        if weights not in allowed:
            raise InputError(f"weights must be one of {list(allowed)} or a dict; got {weights!r}")
        return weights
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(modalities))
        if unknown:
            raise InputError(
                f"weights name modalities the data does not have: {unknown}; "
                f"modalities are {modalities}"
            )
        values = {m: float(weights.get(m, 0.0)) for m in modalities}
        if any(v < 0 or not np.isfinite(v) for v in values.values()) or sum(values.values()) <= 0:
            raise InputError(f"weights must be finite, >= 0 and not all 0; got {dict(weights)}")
        return values
    raise InputError(f"weights must be one of {list(allowed)} or a dict; got {weights!r}")


def relative_weights(oof: dict[str, np.ndarray], y: np.ndarray) -> dict[str, float]:
    """Weights proportional to each modality's out-of-fold accuracy above chance.

    Chance is the majority-class rate; a modality at or below chance gets weight 0.
    """
    chance = np.bincount(y).max() / len(y)
    raw = {}
    for m, p in oof.items():
        rows = ~np.isnan(p).any(axis=1)
        acc = float(np.mean(p[rows].argmax(1) == y[rows])) if rows.any() else 0.0
        raw[m] = max(acc - chance, 0.0)
    return normalise_weights(raw)


def simplex_grid(n: int, step: float) -> np.ndarray:
    """All weight vectors of ``n`` non-negative entries that are multiples of ``step`` and sum to 1."""
    k = int(round(1 / step))

    def rec(remaining: int, parts: int):
        if parts == 1:
            yield (remaining,)
            return
        for i in range(remaining + 1):
            for rest in rec(remaining - i, parts - 1):
                yield (i,) + rest

    return np.array(list(rec(k, n)), dtype=float) / k


class BlockImputer:
    """Learned imputation of a missing modality from the modalities the same row has.

    For each modality, a ridge regression (penalty chosen by efficient leave-one-out CV)
    predicts its block from the other blocks (zero where missing) and their presence flags,
    fitted on the training rows that have it and at least one other modality. A classifier
    fitted on complete rows then sees a plausible block rather than the training mean, which
    is what keeps early fusion and stacking useful when a modality goes missing.

    A block wider than ``n_components`` is reduced to its leading principal components
    (fit on its present training rows), both as a predictor and as a target (predicted
    components are mapped back to the block): principal-component regression. The ridge's
    leave-one-out search then costs O(n·k²) rather than O(n·d²) — on a 1,764-d HOG block
    the full-width fit took about 3 s per modality and was most of early fusion's time
    (measured on av-digits) — and a handful of components carries what one modality can
    say about another.

    Parameters
    ----------
    alphas : tuple of float, default=(0.1, 1, 10, 100, 1000)
        Candidate ridge penalties (inputs are standardised features or log-probabilities).
    n_components : int, default=64
        Most principal components per predictor block.
    """

    def __init__(self, alphas: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0),
                 n_components: int = 64):
        self.alphas = alphas
        self.n_components = n_components

    def _reduce(self, blocks: Mapping[str, np.ndarray],
                present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each block as a predictor: its principal components where it was reduced."""
        out = {}
        for m, b in blocks.items():
            pca = getattr(self, "reducers_", {}).get(m)
            if pca is None:
                out[m] = b
                continue
            z = np.zeros((b.shape[0], pca.n_components_))
            if present[m].any():
                z[present[m]] = pca.transform(np.asarray(b)[present[m]])
            out[m] = z
        return out

    @staticmethod
    def _inputs(blocks: Mapping[str, np.ndarray], present: Mapping[str, np.ndarray],
                target: str) -> np.ndarray:
        others = [m for m in sorted(blocks) if m != target]
        cols = [np.where(present[o][:, None], blocks[o], 0.0) for o in others]
        cols.append(np.stack([present[o] for o in others], axis=1).astype(np.float64))
        return np.hstack(cols)

    def fit(self, blocks: Mapping[str, np.ndarray],
            present: Mapping[str, np.ndarray]) -> "BlockImputer":
        from sklearn.linear_model import RidgeCV

        self.models_: dict[str, Any] = {}
        # sparse blocks (TF-IDF) are neither predicted nor predictors: a missing one stays
        # all-zero, which for a bag of words means "no words"
        mods = sorted(m for m in blocks if not is_sparse(blocks[m]))
        self.modalities_ = mods
        blocks = {m: blocks[m] for m in mods}
        present = {m: present[m] for m in mods}
        self.reducers_: dict[str, Any] = {}
        if len(mods) < 2:
            return self
        from sklearn.decomposition import PCA

        for m in mods:
            rows = np.flatnonzero(present[m])
            k = min(int(self.n_components), len(rows) - 1)
            if blocks[m].shape[1] > self.n_components and k >= 1:
                self.reducers_[m] = PCA(n_components=k, svd_solver="randomized",
                                        iterated_power=2, random_state=0).fit(np.asarray(blocks[m])[rows])
        reduced = self._reduce(blocks, present)
        for m in mods:
            others = np.any(np.stack([present[o] for o in mods if o != m]), axis=0)
            rows = np.flatnonzero(present[m] & others)
            if len(rows) < 3:  # too few rows to learn from: missing stays at the mean
                continue
            x = self._inputs(reduced, present, m)[rows]
            # a reduced block is predicted through its components (then mapped back)
            self.models_[m] = RidgeCV(alphas=self.alphas).fit(x, reduced[m][rows])
        return self

    def transform(self, blocks: Mapping[str, np.ndarray],
                  present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The blocks with each missing row predicted (rows with nothing to go on unchanged)."""
        out = dict(blocks)
        mods = getattr(self, "modalities_", None) or sorted(blocks)
        blocks = {m: blocks[m] for m in mods}
        present = {m: present[m] for m in mods}
        for m, model in self.models_.items():
            others = np.any(np.stack([present[o] for o in mods if o != m]), axis=0)
            rows = np.flatnonzero(~present[m] & others)
            if len(rows):
                filled = np.array(blocks[m], copy=True)
                sub = {k: v[rows] for k, v in present.items()}
                x = self._inputs(self._reduce({k: v[rows] for k, v in blocks.items()}, sub),
                                 sub, m)
                pred = model.predict(x)
                pca = self.reducers_.get(m) if hasattr(self, "reducers_") else None
                filled[rows] = pred if pca is None else pca.inverse_transform(pred)
                out[m] = filled
        return out
