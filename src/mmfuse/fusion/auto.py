"""``auto``: choose the fusion strategy (and its weights) by inner cross-validation.

Every candidate — each fused strategy with its weight option, the equal-weight fusions
(``early[equal]``, ``late[equal]``, ``seed-baseline``) and each single modality alone — is
scored on the same inner splits of the training data (stratified, grouped when groups are
given, like the outer splits), and the choice is refit on all the training data.

One inner cross-validation serves every candidate: the per-modality experts and their
out-of-fold probabilities are computed once on those splits. Candidates that combine
per-modality probabilities (late fusion, stacking, the weighted sum of class scores) are
scored by cross-validating their meta level on those out-of-fold probabilities, and
refit from the same :class:`~mmfuse.fusion.experts.ExpertsCache`, so ``auto`` costs about
one inner CV of the per-modality experts plus one of the feature-level candidates (early
fusion, the seed baseline).

The choice follows the one-standard-error rule (:func:`choose`): a candidate that *learns*
how to combine the modalities (learned weights, stacking, heads, an ensemble) is chosen only
when it beats the best *simple* candidate (a single modality or an equal-weight fusion) by
more than one standard error of their paired per-fold differences. Under group shift a
combination tuned on a few inner folds is mostly noise, and the simple one holds up better.
Among the equal-weight fusions the inner folds cannot tell apart (within one SE), the seed's
formula (``seed-baseline``) comes first, then early, then late fusion: the inner training
sets are smaller than the refit's, and which of them ranks first flips with training size
(measured on tuxpaint, benchmarks/RESULTS.md: early at or above the seed on the inner folds
of 4 of 5 outer folds, the seed above early on all 5 outer folds). The choice is never below the best single modality on the inner folds.

With ``ensemble=True`` the candidates' inner out-of-fold probabilities are also combined by
greedy ensemble selection with replacement (Caruana et al., "Ensemble selection from
libraries of models", ICML 2004); the ensemble counts as a learned candidate, and its inner
score is honest: on each inner fold the members are selected on the other folds' out-of-fold
rows only. Off by default: measured on the outer folds of the four bundled datasets
(``benchmarks/bench_auto_selection.py``), the gated ensemble lost 1.4-1.5 points on
tuxpaint and tuxpaint-grouped and gained at most 0.1 point on sign-av and av-digits.

Cost: the per-modality experts once per inner fold, early fusion and the seed baseline once
per inner fold (their only refits), the meta-level candidates on the shared out-of-fold
probabilities (milliseconds to a second), then one refit of the choice; ``cost_seconds_``
gives the breakdown. In inner folds where no row misses a modality, early fusion skips its
imputer (no inner test row would use it).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

from .._errors import InputError, MissingDependencyError
from .._params import Boolean, Interval
from ..views import Present, Views
from .base import FusionStrategy, WeightsFallbackWarning, create_fusion, register_fusion
from .choice import SINGLE_PREFIX, choose, simple_labels, simple_order, tied_with
from .ensemble import ENSEMBLE_PREFIX, PROBA_FLOOR, GreedyEnsembleMixin
from .experts import ExpertsCache, out_of_fold_probas, reuse_fit
from .candidates import (CLASSICAL_CANDIDATES, HEAD_RACE_MIN_FOLDS,  # noqa: F401
                         NEURAL_CANDIDATES, RACED_HEADS, Candidate, RacedOut,
                         fused_candidates, head_race, is_raced)
from ..splits import fallback_reason, inner_splits

AVERAGE_PREFIX = "average"


@register_fusion("auto", description="picks the strategy and weights, or a greedy ensemble of "
                 "them, by inner cross-validation (every single modality is a candidate)",
                 cost="high")
class AutoFusion(GreedyEnsembleMixin, FusionStrategy):
    """Pick among fusion strategies, weight options and single modalities by inner CV.

    Parameters
    ----------
    classifier : estimator, default=None
        Passed to every candidate (None means LogisticRegression).
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        ``"cv"`` lets the selection choose among the weight options of the candidate list
        (e.g. late fusion with learned and with equal weights); anything else fixes the
        weights of every candidate that takes them.
    cv : int, default=5
        Inner folds of the selection (stratified; grouped when groups are given). The
        candidates use the same folds for their own out-of-fold work, so the per-modality
        experts are fitted once per inner fold and shared.
    candidate_cv : int or None, default=None
        Folds of the candidates' own out-of-fold work; None (the default) means ``cv``,
        which lets every candidate share the selection's experts. Another value costs
        one more inner CV per meta-level candidate.
    candidates : sequence or None, default=None
        Fused candidates as strategy names or ``(name, params)`` pairs; None means the
        classical strategies (early and late with equal weights, the seed baseline, late
        fusion with cv weights, stacking) plus the learned heads
        when ``neural`` allows. Every single modality is always a candidate as well.
    neural : bool, "auto", str or sequence of str, default="gmu"
        Learned heads added to the default candidates. A head name or a list of names
        (the default, ``"gmu"``): those heads, when PyTorch is installed, *raced*: each
        head is scored with one network per inner fold (the refit trains the full
        ensemble), after the classical candidates, and a head whose mean inner accuracy
        trails the best simple candidate's by more than :data:`HEAD_RACE_MARGIN` after
        :data:`HEAD_RACE_MIN_FOLDS` inner folds is not trained on the other folds and
        cannot be chosen (``failed_candidates_`` says so). ``"auto"``: every head (gmu,
        attention, lowrank) when PyTorch is installed; True: every head (an error without
        PyTorch); False: none. A head is chosen, as any learned combination, only when it
        beats the best simple candidate by more than one standard error.
        Why gmu by default: on grouped data where one modality is weak under shift, a
        gated head that learns per row how much to trust each modality gained several
        points over every simple fusion (benchmarks/RESULTS.md), while the race stops it
        after two inner folds where it does not help.
    candidate_params : dict or None, default=None
        Extra parameters per strategy name, e.g. ``{"gmu": {"max_epochs": 50}}``.
    ensemble : bool, default=False
        Also consider a weighted average of candidates chosen by greedy ensemble selection
        on the inner out-of-fold probabilities (see the module docstring), as a learned
        candidate under the one-standard-error rule. False (the default) picks one
        candidate: the ensemble is a learned combination, and under group shift it lost to
        the single pick (see the module docstring).
    ensemble_size : int, default=20
        Most selection rounds (members counted with repetition; a weight is a count / total).
    average_ties : bool, default=False
        When the choice is a simple candidate, average (with equal weights) the
        probabilities of every simple candidate within one standard error of it, rather
        than betting on one of several candidates the inner folds cannot tell apart; the
        result is named ``"average(a+b)"``. Off by default: measured on tuxpaint and
        tuxpaint-grouped (benchmarks/bench_auto_selection.py), the average lost to the
        single pick (0.779 vs 0.794 and 0.355 vs 0.360 on the outer folds).
    choice : dict of candidate name -> weight, or None, default=None
        A fixed choice: no selection; the named candidates (e.g. a fitted auto's
        ``ensemble_weights_``) are fitted and their probabilities averaged with these
        weights. What :meth:`calibrated_as` gives for an ensemble or an average, so that
        calibration refits what predicts rather than redoing the selection.
    random_state : int or None, default=None

    Attributes
    ----------
    chosen_ : fitted strategy refit on all the training data (for an ensemble, its
        heaviest member)
    chosen_name_ : str
        E.g. ``"late[cv]"``, ``"gmu"``, ``"single:image"``, or for an ensemble
        ``"ensemble(attention+early[equal])"`` (members in name order).
    members_ : list of fitted strategies
        What predicts: the chosen candidate alone, or the ensemble's members.
    ensemble_weights_ : dict of candidate name -> weight
        Weight of each member in the average of probabilities ({name: 1.0} for one).
    inner_scores_ : dict of candidate name -> inner-CV accuracy (the ensemble included)
    inner_fold_scores_ : dict of candidate name -> accuracy on each inner fold
    inner_log_loss_ : dict of candidate name -> inner-CV log-loss
    inner_fold_log_loss_ : dict of candidate name -> log-loss on each inner fold
    failed_candidates_ : dict of candidate name -> why it could not be scored
    modality_weights_ : dict over every modality (0 for those the choice does not use), or None
    selection_seconds_ : float
    cost_seconds_ : dict of str -> float
        Where the time went: the shared per-modality experts of the inner CV, each
        candidate's inner CV (on top of the shared experts), the ensemble selection and
        the refit of the choice.

    Examples
    --------
    >>> clf = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf"}, fusion="auto")
    >>> clf.fit(df, df["label"]).fusion_.chosen_name_  # doctest: +SKIP
    'late[cv]'
    """

    _parameter_constraints = {
        **FusionStrategy._parameter_constraints,
        "ensemble": [Boolean()],
        "average_ties": [Boolean()],
        "ensemble_size": [Interval(1, None, integer=True)],
        "choice": [None, dict],
    }

    def __init__(self, classifier: Any = None, weights: Any = "cv", cv: int = 5,
                 candidate_cv: int | None = None, candidates: Sequence[Any] | None = None,
                 neural: Any = RACED_HEADS[0],
                 candidate_params: Mapping[str, Mapping[str, Any]] | None = None,
                 ensemble: bool = False, ensemble_size: int = 20, average_ties: bool = False,
                 choice: Mapping[str, float] | None = None, random_state: Any = None):
        self.classifier = classifier
        self.weights = weights
        self.cv = cv
        self.candidate_cv = candidate_cv
        self.candidates = candidates
        self.neural = neural
        self.candidate_params = candidate_params
        self.ensemble = ensemble
        self.ensemble_size = ensemble_size
        self.average_ties = average_ties
        self.choice = choice
        self.random_state = random_state

    # -- candidates -----------------------------------------------------------------------
    def _fused_candidates(self, modalities: tuple[str, ...]) -> list[Candidate]:
        return fused_candidates(modalities, self.candidates, self.neural, self.weights,
                                self.candidate_params)

    def _raced(self, c: Candidate) -> bool:
        return is_raced(c, self.candidates, self.neural)

    def _all_candidates(self, modalities: list[str]) -> list[Candidate]:
        mods = tuple(sorted(modalities))
        fused = self._fused_candidates(mods) if len(mods) > 1 else []
        # Fused first, so an exact tie favours fusion (it copes with missing modalities). A
        # single modality is its per-modality expert (late fusion over one modality), which
        # the fused candidates fitted on the same rows share.
        singles = [Candidate(SINGLE_PREFIX + m, "late", (m,), {"weights": "equal"})
                   for m in mods]
        return fused + singles

    def _build(self, c: Candidate) -> FusionStrategy:
        # the learned heads take only their validation splits from cv (no nested
        # out-of-fold work), so they keep the larger training share of ``cv`` folds
        learned = c.fusion in {f for f, _ in NEURAL_CANDIDATES}
        cv = self.cv if self.candidate_cv is None or learned else self.candidate_cv
        params = {"classifier": self.classifier, "cv": cv,
                  "random_state": self.random_state, **dict(c.params)}
        return create_fusion(c.fusion, **params)

    @staticmethod
    def _fit_candidate(est: FusionStrategy, c: Candidate, views: Views, y: np.ndarray,
                       present: Present, groups: Any,
                       experts_cache: ExpertsCache | None = None) -> FusionStrategy:
        v = {m: views[m] for m in c.modalities}
        p = {m: present[m] for m in c.modalities}
        keep = np.any(np.stack(list(p.values())), axis=0)
        if not keep.any():
            raise InputError(f"no training row has any of {list(c.modalities)}")
        est.fit({m: a[keep] for m, a in v.items()}, y[keep], {m: a[keep] for m, a in p.items()},
                None if groups is None else np.asarray(groups)[keep],
                experts_cache=experts_cache)
        return est

    def _proba(self, est: FusionStrategy, c: Candidate, views: Views,
               present: Present) -> np.ndarray:
        """Probabilities over all classes 0..K-1 (a candidate may have seen fewer)."""
        p = est.predict_proba({m: views[m] for m in c.modalities},
                              {m: present[m] for m in c.modalities})
        out = np.zeros((p.shape[0], len(self.classes_)))
        out[:, np.asarray(est.classes_, dtype=int)] = p
        return out

    # -- fit / predict ----------------------------------------------------------------------
    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        started = time.perf_counter()
        candidates = self._all_candidates(list(views))
        splits = inner_splits(y, groups, self.cv, self.random_state)
        self.failed_candidates_: dict[str, str] = {}
        self.inner_scores_: dict[str, float] = {}
        self.inner_fold_scores_: dict[str, list[float]] = {}
        self.inner_log_loss_: dict[str, float] = {}
        self.inner_fold_log_loss_: dict[str, list[float]] = {}
        self.cost_seconds_: dict[str, float] = {}
        by_name = {c.name: c for c in candidates}
        # one cache for the selection and the refit: the candidates' experts, out-of-fold
        # probabilities and cross-fitted experts are computed once (with the fits that
        # share the caller's cache, when one was given)
        if self._experts_cache is None:
            self._experts_cache = ExpertsCache()
        if self.choice is not None:
            counts = self._fixed_choice(by_name)
        elif splits:
            oof = self._score_candidates(candidates, splits, views, y, present, groups)
            fold_scores = {n: np.asarray(self.inner_fold_scores_[n])
                           for n in self.inner_scores_}
            simple = set(simple_order(fold_scores))
            best = choose(fold_scores)
            counts = {best: 1}
            if self.ensemble:
                t0 = time.perf_counter()
                counts = self._select_ensemble(oof, y, best, splits, simple)
                self.cost_seconds_["ensemble selection"] = time.perf_counter() - t0
            if self.average_ties and counts == {best: 1} and best in simple:
                tied = tied_with(fold_scores, best, simple)
                if len(tied) > 1:
                    counts = {n: 1 for n in tied}
                    # (for information: scored on the folds that chose the tie)
                    self._record(f"{AVERAGE_PREFIX}({'+'.join(tied)})",
                                 np.mean([oof[n] for n in tied], axis=0), y, splits)
        else:
            # too little data for inner CV: early fusion with equal weights needs none
            self.weights_fallback_ = fallback_reason(y, groups).replace(
                "equal weights", "early fusion with equal weights", 1)
            early = Candidate("early[equal]", "early", tuple(sorted(views)),
                              {"weights": "equal"})
            by_name[early.name] = early
            counts = {early.name: 1}
        total = sum(counts.values())
        names = sorted(counts)
        self.ensemble_weights_ = {n: counts[n] / total for n in names}
        self.member_candidates_ = [by_name[n] for n in names]
        t0 = time.perf_counter()
        self.members_ = [self._fit_candidate(self._build(c), c, views, y, present, groups,
                                            self._experts_cache)
                         for c in self.member_candidates_]
        self.cost_seconds_["refit of the choice"] = time.perf_counter() - t0
        heaviest = max(range(len(names)), key=lambda i: (counts[names[i]], -i))
        self.chosen_candidate_ = self.member_candidates_[heaviest]
        self.chosen_ = self.members_[heaviest]
        averaged = len(names) > 1 and set(names) <= set(simple_labels()) | {
            n for n in names if n.startswith(SINGLE_PREFIX)} and len(set(counts.values())) == 1
        prefix = AVERAGE_PREFIX if averaged and self.average_ties else ENSEMBLE_PREFIX
        self.chosen_name_ = (names[0] if len(names) == 1 else f"{prefix}({'+'.join(names)})")
        self.modality_weights_ = self._modality_weights(sorted(views))
        self.selection_seconds_ = time.perf_counter() - started

    def _fixed_choice(self, by_name: dict[str, Candidate]) -> dict[str, float]:
        unknown = sorted(set(self.choice) - set(by_name))
        if unknown or not self.choice or min(self.choice.values()) <= 0:
            raise InputError(f"choice: positive weights of candidates among {sorted(by_name)}; "
                             f"got {dict(self.choice)}")
        return {n: float(w) for n, w in self.choice.items()}

    def _inner_cv(self) -> int:
        return self.cv if self.candidate_cv is None else self.candidate_cv

    def _score_candidates(self, candidates: list[Candidate], splits: list, views: Views,
                          y: np.ndarray, present: Present, groups: Any
                          ) -> dict[str, np.ndarray]:
        """Out-of-fold probabilities of every candidate on ``splits``; fills the scores."""
        # per-modality out-of-fold probabilities on exactly these splits (the same
        # inner_splits call the candidates make), shared by every meta-level candidate
        base_oof = None
        t0 = time.perf_counter()
        if self._inner_cv() == self.cv:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="modalities missing for every")
                try:
                    base_oof = out_of_fold_probas(views, y, present, groups, self.classifier,
                                                  self.cv, self.random_state,
                                                  experts_cache=self._experts_cache)
                except InputError:
                    base_oof = None
        self.cost_seconds_["per-modality experts (inner CV)"] = time.perf_counter() - t0
        oof: dict[str, np.ndarray] = {}
        # raced heads last: the race compares them with the simple candidates' fold scores
        order = ([c for c in candidates if not self._raced(c)]
                 + [c for c in candidates if self._raced(c)])
        for c in order:
            t0 = time.perf_counter()
            race = self._race(c, splits, y) if self._raced(c) else None
            if race is not None and len(splits) <= HEAD_RACE_MIN_FOLDS:
                # too few inner folds to race a head, or to tell whether it beats the simple
                # candidates by one standard error: not worth its training
                self.failed_candidates_[c.name] = (
                    f"not raced: {len(splits)} inner folds (a raced head needs more than "
                    f"{HEAD_RACE_MIN_FOLDS})")
                continue
            try:
                with warnings.catch_warnings():
                    # a modality absent from one inner fold is expected here
                    warnings.filterwarnings("ignore", message="modalities missing for every")
                    # a learned candidate that cannot learn on an inner fold is not scored
                    # as what it claims to be (its equal-weight form is a candidate too)
                    warnings.simplefilter("error", WeightsFallbackWarning)
                    proba = self._candidate_oof(c, splits, views, y, present, groups,
                                                base_oof, race)
            except (InputError, MissingDependencyError, RacedOut,
                    WeightsFallbackWarning) as exc:
                self.failed_candidates_[c.name] = str(exc)
                self.cost_seconds_[c.name] = time.perf_counter() - t0
                continue
            oof[c.name] = proba
            self._record(c.name, proba, y, splits)
            self.cost_seconds_[c.name] = time.perf_counter() - t0
        return oof

    def _record(self, name: str, proba: np.ndarray, y: np.ndarray, splits: list) -> None:
        fold_acc = [float(np.mean(proba[te].argmax(axis=1) == y[te])) for _, te in splits]
        truth = np.clip(proba[np.arange(len(y)), y], PROBA_FLOOR, 1.0)
        self.inner_fold_scores_[name] = fold_acc
        self.inner_fold_log_loss_[name] = [float(-np.log(truth[te]).mean()) for _, te in splits]
        self.inner_scores_[name] = float(np.mean(proba.argmax(axis=1) == y))
        self.inner_log_loss_[name] = float(-np.log(truth).mean())

    def _race(self, c: Candidate, splits: list, y: np.ndarray) -> Any:
        return head_race(self.inner_fold_scores_, splits, y)

    def _candidate_oof(self, c: Candidate, splits: list, views: Views, y: np.ndarray,
                       present: Present, groups: Any, base_oof: dict | None,
                       race: Any = None) -> np.ndarray:
        """A candidate's out-of-fold probabilities (rows it cannot see get the prior).
        ``race``: called after each fold with the fold index and the probabilities so far
        (it raises to stop)."""
        k = len(self.classes_)
        out = np.full((len(y), k), np.nan)
        est0 = self._build(c)
        meta = base_oof is not None and est0.has_meta_level()
        mods = list(c.modalities)
        sees = np.any(np.stack([present[m] for m in mods]), axis=0)
        complete = all(present[m].all() for m in mods)
        for j, (train, test) in enumerate(splits):
            if meta:
                # the meta level, cross-validated on the shared out-of-fold probabilities
                est = self._build(c)
                if complete and "impute" in est.get_params():
                    est.set_params(impute=False)  # as below: no row to impute
                tr = train[sees[train]]
                if len(np.unique(y[tr])) < 2:
                    raise InputError(f"an inner training fold of {c.name} has one class")
                g_tr = None if groups is None else np.asarray(groups)[tr]
                est.fit_meta({m: base_oof[m][tr] for m in mods}, y[tr],
                             {m: present[m][tr] for m in mods}, g_tr, n_classes=k)
                proba = est.predict_meta({m: base_oof[m][test] for m in mods},
                                         {m: present[m][test] for m in mods})
            else:
                v_tr = {m: views[m][train] for m in mods}
                p_tr = {m: present[m][train] for m in mods}
                g_tr = None if groups is None else np.asarray(groups)[train]
                est = self._build(c)
                if complete and "impute" in est.get_params():
                    # no row here misses a modality, so no inner test row needs imputing:
                    # skipping the imputer's fit changes no prediction (it stays on for
                    # the refit, whose test rows may miss some)
                    est.set_params(impute=False)
                if race is not None and "n_members" not in c.params:
                    # a raced head is scored with one network per inner fold (a third of
                    # the default ensemble's cost; the refit trains the whole ensemble, so
                    # the inner score is, if anything, pessimistic)
                    est.set_params(n_members=1)

                def fit(est=est, v_tr=v_tr, p_tr=p_tr, g_tr=g_tr, y_tr=y[train]) -> Any:
                    return self._fit_candidate(est, c, v_tr, y_tr, p_tr, g_tr,
                                               self._experts_cache)

                # inside an evaluation, another outer fold may hold these very training
                # rows (leave-one-group-out outer and inner folds): the same fit, reused
                est = reuse_fit(("auto-candidate", c.fusion, tuple(mods),
                                 repr(est.get_params(deep=False))), fit,
                                y[train], g_tr, *(v_tr[m] for m in mods),
                                *(p_tr[m] for m in mods), experts_cache=self._experts_cache)
                proba = self._proba(est, c, {m: views[m][test] for m in mods},
                                    {m: present[m][test] for m in mods})
            prior = np.bincount(y[train], minlength=k) / len(train)
            proba = np.asarray(proba, dtype=float)
            proba[~sees[test]] = prior
            out[test] = proba
            if race is not None:
                race(j, out)
        return out

    def calibrated_as(self) -> tuple[FusionStrategy, list[str]] | None:
        """The chosen candidate, unfitted (as the refit builds it), and its modalities:
        calibration and coverage learn from its out-of-fold probabilities on the training
        rows (its bagged experts where it has a meta level), as they would for that
        strategy fitted alone, rather than from nested refits of the whole selection.
        For an ensemble or an average of candidates: this auto with its ``choice`` fixed
        (its members refit on inner folds and averaged with their weights, unselected)."""
        check_is_fitted(self, "members_")
        if len(self.members_) != 1:  # the members refit with their weights, unselected
            return clone(self).set_params(choice=dict(self.ensemble_weights_)), self.modalities_
        c = self.chosen_candidate_
        return self._build(c), list(c.modalities)

    def _modality_weights(self, modalities: list[str]) -> dict[str, float] | None:
        """Each member's modality weights (uniform over its modalities when it has none),
        averaged with the ensemble weights; None for a lone member without weights."""
        out = dict.fromkeys(modalities, 0.0)
        for c, est in zip(self.member_candidates_, self.members_):
            inner = getattr(est, "modality_weights_", None)
            if inner is None:
                if len(self.members_) == 1:
                    return None
                inner = {m: 1.0 / len(c.modalities) for m in c.modalities}
            for m in modalities:
                out[m] += self.ensemble_weights_[c.name] * float(inner.get(m, 0.0))
        return out

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        if len(self.members_) == 1:
            return self._proba(self.members_[0], self.member_candidates_[0], views, present)
        n = next(iter(views.values())).shape[0]
        out = np.zeros((n, len(self.classes_)))
        weight = np.zeros(n)
        for c, est in zip(self.member_candidates_, self.members_):
            # a member that sees none of a row's modalities would answer with the class
            # prior: its weight goes to the members that see something
            sees = np.any(np.stack([present[m] for m in c.modalities]), axis=0)
            w = self.ensemble_weights_[c.name] * sees
            out += w[:, None] * self._proba(est, c, views, present)
            weight += w
        blind = weight == 0  # (rows with no modality at all are answered by the base class)
        out[blind] = 1.0 / len(self.classes_)
        weight[blind] = 1.0
        return out / weight[:, None]
