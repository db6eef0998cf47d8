"""Calibration and conformal thresholds around a fusion strategy, learned on the training
rows only, out of fold.

:func:`out_of_fold` fits clones of the strategy on grouped, stratified inner folds of the
training rows (the folds of :func:`mmfuse.splits.inner_splits`: a group never
calibrates itself) and predicts each held-out fold, once as it is and once per *missingness
pattern* (the set of modalities present): a held-out row that has the pattern's modalities
is predicted with the others masked. :func:`fit_uncertainty` then fits, per pattern, a
calibrator on those probabilities and conformal thresholds on the calibrated ones
(cross-conformal: the scores of every inner fold pooled, applied to the model refit on all
training rows). At prediction a row uses its own pattern's calibrator and threshold, so
sets keep their coverage when a modality is missing (assuming it goes missing independently
of the label).

The features of stateless encoders are reused; stateful encoders (TF-IDF, tabular scaling)
are refit on each inner training fold, as they are for a new group. Cost: ``n_splits``
extra fits of the strategy (each on ``(n_splits - 1) / n_splits`` of the rows; by default
:data:`REFIT_FOLDS`, or the model's ``cv`` when larger), as many
refits of the stateful encoders, and ``2**M - 1`` predictions of each held-out fold for M
modalities (M <= 4; beyond, the patterns seen in training).

Strategies built on per-modality experts with a meta level (late fusion, stacking,
weighted on class scores: ``has_meta_level()``) are calibrated on the experts instead
(:func:`experts_out_of_fold`): the final combination rule (the meta level the strategy
learns on its inner-fold experts' out-of-fold probabilities, fitted once as the final
model fits it) scores each held-out inner fold. One level of nesting instead of two, so
the calibration rows see the final model's combination (its weights, its meta-model, its
fallback) rather than that of weaker nested clones. By default (``calibrate_on="auto"`` ->
``"bagged"``) a held-out inner fold is scored as the final model scores a new row: the
combination averaged over experts cross-fitted inside the inner training fold (the final
model averages its inner-fold experts' outputs, which makes it less confident than one of
them: scored by one expert per row, ``"experts"``, the sets over-covered where the experts
are strong). Measured on the grouped bundled sets (benchmarks/RESULTS.md, "Calibration
and conformal prediction sets", "Where the calibration rows come from"). Shared through
the experts cache, ``"experts"`` costs no extra expert fit and ``"bagged"`` the
strategy's expert fits once per inner fold.

``auto`` is calibrated as the strategy it chose (:func:`calibration_target`): its choice,
made on the training rows only, is calibrated as that strategy fitted alone would be (on
its bagged experts when it has a meta level; an ensemble or an average of candidates: its
members refit on the inner folds and averaged with their weights), rather than on nested
refits of the whole selection (``calibrate_on="refits"``: each inner fold redoes the
selection, which may choose otherwise). The choice saw the training rows' inner-fold
scores, so the calibration rows are not blind to it: a selection among a handful of
candidates, measured in benchmarks/RESULTS.md (bench_uncertainty, part "auto").

With groups, the calibration rows come from the training rows' groups; when they are
fewer than the coverage needs to hold on a new group (:func:`groups_needed`: 9 at 0.9),
:class:`FewCalibrationGroupsWarning` says so.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from ..splits import inner_fold_count
from ..views import Present, Views, blank_rows
from .calibration import Calibrator, fit_calibrator
from .conformal import ConformalSets, check_coverage, check_score, thresholds

ALL = "*"  # the pooled calibrator: for a pattern never calibrated
MIN_ROWS = 30  # a pattern with fewer out-of-fold rows uses the pooled calibrator
#: where the calibration rows come from: "experts" (the final combination on the
#: inner-fold experts' out-of-fold probabilities: strategies with a meta level),
#: "bagged" (the same final combination on experts bagged as the final model's are),
#: "refits" (clones of the whole strategy refit on inner folds: any strategy), or "auto"
CALIBRATE_ON = ("auto", "experts", "bagged", "refits")
#: what "auto" means for a strategy with a meta level (measured: benchmarks/RESULTS.md)
AUTO_META = "bagged"
#: grouped inner folds of the refits (at least; the model's ``cv`` when larger): each
#: refit trains on 90% of the training rows, near the final model, which trains on all of
#: them. With 5 (80%), the final model was the more confident and a single modality's sets
#: under-covered on every draw of the test groups (tuxpaint, minilm: 0.866 at 0.9, 0.891
#: with 10; benchmarks/RESULTS.md, "Calibration rows from 10 inner folds instead of 5").
REFIT_FOLDS = 10


class FewCalibrationGroupsWarning(UserWarning):
    """The calibration rows come from fewer groups than the target coverage needs to hold
    on a new group (see :func:`groups_needed`)."""


def groups_needed(coverage: float) -> int:
    """The fewest exchangeable groups whose conformal quantile is finite at ``coverage``
    (``ceil((n + 1) * coverage) <= n``): 9 at 0.9, 4 at 0.8. With fewer held-out groups
    the threshold rests on the rows of too few groups to speak for a new one."""
    return int(np.ceil(coverage / (1.0 - coverage) - 1e-9))


def calibration_target(fitted: Any, views: Views, present: Present,
                       calibrate_on: str = "auto") -> tuple[Any, Views, Present]:
    """What :func:`fit_uncertainty` calibrates for the ``fitted`` strategy: the unfitted
    strategy it predicts with (``auto``: its choice, made on these training rows only,
    see :meth:`~mmfuse.fusion.base.FusionStrategy.calibrated_as`), and the views and
    presence it reads; otherwise, and with ``calibrate_on="refits"``, a clone of the
    strategy itself (for ``auto``: its whole selection redone in each inner fold)."""
    from sklearn.base import clone

    chosen = None if calibrate_on == "refits" else fitted.calibrated_as()
    if chosen is None:
        return clone(fitted), views, present
    strategy, mods = chosen
    return strategy, {m: views[m] for m in mods}, {m: present[m] for m in mods}


def row_patterns(present: Present, modalities: list[str]) -> np.ndarray:
    """Each row's missingness pattern: the names of its present modalities, joined by +."""
    n = len(next(iter(present.values())))
    names = np.array([""] * n, dtype=object)
    for m in sorted(modalities):
        has = np.asarray(present[m], bool) if m in present else np.zeros(n, bool)
        names[has] = np.where(names[has] == "", m, names[has] + "+" + m)
    return names.astype(str)


