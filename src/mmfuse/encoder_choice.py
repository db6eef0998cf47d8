"""The encoder choice: each modality's encoder chosen by grouped, stratified inner
cross-validation (what to choose from: :mod:`mmfuse.encoders.candidates`).

``encoders="auto"`` (every installed encoder of each modality, classical and pretrained,
but for the privacy variants of TF-IDF, which declare ``variant_of``)
or a list per column (``{"text": ["tfidf", "minilm", "tfidf+minilm"]}``) makes the
encoder a choice learned from the training data, like the fusion strategy:

1. Every candidate is scored **alone** (its modality only: the per-modality expert of the
   fusion strategies, a scaler and the classifier) on inner splits of the training rows,
   made like the outer ones (:func:`mmfuse.splits.inner_splits`: stratified, and
   grouped whenever groups exist). The score of a fold is its log-loss (default) or
   accuracy; rows a candidate could not encode get the fold's class prior, so an encoder
   that fails on items pays for it.
2. With ``"auto"``, the concatenation of the two best single encoders (``a+b``, see
   :mod:`mmfuse.encoders.concat`) is scored on the same splits as one more candidate:
   fusion can then use both when both help. A list holds exactly the candidates it names
   (write ``"tfidf+minilm"`` to include a concatenation). Parsimony: a concatenation
   replaces the best single encoder only when it beats it by more than one standard error
   of the paired per-fold differences (:func:`parsimonious_choice`): an extra encoder must
   pay for itself. With fewer inner folds than :data:`mmfuse._stats.MIN_FOLDS` (leave one
   group out over three groups) no gain can be established, so the pair is not scored.
   The two are also scored as **separate experts** ``a|b`` (:data:`SEPARATE_EXPERTS`; a
   list may name ``"tfidf|minilm"``): the view ``a+b``, one classifier per part, the
   softmax of their mean log-probabilities (:class:`~mmfuse.fusion.linear.SplitExperts`).
   It is scored as it will be fitted (its own experts per inner fold, not the singles'
   geometric mean: a concatenation with TF-IDF scales its parts differently and drops a
   row either part misses). Parsimony treats both forms alike (two encoders: each must
   beat the best single by one SE); between them the best inner mean wins, a tie (equal
   cost) going to ``a|b``, listed first, as the plain one-SE rule does: on held-out
   grouped data separate experts beat the concatenations (issue 27).
3. The one-standard-error rule toward the cheaper encoder (:func:`one_se_cheapest`),
   capped: the choice is the cheapest candidate (:func:`encoder_cost`) whose paired
   per-fold score difference to the best one is at most one standard error *and* whose
   mean inner accuracy is at most :data:`MAX_ACCURACY_LOSS` below the best one's. The
   default cap is 0: the cost only breaks ties, and the choice is the best inner mean.
   Why: the one-SE rule rests on the simpler model generalising at least as well, but a
   cheaper encoder is not a simpler model of the same family, so nothing makes it do as
   well out of sample; and on small grouped data one standard error of five inner folds
   is several points. Measured on tuxpaint-grouped
   (``benchmarks/bench_encoder_choice_rules.py``, same outer folds): the uncapped rule
   chose wordllama over minilm and single encoders over helpful pairs, several points of
   fused accuracy below the best fixed combination; the best inner mean matched it.
   ``max_accuracy_loss=0.01`` or ``None`` trades accuracy for speed.

Racing: candidates are scored fold by fold, and after :data:`RACE_MIN_FOLDS` inner folds
a candidate whose mean inner accuracy is more than :data:`RACE_MARGIN` below the
runner-up's (the second best so far, so that the best two, which make the pair, stay) is
not scored on the remaining folds and cannot be chosen. It only saves time: measured on
every outer training fold of the four bundled datasets (54 column choices), the largest
gap between the runner-up and an eventual top-two candidate after two or more folds was
2.6 points, so a 5-point margin changed no choice and no pair, and skipped about a fifth
of the candidates' inner fits (the weak ones: pixels, colour histograms, log-mel on
speech; ``benchmarks/bench_encoder_race.py``). ``race_margin=None`` scores every
candidate on every fold.

Features of stateless encoders are computed once for every fold (and come from the
feature cache); an encoder that learns (TF-IDF) is fit on each inner training fold only,
so its inner score is as honest as the others'.

This module sits above the encoders and the fusion strategies: a candidate is scored with
the per-modality experts of the fusion strategies (:mod:`mmfuse.fusion.experts`), on the
inner splits of :mod:`mmfuse.splits`.

Which score: accuracy by default. Under group shift the per-modality logistic regression
is over-confident (inner log-losses above the chance level's were seen on
tuxpaint-grouped), so log-loss ranks how confident a feature scale makes the classifier
rather than how often it is right, and the two disagreed there. ``scoring="log_loss"``
is available; ``benchmarks/bench_encoders_auto.py`` (second part) measures the regret of
both rules on the bundled datasets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import InputError
from ._stats import MIN_FOLDS, one_se_rule
from .encoders.candidates import Candidates, encoder_cost
from .encoders.concat import SEPARATOR
from .encoders.parts import (SPLIT, Part, candidate_view, encoder_parts, view_classifier)
from .fusion.experts import (ExpertsCache, ModalityExpert, recall_cross_fit,
                             remember_cross_fit, reuse_fit)
from .splits import inner_splits

SCORINGS = ("log_loss", "accuracy")
#: The score the selection uses by default (see the module docstring).
DEFAULT_SCORING = "accuracy"
#: Log-loss of a row is capped at -log(PROBA_FLOOR): one confident mistake must not
#: outweigh a fold.
PROBA_FLOOR = 1e-6
#: Mean inner accuracy the choice may give up for a cheaper encoder (see
#: :func:`one_se_cheapest`). 0: none, the cost only breaks ties (the module docstring says
#: why); 0.01 trades up to a point for speed; None: the plain one-SE rule.
MAX_ACCURACY_LOSS = 0.0

#: Racing (see the module docstring): after RACE_MIN_FOLDS inner folds, a candidate whose
#: mean inner accuracy is more than RACE_MARGIN below the runner-up's is not scored on the
#: other folds. None: every candidate is scored on every fold.
RACE_MARGIN: float | None = 0.05
#: An extra encoder must pay for itself (:func:`parsimonious_choice`)
PARSIMONY = True
#: ``"auto"`` also scores the best two as separate experts ``a|b`` (read at call time); off:
#: no outer gain on icons-family (a|b chosen in 1 fold, same accuracy), tuxpaint-grouped
#: (-0.1 point) or icons-theme (equal) (benchmarks/RESULTS.md, issue 27), for 1.1-1.4x CPU
SEPARATE_EXPERTS = False
RACE_MIN_FOLDS = 2


@dataclass
class EncoderSelection:
    """What :func:`select_encoder` found for one column.

    Attributes
    ----------
    chosen : str
        The chosen candidate (``"a+b"`` for a concatenation, ``"a|b"`` for separate
        experts: the view of :func:`view_name`, the classifier of :func:`view_classifier`).
    scoring : str
    fold_scores : dict of candidate -> per-inner-fold scores (higher is better: accuracy, or
        minus the log-loss)
    fold_accuracy, fold_log_loss : dict of candidate -> per-inner-fold values (both
        metrics, whichever chose)
    costs : dict of candidate -> relative cost
    dropped : dict of candidate -> number of inner folds it was scored on, for the
        candidates the race left behind (clearly beaten on the first folds: not scored on
        the others, not choosable; see :func:`score_candidates`)
    """

    chosen: str
    scoring: str
    fold_scores: dict[str, list[float]] = field(default_factory=dict)
    fold_accuracy: dict[str, list[float]] = field(default_factory=dict)
    fold_log_loss: dict[str, list[float]] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def scores(self) -> dict[str, float]:
        """Mean inner score of each candidate."""
        return {n: float(np.mean(s)) for n, s in self.fold_scores.items()}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no data)."""
        return {"chosen": self.chosen, "scoring": self.scoring,
                "accuracy": {n: round(float(np.mean(v)), 4)
                             for n, v in self.fold_accuracy.items()},
                "log_loss": {n: round(float(np.mean(v)), 4)
                             for n, v in self.fold_log_loss.items()},
                **({"dropped_after_folds": dict(self.dropped)} if self.dropped else {})}


