"""MultimodalClassifier: raw multimodal samples in, fused predictions out (scikit-learn API)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d

from ._constants import ON_ERROR
from ._errors import InputError
from ._params import (CLASSIFIER, Boolean, HasMethods, Interval, Options, same_value,
                      validate_params)
from .encoders.base import Encoder, ItemError
from .encoders.featurizer import (PASSTHROUGH, Encoded, Featurizer,  # noqa: F401 (re-export)
                                  as_columns, build_encoders, is_passthrough, resolve_encoders)
from .encoders.cells import POOLING
from .uncertainty import CALIBRATIONS, SCORES
from .views import Present, Views


class PredictReport(NamedTuple):
    """What :meth:`MultimodalClassifier.predict_report` returns."""

    labels: np.ndarray
    proba: np.ndarray
    errors: list[ItemError]


def _check_epsilon(epsilon: Any) -> None:
    if epsilon is not None:
        from .privacy.dp import check_epsilon

        check_epsilon(epsilon)


def _check_delta(delta: Any) -> None:
    from .privacy.dp import check_delta

    check_delta(delta)


#: Settings of the estimator that reach the fusion strategy, by name or given as an object.
STRATEGY_SETTINGS = ("weights", "classifier", "cv")


class MultimodalClassifier(ClassifierMixin, BaseEstimator):
    """Classify samples that carry several modalities by fusing their features.

    Parameters
    ----------
    encoders : dict or "auto", default=None
        Column name -> encoder name (see ``mmfuse encoders``), Encoder instance, or
        ``"passthrough"`` for pre-extracted feature arrays. None with a dict of arrays means
        every array is passthrough. A list of names per column (``{"text": ["tfidf",
        "minilm", "tfidf+minilm"]}``) or ``"auto"`` (for a column: every installed encoder
        of its modality; for the whole argument: for each column named image, text or
        audio) makes ``fit`` choose the encoder by grouped, stratified inner CV on the
        training data, each candidate scored alone, with a one-standard-error rule toward
        the cheaper encoder (see :mod:`mmfuse.encoder_choice`). ``"a+b"`` puts two
        encoders' features side by side (:mod:`mmfuse.encoders.concat`); a candidate
        ``"a|b"`` (scored by ``"auto"`` too) keeps them as separate experts: the view
        ``a+b``, one classifier per part (:class:`~mmfuse.fusion.linear.SplitExperts`).
    fusion : str or FusionStrategy, default="late"
        A registered strategy name (early, weighted, late, stacking, seed-baseline, auto,
        ...), or a strategy instance such as ``LateFusion(weights="cv")`` (cloned at fit; its
        own parameters rule, reachable as ``fusion__<param>`` by ``set_params`` and
        ``GridSearchCV``). ``weights``, ``classifier`` and ``cv`` below apply to a strategy
        by name, and to an instance that left its own at the default (two different
        settings are an error); ``random_state`` goes to an instance that has none.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        Modality weights, learned on the training data only (out-of-fold).
    classifier : estimator, default=None
        Per-modality / fused classifier; None means LogisticRegression.
    cv : int, default=5
        Inner folds used to learn weights (grouped when ``fit`` gets groups).
    random_state : int or None, default=None
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable item does: raise, or count the modality as missing for that row
        (reported in ``errors_``). Rows left with no modality at all are dropped from
        training and listed in ``skipped_rows_``.
    fusion_params : dict or None, default=None
        Extra parameters for the strategy (e.g. ``{"projection": "pca"}``).
    scrub_pii : bool, default=False
        Replace e-mail addresses, URLs, phone, card and IBAN numbers, IP addresses and US
        SSNs in text by typed placeholders (``{{EMAIL}}``...) before any text encoder sees
        them, at fit, predict and serve time (see :mod:`mmfuse.privacy.scrub`). Saved with
        the model.
    epsilon : float or None, default=None
        Train with (epsilon, delta)-differential privacy: the total budget over
        everything learned (needs ``mmfuse[privacy]``). Only fixed-weight ``early`` and
        ``late`` fusion, data-independent encoders (pretrained, hog, mfcc, ``hashing``...)
        and mmfuse's DP linear models are allowed; see :mod:`mmfuse.privacy.dp`.
    delta : float, default=1e-5
        The delta of the budget (only with ``epsilon``); 0 for pure epsilon-DP.
    pooling : {"mean", "max"}, default="mean"
        How the embeddings of a cell holding several files (a list of paths, see
        :mod:`mmfuse.encoders.cells`) are pooled into the cell's row.
    calibration : {"temperature", "isotonic"} or None, default=None
        Calibrate the fused probabilities on out-of-fold probabilities of grouped inner
        folds (``cv``; a group never calibrates itself), per missingness pattern
        (:mod:`mmfuse.uncertainty.fit`, which gives the cost). Temperature keeps the labels.
    coverage : float or None, default=None
        :meth:`predict_set` gives conformal sets that hold the true label with this
        probability (e.g. 0.9), learned on the same out-of-fold probabilities (CV+).
    conformal_score : {"aps", "raps", "lac"}, default="aps"
        Adaptive sets (``aps``, ``raps``) or the smallest on average (``lac``).
    mondrian : bool, default=False
        One threshold per class: coverage holds within each class (a class with too
        few rows gets every label).

    Tabular columns are one more view: ``encoders={"tabular": TabularEncoder(numeric=[...],
    categorical=[...])}`` (see :mod:`mmfuse.encoders.tabular`); the key names the view, the
    encoder names the columns it reads.

    Attributes
    ----------
    classes_ : ndarray of labels
    encoders_ : dict of column -> fitted Encoder (or ``PASSTHROUGH``)
    encoders_chosen_ : dict of column -> encoder name used (the choice, where ``encoders``
        gave candidates; ``"passthrough"`` for pre-extracted arrays)
    encoder_selection_ : dict of column -> dict
        For columns that chose: the choice, the scoring, and each candidate's mean inner
        accuracy and log-loss (:meth:`~mmfuse.encoder_choice.EncoderSelection.to_dict`)
    fusion_ : fitted strategy
    modality_weights_ : dict of column -> weight (sum 1), or None
    weights_fallback_ : str or None
        Why learned weights (``weights="cv"``, stacking's meta-model...) fell back to equal
        weights: the training rows could not be split into inner folds holding every class
        (a :class:`~mmfuse.fusion.base.WeightsFallbackWarning` says so too). None: they did
        not.
    errors_ : list of ItemError from ``fit`` (set by ``fit`` only: ``predict`` and
        ``predict_proba`` never change the model; :meth:`predict_report` returns the item
        errors of one prediction call)
    skipped_rows_ : list of int, training rows dropped for having no modality
    source_columns_ : dict of column -> the user's table column it was read from, where
        they differ (``fit``'s ``source_columns``; absent on models saved before it existed)
    epsilon_spent_, delta_spent_ : float, the privacy budget spent by ``fit`` (only with
        ``epsilon``)
    uncertainty_ : :class:`~mmfuse.uncertainty.Uncertainty` or None
        The calibrators and conformal thresholds (None without ``calibration`` and
        ``coverage``)

    Examples
    --------
    >>> clf = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf"}, fusion="late")
    >>> clf.fit(df, df["label"]).predict(df)  # doctest: +SKIP
    """

    #: Every parameter, checked in one place when ``fit`` starts (:mod:`mmfuse._params`);
    #: the encoder spec and the strategy's own parameters are checked where they are read.
    _parameter_constraints: dict[str, Any] = {
        "encoders": "no_validation",  # the featurizer's spec (names, lists, instances)
        "fusion": [str, HasMethods(("fit", "predict_proba"), "a fusion strategy")],
        "weights": [str, dict],  # which weights: the strategy's (fusion.weights)
        "classifier": [None, dict, CLASSIFIER],
        "cv": [Interval(2, None, integer=True)],
        "random_state": "no_validation",  # scikit-learn's check_random_state
        "on_error": [Options(ON_ERROR)],
        "fusion_params": [None, dict],
        "scrub_pii": [Boolean()],
        "epsilon": _check_epsilon,
        "delta": _check_delta,
        "pooling": [Options(POOLING)],
        "calibration": [None, Options(CALIBRATIONS)],
        "coverage": [None, Interval(0, 1, closed="neither")],
        "conformal_score": [Options(SCORES)],
        "mondrian": [Boolean()],
    }

    def __init__(self, encoders: Any = None, fusion: Any = "late", weights: Any = "cv",
                 classifier: Any = None, cv: int = 5, random_state: Any = None,
                 on_error: str = "raise", fusion_params: dict | None = None,
                 scrub_pii: bool = False, epsilon: float | None = None,
                 delta: float = 1e-5, pooling: str = "mean", calibration: str | None = None,
                 coverage: float | None = None, conformal_score: str = "aps",
                 mondrian: bool = False):
        self.encoders = encoders
        self.fusion = fusion
        self.weights = weights
        self.classifier = classifier
        self.cv = cv
        self.random_state = random_state
        self.on_error = on_error
        self.fusion_params = fusion_params
        self.scrub_pii = scrub_pii
        self.epsilon = epsilon
        self.delta = delta
        self.pooling = pooling
        self.calibration = calibration
        self.coverage = coverage
        self.conformal_score = conformal_score
        self.mondrian = mondrian

    # -- features ---------------------------------------------------------------------
    def _encode(self, X: Any, *, fit: bool, specs: dict | None = None,
                progress: Any = None) -> tuple[Views, Present]:
        views, present, errors = self._encode_report(X, fit=fit, specs=specs, progress=progress)
        if fit:
            self.errors_ = errors
        return views, present

    def _encode_report(self, X: Any, *, fit: bool, specs: dict | None = None,
                       progress: Any = None) -> Encoded:
        columns, _ = as_columns(X, encoders_given=self.encoders is not None)
        if not fit:
            return self.featurizer().transform(columns, on_error=self.on_error,
                                               progress=progress)
        self.encoders_ = build_encoders(resolve_encoders(self.encoders, columns)
                                        if specs is None else specs)
        self._apply_privacy_to_encoders()
        return Featurizer(self.encoders_, owner=type(self).__name__,
                          pooling=self.pooling).fit_transform(columns, on_error=self.on_error,
                                                              progress=progress)

    def featurizer(self) -> Featurizer:
        """The fitted encoders as a :class:`~mmfuse.encoders.featurizer.Featurizer`: the one
        way from raw columns to this model's views (used by predict and the HTTP service)."""
        check_is_fitted(self, "fusion_")
        return Featurizer(self.encoders_, dims=getattr(self, "view_dims_", None),
                          owner=type(self).__name__, pooling=getattr(self, "pooling", "mean"))

    def predict_views(self, views: Views, present: Present) -> np.ndarray:
        """Class probabilities of views made by :meth:`featurizer`; a row with no usable
        modality gets the strategy's answer for an empty row (the class prior)."""
        check_is_fitted(self, "fusion_")
        proba = self.fusion_.predict_proba(views, present)
        unc = getattr(self, "uncertainty_", None)  # absent on models saved before it
        return proba if unc is None else unc.calibrate(proba, present)

    def predict_set_views(self, views: Views, present: Present,
                          proba: np.ndarray | None = None) -> np.ndarray:
        """Conformal sets of views made by :meth:`featurizer`: a boolean matrix (n,
        n_classes), column k for ``classes_[k]`` (see :meth:`predict_set`); ``proba``:
        their :meth:`predict_views`, when already computed."""
        proba = self.predict_views(views, present) if proba is None else proba
        unc = getattr(self, "uncertainty_", None)
        if unc is None or unc.conformal is None:
            raise InputError("prediction sets need a model fitted with coverage (e.g. "
                             "coverage=0.9, or --coverage 0.9)")
        return unc.sets(proba, present)

    def to(self, device: str) -> "MultimodalClassifier":
        """Run a fitted (or loaded) model on ``device`` (resolved: ``"cpu"``, ``"cuda"``,
        ``"cuda:N"``; see :func:`mmfuse.devices.resolve_device`) from now on: each encoder
        and the strategy move themselves (models reload lazily on their next use).
        Returns self."""
        check_is_fitted(self, "fusion_")
        for enc in self.encoders_.values():
            if isinstance(enc, Encoder):
                enc.to(device)
        self.fusion_.to(device)
        return self

    # -- scikit-learn API -----------------------------------------------------------------
    def fit(self, X: Any, y: Any, groups: Any = None, *,
            source_columns: dict[str, str] | None = None,
            progress: Any = None) -> "MultimodalClassifier":
        """Encode every modality (choosing the encoders first where ``encoders`` gives
        candidates), then fit the fusion strategy (weights learned out-of-fold).

        ``source_columns`` maps a column of ``X`` to the column of the user's table it was
        read from, where they differ (``{"image": "photo"}``: the command line renames a
        manifest's columns); it is kept as ``source_columns_`` and saved with the model, so
        :func:`~mmfuse.predict.predict_manifest` reads the same table. ``progress(stage,
        done, total)`` is called as features are computed and as the fusion is fit.

        BLAS runs on one thread during the fit, as in :func:`~mmfuse.evaluate` (the fit is
        many small solver calls, where more threads mostly contend for the cores).
        Pretrained encoders keep their own ``threads``."""
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        validate_params(self)
        from threadpoolctl import threadpool_limits

        from .fusion.experts import ExpertsCache

        source_columns = dict(source_columns or {}) if isinstance(
            source_columns, (dict, type(None))) else source_columns
        if not isinstance(source_columns, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in source_columns.items()):
            raise InputError(f"source_columns must be a dict of column -> column name; got "
                             f"{source_columns!r}")
        with threadpool_limits(limits=1, user_api="blas"):
            self._fit(X, y, groups, progress, ExpertsCache())  # encoder choice + fusion share it
        self.source_columns_ = self._check_source_columns(source_columns)
        return self

    def _check_source_columns(self, source_columns: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(source_columns) - set(self.encoders_))
        if unknown:
            raise InputError(f"source_columns names columns the model does not have: "
                             f"{unknown}; its columns are {sorted(self.encoders_)}")
        return {k: v for k, v in sorted(source_columns.items()) if k != v}

    def _fit(self, X: Any, y: Any, groups: Any, progress: Any = None,
             experts_cache: Any = None) -> "MultimodalClassifier":
        from .encoder_choice import choose_encoders, with_split_experts

        # where ``encoders`` gives candidates, each column's encoder chosen by inner CV
        specs, self.encoder_selection_ = choose_encoders(self, X, y, groups, experts_cache)
        views, present = self._encode(X, fit=True, specs=specs, progress=progress)
        self.encoders_chosen_ = {c: "passthrough" if is_passthrough(e) else e.name
                                 for c, e in self.encoders_.items()}
        self.encoders_chosen_.update({c: s["chosen"] for c, s in self.encoder_selection_.items()
                                      if "|" in s["chosen"]})  # separate experts "a|b"
        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        n = next(iter(views.values())).shape[0]
        if len(y) != n:
            raise InputError(f"X has {n} samples but y has {len(y)} labels")
        any_present = np.any(np.stack(list(present.values())), axis=0)
        self.skipped_rows_ = np.flatnonzero(~any_present).tolist()
        if self.skipped_rows_:
            if self.on_error == "raise":
                raise InputError(
                    f"row {self.skipped_rows_[0]} has no modality at all "
                    f"({len(self.skipped_rows_)} such rows); drop them or use on_error='skip'"
                )
            keep = any_present
            views = {k: v[keep] for k, v in views.items()}
            present = {k: p[keep] for k, p in present.items()}
            y = y[keep]
            groups = None if groups is None else np.asarray(groups)[keep]
        self.fusion_ = with_split_experts(self, self._make_fusion())
        from .uncertainty.fit import for_model  # calibration, coverage: checked before the fit

        calibrate = for_model(self, views, y, present, groups, X, np.flatnonzero(any_present),
                              experts_cache)
        if progress is not None:
            progress("fusion", 0, 1)
        self.fusion_.fit(views, y, present, groups, experts_cache=experts_cache)
        if progress is not None:
            progress("fusion", 1, 1)
        self.uncertainty_ = calibrate()  # after the fit: auto calibrates the strategy it chose
        if self.epsilon is not None:
            self.epsilon_spent_ = float(self.fusion_.epsilon_spent_)
            self.delta_spent_ = float(self.fusion_.delta_spent_)
        self.classes_ = self.fusion_.classes_
        self.modality_weights_ = self.fusion_.modality_weights_
        # why learned weights fell back to equal ones (too few rows per class), or None
        self.weights_fallback_ = getattr(self.fusion_, "weights_fallback_", None)
        self.n_features_in_ = sum(v.shape[1] for v in views.values())
        self.view_dims_ = {k: v.shape[1] for k, v in views.items()}
        return self

    def _make_fusion(self) -> Any:
        """A fresh strategy: built by name with this estimator's settings, or a clone of
        the strategy instance given (its own parameters rule; ``fusion_params`` are set on
        it, and ``random_state`` is passed on when it has none)."""
        from sklearn.base import clone

        from .fusion import FusionStrategy, create_fusion

        if isinstance(self.fusion, FusionStrategy):
            if self.epsilon is not None:
                raise InputError(
                    "epsilon needs the fusion strategy by name ('early' or 'late'), so that "
                    f"its private version is built; got the instance {self.fusion!r}")
            strategy = clone(self.fusion)
            strategy.set_params(**self._settings_for(strategy))
            if self.fusion_params:
                strategy.set_params(**self.fusion_params)
            if ("random_state" in strategy.get_params(deep=False)
                    and strategy.random_state is None and self.random_state is not None):
                strategy.set_params(random_state=self.random_state)
            return strategy
        params = dict(self.fusion_params or {})
        params.setdefault("classifier", self.classifier)
        params.setdefault("weights", self.weights)
        params.setdefault("cv", self.cv)
        params.setdefault("random_state", self.random_state)
        if self.epsilon is not None:
            from .privacy.dp import make_private_fusion

            return make_private_fusion(self.fusion, self.epsilon, delta=self.delta, **params)
        return create_fusion(self.fusion, **params)

    def _settings_for(self, strategy: Any) -> dict[str, Any]:
        """The estimator's ``weights``, ``classifier`` and ``cv`` for a strategy given as an
        object, as for one given by name: a setting given (not the estimator's default)
        applies where the object leaves its own at the class default; given on both sides
        with different values, it is an error (say it in one place)."""
        import inspect

        mine = self.get_params(deep=False)
        own = strategy.get_params(deep=False)
        defaults = {k: p.default for k, p in inspect.signature(type(self)).parameters.items()}
        class_defaults = {k: p.default
                          for k, p in inspect.signature(type(strategy)).parameters.items()}
        out = {}
        for key in STRATEGY_SETTINGS:
            if key not in own or same_value(mine[key], defaults[key]):
                continue  # the strategy takes no such setting, or none was given here
            if same_value(own[key], class_defaults.get(key)) or same_value(own[key], mine[key]):
                out[key] = mine[key]
            else:
                raise InputError(
                    f"{key} is set both on {type(self).__name__} ({mine[key]!r}) and on its "
                    f"fusion strategy ({own[key]!r}); set it in one place")
        return out

    def _apply_privacy_to_encoders(self) -> None:
        """Switch PII scrubbing on for the text encoders; refuse data-dependent encoders
        under differential privacy."""
        if self.epsilon is not None:  # (epsilon and delta: checked when fit starts)
            from .privacy.dp import check_private_encoders

            check_private_encoders(self.encoders_)
        if not self.scrub_pii:
            return
        for col, enc in self.encoders_.items():
            if is_passthrough(enc) or enc.modality != "text":
                continue
            if not enc.scrubs_pii:
                raise InputError(
                    f"scrub_pii=True, but the encoder {enc.name!r} of text column {col!r} "
                    f"does not support scrubbing; use tfidf-hashed, hashing, tfidf, minilm "
                    f"or wordllama, or scrub the text before fitting"
                )
            enc.scrub_pii = True

    def transform_views(self, X: Any) -> tuple[Views, Present]:
        """The fitted encoders' features for X: ``(views, present)``."""
        check_is_fitted(self, "fusion_")
        return self._encode(X, fit=False)

    def predict_report(self, X: Any, *, progress: Any = None) -> PredictReport:
        """Labels, probabilities and the item errors of this call, in one pass
        (``progress(stage, done, total)`` is called as the features are computed).

        ``predict`` and ``predict_proba`` never change the model (scikit-learn's rule:
        only ``fit`` sets fitted state), so the unreadable items of a prediction call
        (``on_error="skip"``) come back here rather than in ``errors_``.

        Returns
        -------
        PredictReport
            ``(labels, proba, errors)``: predicted labels, class probabilities (columns in
            ``classes_`` order) and the :class:`~mmfuse.encoders.ItemError` list; a row
            with no usable modality gets the class prior and an error.
        """
        check_is_fitted(self, "fusion_")
        views, present, errors = self._encode_report(X, fit=False, progress=progress)
        known = [present[m] for m in self.fusion_.modalities_ if m in present]
        empty = ~np.any(np.stack(known), axis=0) if known else np.zeros(0, bool)
        if empty.any():
            rows = np.flatnonzero(empty).tolist()
            if self.on_error == "raise":
                raise InputError(
                    f"row {rows[0]} has no usable modality ({len(rows)} such rows); "
                    f"nothing to predict from (use on_error='skip' to get the class prior)"
                )
            errors = errors + [ItemError(r, None, "",
                                         "no usable modality: predicted the class prior")
                               for r in rows]
        proba = self.predict_views(views, present)
        return PredictReport(self.classes_[np.argmax(proba, axis=1)], proba,
                             sorted(errors, key=lambda e: e.row))

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities.

        A row with no usable modality is an error with ``on_error="raise"``; with
        ``"skip"`` it gets the training class prior. The model is not changed; use
        :meth:`predict_report` to get the item errors of the call.
        """
        return self.predict_report(X).proba

    def predict_set(self, X: Any) -> np.ndarray:
        """Conformal prediction sets (needs ``coverage``): a boolean matrix (n, n_classes),
        ``True`` in column k when ``classes_[k]`` is in the row's set. The labels of row i:
        ``classes_[sets[i]]``. A set may be empty (LAC, APS: nothing is likely enough) or
        hold every label; each row uses the thresholds of its missingness pattern."""
        check_is_fitted(self, "fusion_")
        views, present = self._encode(X, fit=False)
        return self.predict_set_views(views, present)

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (see :meth:`predict_report` for the item errors of the call)."""
        return self.predict_report(X).labels

    def explain(self, X: Any) -> Any:
        """Per-row modality contributions to each prediction (see :mod:`mmfuse.explain`):
        an :class:`~mmfuse.explain.Explanation` with labels, probabilities, contributions
        and shares per modality."""
        from .explain import explain

        check_is_fitted(self, "fusion_")
        return explain(self, X)

    def save(self, path: Any, **kwargs: Any) -> Any:
        """Write the fitted model to ``path`` (see :func:`mmfuse.persist.save`); load it back
        with :func:`mmfuse.load`. Returns the path written."""
        from .persist import save

        return save(self, path, **kwargs)