def _patterns(present: Present, modalities: list[str]) -> list[tuple[str, ...]]:
    mods = sorted(modalities)
    if len(mods) <= 4:
        return [c for r in range(len(mods), 0, -1) for c in itertools.combinations(mods, r)]
    seen = set(row_patterns(present, mods)) - {""}
    return [tuple(p.split("+")) for p in sorted(seen)]


def out_of_fold(strategy: Any, views: Views, present: Present, y: np.ndarray, groups: Any,
                n_splits: int, random_state: Any, n_classes: int, refit: Any = None, *,
                experts_cache: Any = None
                ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Pattern -> (out-of-fold probabilities (n, n_classes), labels, inner fold of each
    row) of clones of the unfitted ``strategy`` on grouped inner folds; ``y`` holds labels
    0..n_classes-1.
    ``refit(train)``: the views of the stateful encoders (TF-IDF...) refit on the inner
    training rows ``train`` (positions in these rows), so that a held-out fold's words
    are unknown to the model as a new group's are (None: no stateful encoder).
    ``experts_cache``: an :class:`~mmfuse.fusion.experts.ExpertsCache` the clones' fits
    share (with the caller's other fits on the same rows; None: nothing shared).
    Raises :class:`InputError` when the rows cannot be split into inner folds."""
    from sklearn.base import clone

    from ..fusion.base import WeightsFallbackWarning
    from ..splits import inner_splits

    splits = inner_splits(y, groups, n_splits, random_state)
    if not splits:
        raise _no_inner_folds()
    mods = sorted(views)
    patterns = _patterns(present, mods)
    out: dict[str, tuple[list, list, list]] = {"+".join(p): ([], [], []) for p in patterns}
    g = None if groups is None else np.asarray(groups)
    all_views = views
    for k, (train, test) in enumerate(splits):
        fold = clone(strategy)
        views = all_views if refit is None else {**all_views, **refit(train)}
        keep = train[np.any(np.stack([present[m][train] for m in mods]), axis=0)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WeightsFallbackWarning)
            warnings.filterwarnings("ignore", message="modalities missing for every")
            fold.fit({m: views[m][keep] for m in mods}, y[keep],
                     {m: present[m][keep] for m in mods}, None if g is None else g[keep],
                     experts_cache=experts_cache)
        cols = np.asarray(fold.classes_, dtype=int)
        for p in patterns:
            rows = test[np.all(np.stack([present[m][test] for m in p]), axis=0)]
            if not len(rows):
                continue
            masked = np.ones(len(rows), bool)
            v = {m: views[m][rows] if m in p else blank_rows(views[m][rows], masked)
                 for m in mods}
            pr = {m: present[m][rows] if m in p else ~masked for m in mods}
            proba = np.zeros((len(rows), n_classes))
            proba[:, cols] = fold.predict_proba(v, pr)
            out["+".join(p)][0].append(proba)
            out["+".join(p)][1].append(y[rows])
            out["+".join(p)][2].append(np.full(len(rows), k))
    return {p: tuple(np.concatenate(part) for part in parts) for p, parts in out.items()
            if parts[0]}


def _no_inner_folds() -> InputError:
    return InputError("calibration and coverage need inner folds, but the training rows "
                      "cannot be split (fewer than 2 groups, or a class with one row)")


def resolve_calibrate_on(strategy: Any, calibrate_on: str = "auto") -> str:
    """Where :func:`fit_uncertainty` takes ``strategy``'s calibration rows from: "experts",
    "bagged" (:func:`experts_out_of_fold`) or "refits" (:func:`out_of_fold`); "auto":
    :data:`AUTO_META` for a strategy with a meta level, else "refits"."""
    if calibrate_on not in CALIBRATE_ON:
        raise InputError(f"calibrate_on must be one of {list(CALIBRATE_ON)}; got "
                         f"{calibrate_on!r}")
    meta = bool(getattr(strategy, "has_meta_level", lambda: False)())
    if calibrate_on in ("experts", "bagged") and not meta:
        raise InputError(f"calibrate_on={calibrate_on!r} needs a strategy with a meta level "
                         f"over per-modality experts; got {type(strategy).__name__}")
    if calibrate_on == "auto":
        return AUTO_META if meta else "refits"
    return calibrate_on


def experts_out_of_fold(strategy: Any, views: Views, present: Present, y: np.ndarray,
                        groups: Any, n_classes: int, refit: Any = None, *,
                        experts_cache: Any = None, bagged: bool = False,
                        n_splits: int = REFIT_FOLDS
                        ) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """As :func:`out_of_fold`, for a strategy with a meta level over per-modality experts:
    its meta level, fitted as the final model fits it (on the experts' out-of-fold
    probabilities of every training row, the strategy's own ``cv``, ``classifier`` and
    ``random_state``), applied to those out-of-fold probabilities, per missingness
    pattern (the other modalities masked). A row's probabilities come from experts that
    never saw its group; the experts are the strategy's own (``experts_cache``: fitted
    once for both). A stateful encoder's expert is refit on each inner training fold's
    ``refit(train)`` views, so that a held-out fold's words are unknown to it.

    ``bagged``: each held-out inner fold is predicted as the final model predicts a new
    row, by the meta level averaged over experts cross-fitted on the inner training fold's
    own inner folds (the final model averages its inner-fold experts' outputs, which makes
    it less confident than any one of them), rather than by the one inner-fold expert
    behind each out-of-fold probability (cost: the strategy's expert fits once per inner
    fold). Bagged, the held-out folds are ``max(cv, n_splits)``: with 10, the experts train
    on 72% of the rows (the final model's: 80%; with 5, 64%, the sets under-covered)."""
    from sklearn.base import clone

    from ..fusion.base import WeightsFallbackWarning
    from ..fusion.experts import ModalityExpert, out_of_fold_probas, predict_cross_fitted
    from ..fusion.linear import classifier_for
    from ..splits import TooFewForInnerFolds, inner_splits
    from ..views import check_views

    params = strategy.get_params(deep=False)
    classifier, cv, seed = params.get("classifier"), params.get("cv", 5), params.get(
        "random_state")
    mods = sorted(views)
    views, present = check_views(views, present)  # as the strategy's fit sees them
    usable = [m for m in mods if present[m].any()]
    classes, y_loc = np.unique(y, return_inverse=True)
    k = len(classes)
    splits = inner_splits(y_loc, groups, max(cv, n_splits) if bagged else cv, seed)
    if not splits:
        raise _no_inner_folds()
    try:
        own = out_of_fold_probas({m: views[m] for m in usable}, y_loc,
                                 {m: present[m] for m in usable}, groups, classifier, cv,
                                 seed, experts_cache=experts_cache)
    except TooFewForInnerFolds:
        raise _no_inner_folds() from None
    probas = dict(own)
    if refit is not None:
        folds_views = [refit(train) for train, _ in splits]
        for m in [m for m in usable if m in folds_views[0] and not bagged]:
            probas[m] = np.full_like(own[m], np.nan)
            for (train, test), fold_views in zip(splits, folds_views):
                x = fold_views[m]
                expert = ModalityExpert(classifier_for(classifier, m), seed).fit(
                    x[train], y_loc[train], present[m][train], k)
                probas[m][test] = expert.predict_proba(x[test], present[m][test])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", WeightsFallbackWarning)
        meta = clone(strategy).fit_meta(own, y_loc, {m: present[m] for m in usable}, groups,
                                        n_classes=k)
    fold_of = np.empty(len(y_loc), dtype=int)
    for j, (_, test) in enumerate(splits):
        fold_of[test] = j
    bags = None
    if bagged:  # each held-out fold predicted as the final model predicts: bagged experts
        bags = [_fold_experts(views, present, y_loc, groups, usable, train, classifier, cv,
                              seed, folds_views[j] if refit is not None else None,
                              experts_cache)
                for j, (train, _) in enumerate(splits)]

    def combine(probas: dict, pr: dict) -> np.ndarray:
        return meta.predict_meta({m: _pad(p, k) for m, p in probas.items()}, pr)

    out = {}
    for p in _patterns(present, mods):
        rows = np.flatnonzero(np.all(np.stack([present[m] for m in p]), axis=0))
        if not len(rows) or not set(p) <= set(usable):
            continue
        pr = {m: present[m][rows] if m in p else np.zeros(len(rows), bool) for m in usable}
        proba = np.zeros((len(rows), n_classes))
        if bags is None:
            nan = np.full((len(rows), k), np.nan)
            proba[:, classes] = combine({m: probas[m][rows] if m in p else nan
                                         for m in usable}, pr)
        else:
            for j in np.unique(fold_of[rows]):
                at = fold_of[rows] == j
                r = rows[at]
                v = {m: (folds_views[j].get(m, views[m]) if refit is not None else views[m])[r]
                     for m in usable}
                v = {m: x if m in p else blank_rows(x, np.ones(len(r), bool))
                     for m, x in v.items()}
                proba[np.ix_(at, classes)] = predict_cross_fitted(
                    bags[j], v, {m: q[at] for m, q in pr.items()}, combine)
        out["+".join(p)] = (proba, np.asarray(y)[rows], fold_of[rows])
    return out


def _pad(proba: np.ndarray, k: int) -> np.ndarray:
    """Expert probabilities with a column per class (an inner training fold may lack the
    last classes: they get 0)."""
    if proba.shape[1] >= k:
        return proba
    return np.hstack([proba, np.where(np.isnan(proba[:, :1]), np.nan,
                                      np.zeros((len(proba), k - proba.shape[1])))])


def _fold_experts(views: Views, present: Present, y: np.ndarray, groups: Any,
                  usable: list, train: np.ndarray, classifier: Any, cv: int, seed: Any,
                  fold_views: Any, experts_cache: Any) -> dict:
    """The experts a strategy fitted on the ``train`` rows predicts with: cross-fitted on
    their own inner folds (or, when those cannot be made, one per modality on every row,
    as the strategy's equal-weight fallback)."""
    from ..fusion.experts import cross_fitted_experts, fit_experts
    from ..splits import TooFewForInnerFolds

    v = {m: (fold_views.get(m, views[m]) if fold_views is not None else views[m])[train]
         for m in usable}
    pr = {m: present[m][train] for m in usable}
    g = None if groups is None else np.asarray(groups)[train]
    try:
        return cross_fitted_experts(v, y[train], pr, g, classifier, cv, seed,
                                    experts_cache=experts_cache)
    except TooFewForInnerFolds:
        return fit_experts(v, y[train], pr, classifier, seed, experts_cache=experts_cache)


def stateful_refit(encoders: dict, X: Any, kept: np.ndarray, on_error: str,
                   pooling: str) -> Any:
    """For :func:`out_of_fold`: ``refit(train)``, the views of the stateful ``encoders``
    refit on the ``kept`` rows of ``X`` at positions ``train`` (None: none is stateful)."""
    from ..encoders.featurizer import Featurizer, as_columns, is_passthrough

    stateful = {c: e for c, e in encoders.items() if not is_passthrough(e) and not e.stateless}
    if not stateful:
        return None
    featurizer = Featurizer(stateful, pooling=pooling)
    encoded = featurizer.transform_deferred(as_columns(X)[0], on_error=on_error)

    def refit(train: np.ndarray) -> Views:
        fold = featurizer.fit_fold(encoded, kept[train])
        return {c: fold[c][kept] for c in stateful}

    return refit


@dataclass
class Uncertainty:
    """What a model keeps to calibrate its probabilities and make prediction sets:
    calibrators and conformal thresholds per missingness pattern (``"*"``: pooled)."""

    modalities: list
    calibration: Any = None
    calibrators: Any = None  # dict pattern -> Calibrator, or None
    conformal: Any = None  # ConformalSets, or None
    #: the groups the calibration rows come from (None: no groups given)
    calibration_groups: Any = None

    def calibrate(self, proba: np.ndarray, present: Present) -> np.ndarray:
        if not self.calibrators:
            return np.asarray(proba, dtype=np.float64)
        patterns = row_patterns(present, self.modalities)
        out = np.array(proba, dtype=np.float64, copy=True)
        for p in np.unique(patterns):
            rows = patterns == p
            out[rows] = self.calibrators.get(str(p), self.calibrators[ALL]).transform(
                out[rows])
        return out

    def sets(self, calibrated: np.ndarray, present: Present) -> np.ndarray:
        if self.conformal is None:
            raise InputError("prediction sets need a coverage: fit with coverage=0.9 (or "
                             "--coverage 0.9)")
        return self.conformal.sets(calibrated, row_patterns(present, self.modalities))


def calibrated_oof(oof: dict[str, tuple], calibration: str | None
                   ) -> tuple[dict[str, Calibrator] | None, dict[str, np.ndarray]]:
    """Calibrators per pattern (None without calibration) and the calibrated out-of-fold
    probabilities they give."""
    if calibration is None:
        return None, {p: o[0] for p, o in oof.items()}
    pooled = (np.concatenate([o[0] for o in oof.values()]),
              np.concatenate([o[1] for o in oof.values()]))
    calibrators = {ALL: fit_calibrator(calibration, *pooled)}
    for p, (proba, y, *_) in oof.items():
        calibrators[p] = (fit_calibrator(calibration, proba, y) if len(y) >= MIN_ROWS
                          else calibrators[ALL])
    return calibrators, {p: calibrators[p].transform(o[0]) for p, o in oof.items()}


def conformal_from_oof(oof: dict[str, tuple], calibrated: dict[str, np.ndarray],
                       coverage: float, score: str, mondrian: bool,
                       worst_fold: bool = False) -> ConformalSets:
    """Thresholds per pattern from the calibrated out-of-fold probabilities, pooled over
    the inner folds (cross-conformal), or with ``worst_fold`` the largest of the folds'
    own thresholds (see :func:`~mmfuse.uncertainty.conformal.thresholds`)."""
    return ConformalSets(check_coverage(coverage), check_score(score), bool(mondrian),
                         {p: thresholds(calibrated[p], o[1], coverage, score, mondrian,
                                        o[2] if worst_fold else None)
                          for p, o in oof.items()},
                         {p: int(len(o[1])) for p, o in oof.items()})


def fit_uncertainty(strategy: Any, views: Views, present: Present, y: np.ndarray,
                    groups: Any, *, calibration: str | None, coverage: float | None,
                    score: str = "aps", mondrian: bool = False, n_splits: int = REFIT_FOLDS,
                    random_state: Any = None, n_classes: int | None = None,
                    refit: Any = None, experts_cache: Any = None,
                    calibrate_on: str = "auto") -> tuple[Uncertainty | None, dict]:
    """The :class:`Uncertainty` of the unfitted ``strategy`` on these training rows (None
    when neither ``calibration`` nor ``coverage`` is asked), and the out-of-fold
    probabilities it was learned from (``refit``, ``experts_cache``: see
    :func:`out_of_fold`). ``calibrate_on``: one of :data:`CALIBRATE_ON` (see
    :func:`resolve_calibrate_on`; refits use ``n_splits`` inner folds)."""
    if calibration is None and coverage is None:
        return None, {}
    if calibration is not None:
        fit_calibrator(calibration, np.full((1, 2), 0.5), np.zeros(1, int))  # checks the name
    if coverage is not None:
        check_coverage(coverage)
        check_score(score)
    if not isinstance(mondrian, (bool, np.bool_)):
        raise InputError(f"mondrian must be True or False; got {mondrian!r}")
    n_classes = int(np.max(y)) + 1 if n_classes is None else n_classes
    on = resolve_calibrate_on(strategy, calibrate_on)
    if on != "refits":
        oof = experts_out_of_fold(strategy, views, present, y, groups, n_classes, refit,
                                  experts_cache=experts_cache, bagged=on == "bagged",
                                  n_splits=n_splits)
    else:
        oof = out_of_fold(strategy, views, present, y, groups, n_splits, random_state,
                          n_classes, refit, experts_cache=experts_cache)
    calibrators, calibrated = calibrated_oof(oof, calibration)
    conformal = (None if coverage is None
                 else conformal_from_oof(oof, calibrated, coverage, score, mondrian))
    n_groups = _calibration_groups(present, groups, coverage)
    return Uncertainty(sorted(views), calibration, calibrators, conformal, n_groups), oof


def _calibration_groups(present: Present, groups: Any, coverage: float | None) -> Any:
    """How many groups the calibration rows (every row with a modality: each is held out
    once) come from; warns when a coverage is asked and they are too few to certify it."""
    if groups is None:
        return None
    rows = np.any(np.stack([np.asarray(p, bool) for p in present.values()]), axis=0)
    n = int(len(np.unique(np.asarray(groups)[rows])))
    note = few_groups_note(n, coverage)
    if note:
        warnings.warn(note, FewCalibrationGroupsWarning, stacklevel=3)
    return n


def few_groups_note(n_groups: int, coverage: float | None) -> str | None:
    """What :class:`FewCalibrationGroupsWarning` says for calibration rows from
    ``n_groups`` groups at ``coverage`` (None: they are enough, or no coverage)."""
    if coverage is None or n_groups >= groups_needed(coverage):
        return None
    return (f"conformal sets calibrated on {n_groups:g} groups: too few to certify coverage "
            f"{coverage:g} on a new group (that needs at least {groups_needed(coverage)}); "
            f"on groups unlike these, coverage may fall short (add groups, or lower the "
            f"coverage)")


def for_model(model: Any, views: Views, y: np.ndarray, present: Present, groups: Any,
              X: Any, kept: np.ndarray, experts_cache: Any = None) -> Any:
    """For a :class:`~mmfuse.estimator.MultimodalClassifier` about to fit its strategy
    ``model.fusion_`` on these training rows (``kept`` rows of ``X``): its settings checked
    now, and a function to call once ``model.fusion_`` is fitted, which returns the
    calibrators and conformal thresholds of what it predicts with (as
    :func:`calibration_target` says; None without ``calibration`` and ``coverage``),
    learned on grouped inner folds of the training rows, the stateful encoders refit on
    each inner training fold. Its settings: ``calibration``, ``coverage``,
    ``conformal_score``, ``mondrian``, ``cv``, ``random_state``, ``on_error``, ``pooling``,
    ``epsilon`` (calibration and coverage are refused under a privacy budget)."""
    if model.calibration is None and model.coverage is None:
        return lambda: None
    if model.epsilon is not None:
        raise InputError("epsilon: calibration and coverage learn from the data outside "
                         "the privacy budget; fit without them")
    if inner_fold_count(y, groups, model.cv) < 2:
        raise _no_inner_folds()  # now, not after the fusion's fit

    def calibrate() -> Uncertainty:
        classes, y_enc = np.unique(y, return_inverse=True)
        refit = stateful_refit(model.encoders_, X, kept, model.on_error, model.pooling)
        strategy, v, p = calibration_target(model.fusion_, views, present)
        return fit_uncertainty(strategy, v, p, y_enc, groups, refit=refit,
                               calibration=model.calibration, coverage=model.coverage,
                               score=model.conformal_score, mondrian=model.mondrian,
                               n_splits=max(model.cv, REFIT_FOLDS),
                               random_state=model.random_state,
                               n_classes=len(classes), experts_cache=experts_cache)[0]

    return calibrate