def one_se_cheapest(fold_scores: Mapping[str, Sequence[float]],
                    costs: Mapping[str, float],
                    fold_accuracy: Mapping[str, Sequence[float]] | None = None,
                    max_accuracy_loss: float | None = None) -> str:
    """The cheapest candidate within one standard error of the best (higher is better).

    The best candidate has the highest mean per-fold score; a candidate qualifies when the
    mean of its paired per-fold difference to the best is at most one standard error of
    that difference. Among qualifying candidates the cheapest wins (ties: first listed).

    With ``fold_accuracy`` and ``max_accuracy_loss``, a candidate also qualifies only when
    its mean inner accuracy is at most ``max_accuracy_loss`` below the best one's: the
    standard error bounds what the rule gives up by the noise of the inner folds, which
    on small grouped data can be several points; this bounds it by what a user accepts.
    """
    names = list(fold_scores)
    if not names:
        raise InputError("no candidate to choose from")
    means = {n: float(np.mean(fold_scores[n])) for n in names}
    best = max(names, key=lambda n: (means[n], -costs.get(n, 0.0), -names.index(n)))
    allowed = []
    for n in names:
        if max_accuracy_loss is not None and fold_accuracy is not None and n != best:
            shortfall = float(np.mean(fold_accuracy[best]) - np.mean(fold_accuracy[n]))
            if shortfall > max_accuracy_loss + 1e-12:
                continue
        allowed.append(n)
    cheapest_first = sorted(allowed, key=lambda n: (costs.get(n, 0.0), names.index(n)))
    return one_se_rule(fold_scores, cheapest_first, best=best)


