"""Modality weights: validation of a weight spec, normalisation, accuracy-above-chance
weights and the simplex grid searched by weighted fusion."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._errors import InputError


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
