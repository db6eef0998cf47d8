"""Probability and prediction-set metrics: log-loss, Brier score, expected calibration error
(ECE), reliability bins, empirical coverage, mean set size and the share of singletons.

Every function takes probabilities (n, K) with columns in class order and integer labels
0..K-1 (or boolean sets (n, K)). Definitions:

- **log-loss**: mean of ``-log p(y)`` (p clipped at 1e-15).
- **Brier score**: mean over rows of ``sum_k (p_k - [y == k])**2`` (0 best, 2 worst).
- **ECE** (15 equal-width bins): the top-label confidence ``max_k p_k`` of each row falls in
  one of 15 bins ``(0, 1/15], ..., (14/15, 1]``; ECE is the row-weighted mean over bins of
  ``|accuracy(bin) - mean confidence(bin)|``.
- **ECE floor**: the mean ECE of the same confidences with each row's correctness drawn
  from its own confidence (a perfectly calibrated model, same rows): the part of the ECE
  owed to the finite sample (about 0.05 to 0.1 at 150 rows spread over a few bins, shrinking
  as ``1/sqrt(rows per bin)``). An ECE near its floor is as small as the rows can show.
- **debiased ECE** (reported beside the ECE, never instead of it): the same 15 bins, the
  plug-in ECE's finite-sample bias estimated and subtracted as in Kumar, Liang & Ma,
  "Verified uncertainty calibration" (NeurIPS 2019; their ``normal_debiased_ce``): each
  bin's accuracy redrawn from a normal of its mean and binomial standard error (seeded,
  1000 draws), bias = mean resampled ECE - ECE, debiased ECE = ECE - bias, cut at 0 (an
  ECE is never negative; the cut makes it, if anything, conservative). It removes part of
  the floor, not all of it (about 40% for a perfectly calibrated model on 150 rows:
  tests/uncertainty/test_metrics.py): it is still biased upward, so the model's real
  error is likely below it.
- **coverage**: share of rows whose set holds the true label; **set size**: mean number of
  labels per set; **singletons**: share of sets holding exactly one label.
"""

from __future__ import annotations

import numpy as np

from .._errors import InputError

N_BINS = 15


def _check(proba: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    y = np.asarray(y).astype(int, copy=False)
    if proba.ndim != 2 or proba.shape[0] != y.shape[0]:
        raise InputError(f"expected probabilities (n, K) for {y.shape[0]} labels; got shape "
                         f"{proba.shape}")
    return proba, y


def log_loss(proba: np.ndarray, y: np.ndarray) -> float:
    proba, y = _check(proba, y)
    return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0))))


def brier(proba: np.ndarray, y: np.ndarray) -> float:
    proba, y = _check(proba, y)
    onehot = np.zeros_like(proba)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))


def reliability(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS
                ) -> dict[str, list[float]]:
    """Per equal-width confidence bin: ``count``, mean ``confidence`` and ``accuracy`` (NaN
    for an empty bin), and the bin ``edges``: the reliability diagram's points."""
    proba, y = _check(proba, y)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins (0, 1/15], ..., (14/15, 1]; a confidence of exactly 0 joins the first
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=n_bins) / count
        acc = np.bincount(which, correct, minlength=n_bins) / count
    return {"edges": edges.tolist(), "count": count.tolist(),
            "confidence": mean_conf.tolist(), "accuracy": acc.tolist()}


def ece(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Expected calibration error of the top label over ``n_bins`` equal-width bins."""
    bins = reliability(proba, y, n_bins)
    count = np.asarray(bins["count"])
    used = count > 0
    gap = np.abs(np.asarray(bins["accuracy"])[used] - np.asarray(bins["confidence"])[used])
    return float(np.sum(count[used] * gap) / max(count.sum(), 1.0))


def ece_of_confidence(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS
                      ) -> float:
    """The ECE of top-label confidences and whether each row's top label is right (the
    same bins as :func:`ece`): the ECE of a top-label calibrator's confidences."""
    conf = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    gap = np.bincount(which, correct - conf, minlength=n_bins)
    return float(np.abs(gap).sum() / max(len(conf), 1))


def ece_floor(proba: np.ndarray, n_bins: int = N_BINS, draws: int = 200,
              seed: int = 0) -> float:
    """The expected ECE of a perfectly calibrated model with these top-label confidences:
    each row's correctness drawn ``draws`` times as Bernoulli(confidence) (seeded)."""
    proba = np.asarray(proba, dtype=np.float64)
    conf = proba.max(axis=1)
    if not len(conf):
        return 0.0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    correct = np.random.default_rng(seed).random((draws, len(conf))) < conf[None, :]
    offset = (np.arange(draws) * n_bins)[:, None] + which[None, :]  # one bin set per draw
    gap = np.bincount(offset.ravel(), (correct - conf[None, :]).ravel(),
                      minlength=draws * n_bins)
    return float(np.abs(gap).sum() / (draws * len(conf)))


def ece_debiased(proba: np.ndarray, y: np.ndarray, n_bins: int = N_BINS,
                 resamples: int = 1000, seed: int = 0) -> float:
    """The plug-in ECE minus its finite-sample bias, estimated by resampling each bin's
    accuracy from a normal of its mean and binomial standard error (Kumar, Liang & Ma
    2019, ``normal_debiased_ce`` with power 1; a bin of one row is not resampled), cut
    at 0."""
    bins = reliability(proba, y, n_bins)
    count = np.asarray(bins["count"])
    used = count > 0
    if not used.any():
        return 0.0
    n, acc = count[used], np.asarray(bins["accuracy"])[used]
    conf = np.asarray(bins["confidence"])[used]
    weight = n / n.sum()
    plugin = float(np.sum(weight * np.abs(acc - conf)))
    scale = np.sqrt(acc * (1.0 - acc) / n)
    draws = np.random.default_rng(seed).normal(acc, scale, size=(resamples, len(n)))
    resampled = np.abs(draws - conf[None, :]) @ weight
    return max(0.0, float(2.0 * plugin - resampled.mean()))


def ece_of_bins(bins: dict) -> float:
    """The ECE of reliability bins (``count``, mean ``confidence`` and ``accuracy``; None or
    NaN for an empty bin), e.g. the bins of every outer fold pooled."""
    count = np.asarray(bins["count"], dtype=np.float64)
    conf = np.array([np.nan if v is None else v for v in bins["confidence"]], dtype=float)
    acc = np.array([np.nan if v is None else v for v in bins["accuracy"]], dtype=float)
    used = count > 0
    return float(np.sum(count[used] * np.abs(acc[used] - conf[used])) / max(count.sum(), 1.0))


def set_metrics(sets: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``coverage``, ``set_size`` (mean labels per set) and ``singletons`` (share of sets
    with one label) of boolean sets (n, K) against labels 0..K-1."""
    sets = np.asarray(sets, dtype=bool)
    y = np.asarray(y).astype(int, copy=False)
    size = sets.sum(axis=1)
    return {"coverage": float(np.mean(sets[np.arange(len(y)), y])),
            "set_size": float(np.mean(size)), "singletons": float(np.mean(size == 1))}


def probability_metrics(proba: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """``log_loss``, ``brier``, ``ece`` (15 bins) of probabilities against labels,
    ``ece_floor``, the ECE a perfectly calibrated model would show on these rows, and
    ``ece_debiased``, the ECE less its estimated finite-sample bias."""
    return {"log_loss": log_loss(proba, y), "brier": brier(proba, y), "ece": ece(proba, y),
            "ece_floor": ece_floor(proba), "ece_debiased": ece_debiased(proba, y)}