def _fold_metrics(proba: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    acc = float(np.mean(proba.argmax(axis=1) == y))
    p_true = np.clip(proba[np.arange(len(y)), y], PROBA_FLOOR, 1.0)
    return acc, float(-np.mean(np.log(p_true)))


def score_candidates(parts: Mapping[str, Part], names: Sequence[str], y: np.ndarray,
                     splits: Sequence[tuple[np.ndarray, np.ndarray]], classifier: Any = None,
                     random_state: Any = None, shared: tuple[str, Any, int] | None = None,
                     race_margin: float | None = None, rows: np.ndarray | None = None,
                     experts_cache: ExpertsCache | None = None,
                     fitted: dict | None = None) -> tuple[dict, dict]:
    """Per-fold accuracy and log-loss of each candidate on ``splits`` (single-modality
    expert: the fusion strategies' scaler + classifier). Returns ``(accuracy, log_loss)``,
    each a dict of candidate -> list over the folds it was scored on.

    Candidates are scored fold by fold. With ``race_margin``, a candidate whose mean
    accuracy over the folds scored so far (at least :data:`RACE_MIN_FOLDS`) is more than
    ``race_margin`` below the runner-up's (the second best so far) is not scored on the
    remaining folds (racing: its lists stay shorter, and it cannot be chosen); None scores
    every candidate on every fold.

    ``shared=(column, groups, n_splits)``, where ``splits`` are
    ``inner_splits(y, groups, n_splits, random_state)``: the inner-fold experts and
    out-of-fold probabilities of a candidate whose features are fixed and that was scored
    on every fold are handed to :func:`mmfuse.fusion.experts.remember_cross_fit` under the
    column's name, so that, given the same ``experts_cache``, a fusion
    strategy fitted next on the chosen view reuses them instead of fitting the same
    experts again (they are the very experts :func:`~mmfuse.fusion.experts.out_of_fold_probas`
    would fit on those splits).

    ``rows``: the ids of these rows in the table of an ``experts_cache`` that shares rows
    (:meth:`~mmfuse.fusion.experts.ExpertsCache.sharing_rows`: an evaluation's outer
    training rows): a candidate with fixed features reuses an expert fitted on the same
    rows by an earlier call with that cache (another outer fold) instead of fitting it
    again.

    ``fitted``: a dict shared by calls on the same ``splits`` (the singles, then the pairs),
    holding each encoder that learns (TF-IDF) fitted once per inner fold: ``tfidf`` and
    ``tfidf+minilm`` use the same fit (the same rows; fitting it again gives the same
    features).
    """
    n_classes = int(y.max()) + 1
    acc: dict[str, list[float]] = {n: [] for n in names}
    loss: dict[str, list[float]] = {n: [] for n in names}
    priors = [np.bincount(y[train], minlength=n_classes) / len(train) for train, _ in splits]
    fixed = {n: all(parts[p].encoder is None for p in encoder_parts(n) if p in parts)
             for n in names}
    # features of fixed candidates: built once for every fold; a candidate "a|b" has its
    # own classifier (SplitExperts over its parts' blocks)
    views = {n: candidate_view(parts, n, None) for n in names if fixed[n]}
    clfs = {n: view_classifier(n, v[2], classifier) for n, v in views.items()}
    remembered: dict[str, Any] = {}
    kept: dict[str, tuple[np.ndarray, list]] = {}
    if shared is not None:
        column, groups, n_splits = shared
        for n in views:
            found = recall_cross_fit(column, views[n][0], y, views[n][1], groups,
                                     clfs[n], n_splits, random_state,
                                     experts_cache=experts_cache)
            if found is not None:
                remembered[n] = found
            else:
                kept[n] = (np.full((len(y), n_classes), np.nan), [])
    alive = list(names)
    fitted = {} if fitted is None else fitted

    def fold_view(name: str, j: int, train: np.ndarray) -> tuple:
        # an encoder that learns: fit once per inner fold, whichever candidate asks first
        own = {}
        for p in encoder_parts(name):
            if parts[p].encoder is not None and (p, j) not in fitted:
                fitted[(p, j)] = Part(parts[p].present, view=parts[p].features(train))
            own[p] = fitted.get((p, j), parts[p])
        return candidate_view(own, name, None)

    for j, ((train, test), prior) in enumerate(zip(splits, priors)):
        for name in alive:
            if name in remembered:
                proba = remembered[name][0][test]
            else:
                view, present, widths = (views[name] if name in views
                                         else fold_view(name, j, train))
                clf = clfs[name] if name in clfs else view_classifier(name, widths, classifier)

                def fit(view=view, present=present, train=train, clf=clf) -> ModalityExpert:
                    return ModalityExpert(clf, random_state).fit(
                        view[train], y[train], present[train], n_classes)

                if name in views and rows is not None:  # fixed features: one fit per rows
                    key = ("selection", None if shared is None else shared[0], name,
                           repr(clf), repr(random_state), n_classes)
                    expert = reuse_fit(key, fit, np.sort(rows[train]), y[train],
                                       experts_cache=experts_cache)
                else:
                    expert = fit()
                proba = expert.predict_proba(view[test], present[test])
                if name in kept:
                    kept[name][0][test] = proba
                    kept[name][1].append(expert)
            proba = np.array(proba, copy=True)
            proba[np.isnan(proba).any(axis=1)] = prior
            a, ll = _fold_metrics(proba, y[test])
            acc[name].append(a)
            loss[name].append(ll)
        if race_margin is not None and RACE_MIN_FOLDS <= j + 1 < len(splits):
            means = {n: float(np.mean(acc[n])) for n in alive}
            # below the runner-up, not the leader: the best two stay (the pair of "auto")
            ref = sorted(means.values())[-2] if len(means) > 1 else -np.inf
            alive = [n for n in alive if means[n] >= ref - race_margin - 1e-12]
    if shared is not None:
        column, groups, n_splits = shared
        for name in alive:
            if name in kept:
                remember_cross_fit(column, views[name][0], y, views[name][1], groups,
                                   clfs[name], n_splits, random_state, *kept[name],
                                   experts_cache=experts_cache)
    return acc, loss


def select_encoder(parts: Mapping[str, Part], candidates: Candidates, y: Any,
                   groups: Any = None, *, cv: int = 5, scoring: str = DEFAULT_SCORING,
                   classifier: Any = None, random_state: Any = None,
                   column: str | None = None,
                   max_accuracy_loss: float | None = MAX_ACCURACY_LOSS,
                   race_margin: float | None = RACE_MARGIN,
                   rows: np.ndarray | None = None,
                   parsimony: bool | None = None,
                   experts_cache: ExpertsCache | None = None) -> EncoderSelection:
    """Choose one column's encoder among ``candidates`` by inner CV (see the module doc).

    Parameters
    ----------
    parts : dict of encoder name -> Part
        Features of every single encoder the candidates use, for the training rows.
    candidates : Candidates
    y : array of int labels 0..K-1 (the training rows)
    groups : array or None
        Groups of the training rows: the inner splits are then grouped (and stratified).
    cv : int, default=5
        Inner folds.
    scoring : {"log_loss", "accuracy"}, default=DEFAULT_SCORING
    max_accuracy_loss : float or None, default=MAX_ACCURACY_LOSS
        The one-SE rule gives up at most this much mean inner accuracy for a cheaper
        candidate (None: only the standard error bounds it; see :func:`one_se_cheapest`).
    classifier : estimator or None
        The per-modality classifier (None: LogisticRegression, as the fusion strategies).
    random_state : int or None
    column : str or None
        The column's name: given the same ``experts_cache``, the fusion strategy fitted
        next on the chosen view then reuses the selection's per-modality experts (see
        :func:`score_candidates`).
    race_margin : float or None, default=RACE_MARGIN
        Stop scoring a candidate whose mean inner accuracy, after at least
        :data:`RACE_MIN_FOLDS` folds, is more than this (plus ``max_accuracy_loss``) below
        the runner-up's (see the module docstring); None scores every candidate on every
        fold. Only with accuracy scoring and a capped rule (``max_accuracy_loss`` not None).
    parsimony : bool or None, default=None
        None means :data:`PARSIMONY` (True): a candidate with more encoders (``a+b``,
        ``a|b``) replaces the best one with fewer only when it beats it by more than one SE
        (:func:`parsimonious_choice`), which takes at least :data:`mmfuse._stats.MIN_FOLDS`
        inner folds: with fewer, the pair of ``"auto"`` is not scored. False compares every
        candidate alike.
    rows : array of int or None
        The ids of the given rows in a larger table, with an ``experts_cache`` that shares
        rows: inner experts fitted on the same rows by another call with it (another
        outer fold of one evaluation) are reused (see :func:`score_candidates`).
    experts_cache : ExpertsCache or None
        What the selection shares with the fits given the same cache (None: nothing).

    Returns
    -------
    EncoderSelection
    """
    if scoring not in SCORINGS:
        raise InputError(f"scoring must be one of {list(SCORINGS)}; got {scoring!r}")
    names = list(candidates.names)
    y = np.asarray(y)
    if len(names) == 1:
        return EncoderSelection(names[0], scoring, costs={names[0]: encoder_cost(names[0])})
    splits = inner_splits(y, groups, cv, random_state)
    if not splits:
        raise InputError("too few samples (or groups) per class to choose encoders by inner "
                         "cross-validation; name one encoder per column")
    shared = None if column is None else (column, groups, cv)
    margin = None
    if race_margin is not None and scoring == "accuracy" and max_accuracy_loss is not None:
        margin = float(race_margin) + float(max_accuracy_loss)
    fitted: dict = {}  # encoders that learn, fit once per inner fold
    acc, loss = score_candidates(parts, names, y, splits, classifier, random_state, shared,
                                 race_margin=margin, rows=rows, experts_cache=experts_cache,
                                 fitted=fitted)
    # candidates left behind by the race were not scored on every fold: not choosable
    dropped = {n: len(v) for n, v in acc.items() if len(v) < len(splits)}
    complete = [n for n in names if n not in dropped]
    if parsimony is None:
        parsimony = PARSIMONY
    # under parsimony a pair needs MIN_FOLDS inner folds to establish its gain: with fewer
    # it cannot be chosen, so it is not scored (icons-theme: 29% of the one command's CPU)
    if candidates.pair and len(complete) >= 2 and (not parsimony or len(splits) >= MIN_FOLDS):
        score = _score_dict(acc, loss, scoring)
        top = sorted(sorted(complete, key=lambda n: -float(np.mean(score[n])))[:2],
                     key=lambda n: (encoder_cost(n), n))
        joins = (SPLIT, SEPARATOR) if SEPARATE_EXPERTS else (SEPARATOR,)  # a tie: "a|b"
        pairs = [j.join(top) for j in joins if j.join(top) not in acc]
        if pairs:
            more_acc, more_loss = score_candidates(parts, pairs, y, splits, classifier,
                                                   random_state, shared, rows=rows,
                                                   experts_cache=experts_cache,
                                                   fitted=fitted)
            acc.update(more_acc)
            loss.update(more_loss)
    costs = {n: encoder_cost(n) for n in acc}
    score = _score_dict(acc, loss, scoring)
    choosable = {n: v for n, v in score.items() if n not in dropped}
    pick = (parsimonious_choice(choosable, costs, acc, max_accuracy_loss) if parsimony
            else one_se_cheapest(choosable, costs, acc, max_accuracy_loss))
    return EncoderSelection(pick, scoring, score, acc, loss, costs, dropped)


def parsimonious_choice(fold_scores: Mapping[str, Sequence[float]],
                        costs: Mapping[str, float],
                        fold_accuracy: Mapping[str, Sequence[float]] | None = None,
                        max_accuracy_loss: float | None = None) -> str:
    """:func:`one_se_cheapest` among the candidates with the fewest encoders; a candidate
    with more encoders (a concatenation ``a+b``) replaces that choice only when its per-fold
    scores beat the choice's by more than one standard error of the paired differences.

    An extra encoder must pay for itself: a concatenation has more features for the same
    rows, so its inner-CV edge is partly fit to the inner folds' groups, and under group
    shift a small edge does not carry over (on held-out grouped data the chosen
    concatenations lost several points of fused accuracy to the single encoders).
    """
    by_size: dict[int, list[str]] = {}
    for n in fold_scores:
        by_size.setdefault(len(encoder_parts(n)), []).append(n)
    pick = None
    for size in sorted(by_size):
        best = one_se_cheapest({n: fold_scores[n] for n in by_size[size]}, costs,
                               fold_accuracy, max_accuracy_loss)
        # more encoders only when they beat the choice by more than one SE
        pick = best if pick is None else one_se_rule(fold_scores, [pick, best], best=best,
                                                      must_beat=True)
    return pick


def _score_dict(acc: dict, loss: dict, scoring: str) -> dict[str, list[float]]:
    if scoring == "accuracy":
        return acc
    return {n: [-v for v in values] for n, values in loss.items()}


def choose_encoders(model: Any, X: Any, y: Any, groups: Any,
                    experts_cache: ExpertsCache | None = None) -> tuple[dict | None, dict]:
    """A :class:`~mmfuse.estimator.MultimodalClassifier`'s encoder spec with each candidate
    column's encoder chosen by inner CV on this training data (its settings: ``encoders``,
    ``cv``, ``classifier``, ``random_state``, ``on_error``, ``pooling``, ``scrub_pii``):
    ``(specs, {column: selection as a dict})``; specs is None when ``encoders`` is None.
    ``experts_cache``: shared with the model's fusion fit (see :func:`select_encoder`)."""
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import column_or_1d

    from .encoders.featurizer import as_columns, encode_candidates, resolve_encoders
    from .encoders.parts import needed_encoders, view_name

    chosen: dict[str, Any] = {}
    if model.encoders is None:
        return None, chosen
    columns, _ = as_columns(X, encoders_given=True)
    specs = resolve_encoders(model.encoders, columns)
    if not any(isinstance(s, Candidates) for s in specs.values()):
        return specs, chosen
    if model.epsilon is not None:
        raise InputError("epsilon: choosing encoders learns from the data outside the "
                         "privacy budget; name one encoder per column")
    y = column_or_1d(y, warn=True)
    check_classification_targets(y)
    y_enc = np.unique(y, return_inverse=True)[1]
    groups = None if groups is None else np.asarray(groups)
    for col, spec in specs.items():
        if not isinstance(spec, Candidates):
            continue
        if len(columns[col]) != len(y_enc):
            raise InputError(f"X has {len(columns[col])} samples but y has {len(y_enc)} "
                             f"labels")
        parts, _ = encode_candidates(needed_encoders(spec), columns, col,
                                     on_error=model.on_error, pooling=model.pooling,
                                     scrub_pii=bool(model.scrub_pii))
        selection = select_encoder(parts, spec, y_enc, groups, cv=model.cv,
                                   classifier=model.classifier,
                                   random_state=model.random_state, column=col,
                                   experts_cache=experts_cache)
        chosen[col] = selection.to_dict()
        specs[col] = view_name(selection.chosen)  # "a|b": the view of "a+b"
    return specs, chosen


def with_split_experts(model: Any, strategy: Any) -> Any:
    """``strategy`` with a :class:`~mmfuse.fusion.linear.SplitExperts` as the per-view
    classifier of each of ``model``'s columns that chose separate experts (``"a|b"``: its
    view is the concatenation ``a+b``, one classifier per part's block of columns)."""
    from .encoders.parts import is_split
    from .fusion.linear import classifier_for, with_view_classifiers

    split = {c: s["chosen"] for c, s in model.encoder_selection_.items()
             if is_split(s["chosen"])}
    params = strategy.get_params(deep=False)
    if not split or "classifier" not in params:
        return strategy
    base = params["classifier"]
    own = {c: view_classifier(name, [p.dim for p in model.encoders_[c].parts_],
                              classifier_for(base, c)) for c, name in split.items()}
    return strategy.set_params(classifier=with_view_classifiers(base, own))
