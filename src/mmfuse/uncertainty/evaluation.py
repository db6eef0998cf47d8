"""Uncertainty in cross-validation: per outer fold, each row's probabilities scored (log-loss,
Brier, ECE), and with a coverage, conformal sets learned on that fold's training rows only
(grouped inner folds, :mod:`mmfuse.uncertainty.fit`) scored on its test rows (coverage, mean
set size, singletons). :func:`summarize` turns the folds into the row's record: each metric's
fold mean, its 95% t-interval over folds and the per-fold values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..views import blank_rows
from .fit import REFIT_FOLDS, calibration_target, fit_uncertainty
from .metrics import probability_metrics, reliability, set_metrics


@dataclass(frozen=True)
class UncertaintySpec:
    """What :func:`mmfuse.evaluate` measures beyond accuracy (``evaluate(uncertainty=)``).

    ``calibration``: None, "temperature" or "isotonic" (the row's probabilities and labels
    are then the calibrated ones; the uncalibrated scores are kept as ``raw``).
    ``coverage``: the target coverages of the sets (e.g. ``(0.9,)``), each with every score
    of ``scores``. ``mondrian``: one threshold per class. ``mask``: modality -> share of
    each test fold's rows that lose it (seeded), to measure the sets with it missing
    (reported as ``sets_masked``). ``worst_fold``: the sets also with the conservative
    worst-inner-fold thresholds (reported as ``"<score>@<coverage> worst-fold"``).
    ``calibrate_on``: where the calibration rows come from (see
    :data:`mmfuse.uncertainty.fit.CALIBRATE_ON`). ``cv``: how many grouped inner folds
    the refits' calibration rows come from (None: as a fitted model's, the evaluation's
    ``inner_cv`` or :data:`~mmfuse.uncertainty.fit.REFIT_FOLDS` when larger)."""

    calibration: str | None = None
    coverage: tuple = ()
    scores: tuple = ("aps",)
    mondrian: bool = False
    mask: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0
    worst_fold: bool = False
    calibrate_on: str = "auto"
    cv: int | None = None

    @property
    def fits(self) -> bool:
        return self.calibration is not None or bool(self.coverage)


def fold_scores(strategy: Any, spec: UncertaintySpec | None, views: Any, present: Any,
                y: np.ndarray, g_train: Any, train: np.ndarray, test: np.ndarray, cv: int,
                random_state: Any, table: Any = None, *, experts_cache: Any = None
                ) -> tuple[np.ndarray, dict]:
    """The fitted ``strategy``'s labels (0..K-1) for the ``test`` rows and the fold's
    uncertainty metrics; with a spec that fits, calibrators and thresholds are learned
    on the ``train`` rows (those with one of the strategy's modalities), the ``table``'s
    stateful encoders refit on each inner training fold, the inner fits sharing the
    fold's ``experts_cache`` (:class:`~mmfuse.fusion.experts.ExpertsCache`, or None)."""
    mods = list(strategy.modalities_) + list(strategy.dropped_modalities_)
    n_classes = int(np.max(y)) + 1
    cols = np.asarray(strategy.classes_, dtype=int)

    def proba_of(rows: np.ndarray, blank: np.ndarray | None = None, which: str = "") -> Any:
        v = {m: views[m][rows] for m in mods}
        p = {m: present[m][rows] for m in mods}
        if blank is not None:
            v[which] = blank_rows(v[which], blank)
            p[which] = p[which] & ~blank
        keep = np.any(np.stack(list(p.values())), axis=0)
        out = np.zeros((len(rows), n_classes))
        out[:, cols] = strategy.predict_proba(v, p)
        return out, p, keep

    raw, p_test, _ = proba_of(test)
    out = {"raw": {**probability_metrics(raw, y[test]),
                   "accuracy": float(np.mean(raw.argmax(1) == y[test]))}}
    if spec is None or not spec.fits:
        out.update(out.pop("raw"))
        out.pop("accuracy")
        out["reliability"] = _bins(raw, y[test])
        return raw.argmax(1), out
    keep = np.any(np.stack([present[m][train] for m in mods]), axis=0)
    rows = train[keep]
    stateful = [m for m in mods if m in getattr(table, "stateful", {})]

    def refit(inner: np.ndarray) -> dict:
        fold = table.fold_views(rows[inner])[0]
        return {m: fold[m][rows] for m in stateful}

    target, v_rows, p_rows = calibration_target(
        strategy, {m: views[m][rows] for m in mods}, {m: present[m][rows] for m in mods},
        spec.calibrate_on)
    unc, oof = fit_uncertainty(
        target, v_rows, p_rows, y[rows], None if g_train is None else g_train[keep],
        calibration=spec.calibration,
        coverage=spec.coverage[0] if spec.coverage else None, score=spec.scores[0],
        mondrian=spec.mondrian, n_splits=spec.cv or max(cv, REFIT_FOLDS),
        random_state=random_state,
        n_classes=n_classes,
        refit=refit if stateful else None, experts_cache=experts_cache,
        calibrate_on=spec.calibrate_on)
    for score in spec.scores if spec.coverage else ():
        _add_sets(out, unc, oof, spec, score, raw, p_test, y[test], proba_of, test)
    if unc.calibration_groups is not None:  # too few to certify the coverage: warned
        out["calibration_groups"] = unc.calibration_groups
    final = unc.calibrate(raw, p_test)
    out.update(probability_metrics(final, y[test]))
    out["reliability"] = _bins(final, y[test])
    out["reliability_raw"] = _bins(raw, y[test])
    if spec.calibration is not None:
        out["diagnosis"] = _diagnosis(unc, oof, spec.calibration, raw, y[test])
    return final.argmax(1), out


def _diagnosis(unc: Any, oof: dict, calibration: str, raw: np.ndarray, y_test: np.ndarray
               ) -> dict:
    """What limits the fold's calibration: the ECE of the inner out-of-fold probabilities
    (all modalities present) before and after their calibrator, their accuracy and mean
    top-label confidence against the test rows' (a final model sharper or more accurate
    than the inner-fold models is a mismatch the calibrator cannot see), and the ECE of
    the best temperature for the test rows themselves (fitted on their labels: a bound
    on what any temperature could reach, never used to predict); isotonic calibration
    fitted on the same out-of-fold rows (its test ECE and accuracy), and with temperature
    the former log-loss temperature's; vector scaling (a scale and a bias per class) and
    top-label calibration (:mod:`mmfuse.uncertainty.toplabel`: histogram binning and
    isotonic, per predicted class; the label kept) on the same rows."""
    from .calibration import TemperatureScaling, VectorScaling, fit_calibrator
    from .metrics import ece, ece_of_confidence
    from .toplabel import TopLabelBinning, TopLabelIsotonic

    full = max(oof, key=lambda p: (p.count("+"), len(oof[p][1])))
    proba, y = oof[full][:2]
    calibrated = unc.calibrators.get(full, unc.calibrators["*"]).transform(proba)
    best = fit_calibrator("temperature", raw, y_test)
    out = {"inner_ece_raw": ece(proba, y), "inner_ece": ece(calibrated, y),
           "inner_accuracy": float(np.mean(proba.argmax(1) == y)),
           "inner_confidence": float(np.mean(proba.max(1))),
           "test_confidence": float(np.mean(raw.max(1))),
           "test_ece_best_temperature": ece(best.transform(raw), y_test),
           "best_temperature": best.temperature}
    iso = fit_calibrator("isotonic", proba, y)  # the other calibrator, on the same rows
    out["test_ece_isotonic"] = ece(iso.transform(raw), y_test)
    out["test_accuracy_isotonic"] = float(np.mean(iso.transform(raw).argmax(1) == y_test))
    vector = VectorScaling.fit(proba, y)  # per-class scale and bias, on the same rows
    out["test_ece_vector"] = ece(vector.transform(raw), y_test)
    out["test_accuracy_vector"] = float(np.mean(vector.transform(raw).argmax(1) == y_test))
    right = raw.argmax(1) == y_test  # top-label maps keep the label: accuracy unchanged
    for name, top in (("binning", TopLabelBinning), ("isotonic", TopLabelIsotonic)):
        out[f"test_ece_top_label_{name}"] = ece_of_confidence(
            top.fit(proba, y).confidence(raw), right)
    if calibration == "temperature":
        out["temperature"] = unc.calibrators.get(full, unc.calibrators["*"]).temperature
        nll = TemperatureScaling.fit(proba, y, objective="log_loss")  # the former objective
        out["log_loss_temperature"] = nll.temperature
        out["inner_ece_log_loss_temperature"] = ece(nll.transform(proba), y)
        out["test_ece_log_loss_temperature"] = ece(nll.transform(raw), y_test)
    return out


def _bins(proba: np.ndarray, y: np.ndarray) -> dict[str, list[float]]:
    """A fold's reliability bins as sums (count, confidence, correct): they add up over
    the folds."""
    bins = reliability(proba, y)
    count = np.asarray(bins["count"])
    return {"count": count.tolist(),
            "confidence": np.nan_to_num(np.asarray(bins["confidence"]) * count).tolist(),
            "correct": np.nan_to_num(np.asarray(bins["accuracy"]) * count).tolist()}


def _add_sets(out: dict, unc: Any, oof: dict, spec: UncertaintySpec, score: str,
              raw: np.ndarray, p_test: Any, y_test: np.ndarray, proba_of: Any,
              test: np.ndarray) -> None:
    """Set metrics of ``score`` at every target coverage (thresholds from the same
    out-of-fold probabilities), on the test rows as they are and with ``spec.mask``."""
    from .fit import calibrated_oof, conformal_from_oof

    _, calibrated = calibrated_oof(oof, spec.calibration)
    rng = np.random.default_rng(spec.seed)
    masked = []
    for modality, share in sorted(spec.mask.items()):
        if modality in p_test:
            blank = rng.random(len(test)) < share
            masked.append((modality, share, proba_of(test, blank, modality)))
    for target in spec.coverage:
        conf = conformal_from_oof(oof, calibrated, target, score, spec.mondrian)
        key = f"{score}@{target:g}"
        sets = conf.sets(unc.calibrate(raw, p_test), _patterns(unc, p_test))
        out.setdefault("sets", {})[key] = set_metrics(sets, y_test)
        if spec.worst_fold:
            worst = conformal_from_oof(oof, calibrated, target, score, spec.mondrian, True)
            out["sets"][f"{key} worst-fold"] = set_metrics(
                worst.sets(unc.calibrate(raw, p_test), _patterns(unc, p_test)), y_test)
        for modality, share, (proba, p, keep) in masked:
            s = conf.sets(unc.calibrate(proba, p), _patterns(unc, p))
            out.setdefault("sets_masked", {})[f"{key} {modality}-{share:g}"] = set_metrics(
                s[keep], y_test[keep])


def _patterns(unc: Any, present: Any) -> np.ndarray:
    from .fit import row_patterns

    return row_patterns(present, unc.modalities)


UNBOUNDED = ("log_loss", "brier", "set_size", "temperature", "best_temperature",
             "log_loss_temperature", "calibration_groups")  # not shares: not cut at 1


def summarize(folds: list[dict]) -> dict | None:
    """The row's record from its folds' metrics: ``{metric: {"mean", "ci95", "folds"}}``
    (the fold mean and interval of :func:`mmfuse.evaluate.folds.mean_ci95`), nested as the
    folds' dicts are; ``reliability``: the 15 bins' row counts, mean confidence and
    accuracy, pooled over the folds (null for an empty bin)."""
    from ..evaluate.folds import mean_ci95

    if not folds or any(f is None for f in folds):
        return None

    def merge(parts: list[dict]) -> dict:
        merged: dict = {}
        for key in parts[0]:
            values = [p[key] for p in parts if key in p]
            if key.startswith("reliability"):  # pooled over the folds: the diagram
                total = {k: np.sum([v[k] for v in values], axis=0) for k in values[0]}
                with np.errstate(invalid="ignore", divide="ignore"):
                    merged[key] = {
                        "count": [int(c) for c in total["count"]],
                        "confidence": _nulls(total["confidence"] / total["count"]),
                        "accuracy": _nulls(total["correct"] / total["count"])}
            elif isinstance(values[0], dict):
                merged[key] = merge(values)
            else:
                mean, ci = mean_ci95(values, upper=None if key in UNBOUNDED else 1.0)
                merged[key] = {"mean": mean, "ci95": ci, "folds": [float(v) for v in values]}
        return merged

    return merge(folds)


def _nulls(values: np.ndarray) -> list[float | None]:
    return [None if not np.isfinite(v) else float(v) for v in values]
