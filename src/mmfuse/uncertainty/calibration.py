"""Calibrators of class probabilities, fitted on out-of-fold probabilities of training rows.

- ``temperature``: one temperature T > 0 that divides the log-probabilities,
  ``softmax(log p / T)``, chosen by minimising the Brier score (a proper scoring rule,
  so the right temperature when one exists; bounded, so unlike the log-loss it is not
  driven by the few rows whose true label got almost no probability: late fusion's product
  of experts gives many such rows on unseen groups, and the log-loss temperature then
  flattens every row to soften them, leaving the top label under-confident; the log-loss
  one stays available as ``objective="log_loss"``); it never changes the arg-max, so
  accuracy stays (ties aside).
- ``isotonic``: one isotonic map per class (one-vs-rest, as scikit-learn's
  ``CalibratedClassifierCV``), rows renormalised to sum 1; more flexible, needs more rows,
  and may change the arg-max.

Both are plain records of numbers (dataclasses), so a model file holds them without code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._errors import InputError

CALIBRATIONS = ("temperature", "isotonic")
_EPS = 1e-12


def _log(proba: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(proba, dtype=np.float64), _EPS, 1.0))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class TemperatureScaling:
    """``softmax(log p / temperature)``; temperature 1 changes nothing."""

    temperature: float = 1.0

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray, objective: str = "brier"
            ) -> "TemperatureScaling":
        """The temperature minimising ``objective`` ("brier" or "log_loss") of these rows."""
        from scipy.optimize import minimize_scalar

        logp = _log(proba)
        rows = np.arange(len(y))
        onehot = np.zeros_like(logp)
        onehot[rows, y] = 1.0

        def loss(log_t: float) -> float:
            z = logp / np.exp(log_t)
            z = z - z.max(axis=1, keepdims=True)
            if objective == "log_loss":
                return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[rows, y]))
            return float(np.mean(np.sum((_softmax(z) - onehot) ** 2, axis=1)))

        best = minimize_scalar(loss, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
        return cls(float(np.exp(best.x)))

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return _softmax(_log(proba) / self.temperature)


@dataclass
class IsotonicCalibration:
    """Per class, a monotone map of that class's probability (knots ``x[k]`` -> ``y[k]``,
    linear in between, as ``np.interp``), then rows renormalised."""

    x: list
    y: list

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray) -> "IsotonicCalibration":
        from sklearn.isotonic import IsotonicRegression

        proba = np.asarray(proba, dtype=np.float64)
        xs, ys = [], []
        for k in range(proba.shape[1]):
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            iso.fit(proba[:, k], (y == k).astype(float))
            xs.append(np.asarray(iso.X_thresholds_, dtype=np.float64))
            ys.append(np.asarray(iso.y_thresholds_, dtype=np.float64))
        return cls(xs, ys)

    def transform(self, proba: np.ndarray) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        out = np.column_stack([np.interp(proba[:, k], self.x[k], self.y[k])
                               for k in range(proba.shape[1])])
        out = np.clip(out, _EPS, None)
        return out / out.sum(axis=1, keepdims=True)


@dataclass
class VectorScaling:
    """``softmax(scale * log p + bias)``, one scale and one bias per class (Guo et al.'s
    vector scaling), chosen by the Brier score with a small penalty towards no change
    (scale 1, bias 0). Not offered as ``calibration=`` (measured against temperature in
    the evaluation's calibration diagnosis: benchmarks/RESULTS.md); may change labels."""

    scale: list
    bias: list

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray, penalty: float = 1e-3
            ) -> "VectorScaling":
        from scipy.optimize import minimize

        logp = _log(proba)
        k = logp.shape[1]
        onehot = np.zeros_like(logp)
        onehot[np.arange(len(y)), y] = 1.0

        def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
            a, b = theta[:k], theta[k:]
            p = _softmax(logp * a + b)
            r = p - onehot
            value = float(np.mean(np.sum(r ** 2, axis=1)))
            # d Brier / d z (softmax Jacobian), then the chain rule to a and b
            g = 2.0 * p * (r - np.sum(r * p, axis=1, keepdims=True)) / len(y)
            grad = np.concatenate([np.sum(g * logp, axis=0), np.sum(g, axis=0)])
            value += penalty * float(np.sum((a - 1.0) ** 2) + np.sum(b ** 2))
            grad += 2.0 * penalty * np.concatenate([a - 1.0, b])
            return value, grad

        start = np.concatenate([np.ones(k), np.zeros(k)])
        best = minimize(loss, start, jac=True, method="L-BFGS-B",
                        bounds=[(0.01, 20.0)] * k + [(None, None)] * k)
        return cls(best.x[:k].tolist(), best.x[k:].tolist())

    def transform(self, proba: np.ndarray) -> np.ndarray:
        return _softmax(_log(proba) * np.asarray(self.scale) + np.asarray(self.bias))


def fit_calibrator(method: str, proba: np.ndarray, y: np.ndarray) -> "Calibrator":
    """A calibrator ``method`` fitted on out-of-fold probabilities and their labels 0..K-1."""
    if method == "temperature":
        return TemperatureScaling.fit(proba, y)
    if method == "isotonic":
        return IsotonicCalibration.fit(proba, y)
    raise InputError(f"calibration must be one of {list(CALIBRATIONS)} or None; got {method!r}")


Calibrator = TemperatureScaling | IsotonicCalibration
