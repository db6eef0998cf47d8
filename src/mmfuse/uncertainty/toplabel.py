"""Top-label calibration (Gupta & Ramdas, "Top-label calibration and multiclass-to-binary
reductions", ICLR 2022): only the confidence of the predicted label is recalibrated,
conditionally on which label is predicted; the label itself stays, so the accuracy never
changes. Two maps of that confidence, fitted on out-of-fold probabilities and their labels:

- :class:`TopLabelBinning`: per predicted class, uniform-mass histogram binning of its
  confidence (bins of at least ``min_bin`` rows), each bin mapped to its rows' accuracy;
- :class:`TopLabelIsotonic`: per predicted class, an isotonic (non-decreasing) map of the
  confidence to the chance that the label is right.

A class predicted on fewer than ``min_bin`` rows shares one map fitted on every row.
Measured against temperature scaling in the calibration diagnosis of an evaluation with
``UncertaintySpec(calibration=...)`` (benchmarks/RESULTS.md); not a ``calibration=`` option.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: Fewest rows per histogram bin, and fewest rows a predicted class needs for its own map.
MIN_BIN = 50
POOLED = -1  # the key of the map fitted on every row


def _top(proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    proba = np.asarray(proba, dtype=np.float64)
    return proba.max(axis=1), proba.argmax(axis=1)


def _classes(pred: np.ndarray, min_bin: int) -> list[int]:
    """The pooled map's key, then every class predicted on at least ``min_bin`` rows."""
    labels, counts = np.unique(pred, return_counts=True)
    return [POOLED] + [int(c) for c, n in zip(labels, counts) if n >= min_bin]


def _rows(pred: np.ndarray, key: int) -> np.ndarray:
    return np.ones(len(pred), dtype=bool) if key == POOLED else pred == key


def _fit_maps(proba: np.ndarray, y: np.ndarray, min_bin: int, fit_one: Any) -> dict:
    """Per key (:func:`_classes`): ``fit_one(confidences, whether right)`` on its rows."""
    conf, pred = _top(proba)
    correct = (pred == np.asarray(y)).astype(float)
    maps = {}
    for key in _classes(pred, min_bin):
        rows = _rows(pred, key)
        maps[key] = fit_one(conf[rows], correct[rows])
    return maps


class _PerClass:
    """Which map a row's predicted class uses (its own, else the pooled one)."""

    maps: dict

    def _apply(self, conf: np.ndarray, key: int) -> np.ndarray:
        raise NotImplementedError

    def confidence(self, proba: np.ndarray) -> np.ndarray:
        """The recalibrated confidence of each row's predicted label (the arg-max)."""
        conf, pred = _top(proba)
        out = np.empty(len(conf))
        for c in np.unique(pred):
            rows = pred == c
            out[rows] = self._apply(conf[rows], int(c) if int(c) in self.maps else POOLED)
        return out


@dataclass
class TopLabelBinning(_PerClass):
    """Per key (a predicted class, or :data:`POOLED`): ``(inner bin edges, bin values)``;
    a confidence ``c`` falls in bin ``searchsorted(edges, c, side="right")``."""

    maps: dict

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray, min_bin: int = MIN_BIN
            ) -> "TopLabelBinning":
        def binning(c: np.ndarray, ok: np.ndarray) -> tuple[list, list]:
            n_bins = max(1, len(c) // min_bin)
            edges = np.unique(np.quantile(c, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))
            which = np.searchsorted(edges, c, side="right")
            counts = np.bincount(which, minlength=len(edges) + 1)
            sums = np.bincount(which, ok, minlength=len(edges) + 1)
            values = np.where(counts > 0, sums / np.maximum(counts, 1), ok.mean())
            return edges.tolist(), values.tolist()

        return cls(_fit_maps(proba, y, min_bin, binning))

    def _apply(self, conf: np.ndarray, key: int) -> np.ndarray:
        edges, values = self.maps[key]
        return np.asarray(values)[np.searchsorted(np.asarray(edges), conf, side="right")]


@dataclass
class TopLabelIsotonic(_PerClass):
    """Per key (a predicted class, or :data:`POOLED`): the isotonic map's knots
    ``(x, y)``, linear in between (``np.interp``), clipped outside."""

    maps: dict

    @classmethod
    def fit(cls, proba: np.ndarray, y: np.ndarray, min_bin: int = MIN_BIN
            ) -> "TopLabelIsotonic":
        from sklearn.isotonic import IsotonicRegression

        def isotonic(c: np.ndarray, ok: np.ndarray) -> tuple[list, list]:
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(c, ok)
            return iso.X_thresholds_.tolist(), iso.y_thresholds_.tolist()

        return cls(_fit_maps(proba, y, min_bin, isotonic))

    def _apply(self, conf: np.ndarray, key: int) -> np.ndarray:
        x, y = self.maps[key]
        return np.interp(conf, x, y)
