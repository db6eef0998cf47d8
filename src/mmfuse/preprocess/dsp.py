"""Signal-processing building blocks shared by the audio encoders: windows and mel filters.

One implementation of the HTK mel scale and of its triangular filters, with the two
normalisations the encoders were built with: ``"area"`` (Slaney: each filter's area is 1,
so wide high-frequency bands do not dominate; the classical log-mel/MFCC encoders) and
``"sum"`` (each filter's weights sum to 1, librosa's ``mel(htk=True, norm=1)``; the
sound-effects network was trained on those). Results are cached and read-only.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

__all__ = ["hz_to_mel", "mel_filterbank", "mel_to_hz", "window"]

NORMS = ("area", "sum")
WINDOWS = ("hamming", "hann")


def hz_to_mel(hz: float | np.ndarray) -> np.ndarray:
    """HTK mel scale."""
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


@lru_cache(maxsize=32)
def _triangles(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """Unnormalised triangular filters ``(n_mels, n_fft // 2 + 1)`` and each filter's width
    in Hz (``upper - lower``)."""
    mel_points = np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    bin_hz = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)), upper - lower


@lru_cache(maxsize=32)
def mel_filterbank(rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None, norm: str = "area", sparse: bool = False) -> Any:
    """Triangular mel filters (HTK mel scale), shape ``(n_mels, n_fft // 2 + 1)``.

    Parameters
    ----------
    rate, n_fft, n_mels : int
        Sample rate, FFT size and number of filters.
    fmin, fmax : float, default=0 and rate / 2
        Frequency range covered.
    norm : {"area", "sum"}, default="area"
        ``"area"``: each filter has area 1 (Slaney); ``"sum"``: each filter's weights sum
        to 1 (librosa's ``norm=1``).
    sparse : bool, default=False
        Return a float32 SciPy CSR matrix (a sparse product avoids multi-threaded BLAS on
        a busy machine) instead of a read-only float64 array.
    """
    fmax = rate / 2 if fmax is None else fmax
    if not 0 <= fmin < fmax <= rate / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= rate / 2; got fmin={fmin}, fmax={fmax}, "
                         f"rate={rate}")
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    filters, width = _triangles(rate, n_fft, n_mels, float(fmin), float(fmax))
    if norm == "area":
        filters = filters * (2.0 / width)
    else:
        sums = filters.sum(axis=1, keepdims=True)
        filters = filters / np.where(sums > 0, sums, 1.0)
    if sparse:
        import scipy.sparse

        return scipy.sparse.csr_matrix(filters.astype(np.float32))
    filters.setflags(write=False)
    return filters


@lru_cache(maxsize=32)
def window(length: int, kind: str = "hamming") -> np.ndarray:
    """A read-only float32 window: ``"hamming"`` (symmetric, numpy's) or ``"hann"``
    (periodic, as librosa and ``scipy.signal.get_window("hann")``)."""
    if kind == "hamming":
        out = np.hamming(length).astype(np.float32)
    elif kind == "hann":
        out = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)
    else:
        raise ValueError(f"window kind must be one of {WINDOWS}; got {kind!r}")
    out.setflags(write=False)
    return out
