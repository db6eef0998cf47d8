"""The shared windows and mel filters give exactly the numbers of the two copies they replace
(the classical encoders' area-normalised filters + Hamming window, and the sound-effects
encoder's sum-normalised sparse filters + periodic Hann window)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse

from mmfuse.preprocess.dsp import mel_filterbank, window


def _old_classical(rate, n_fft, n_mels, fmin=0.0, fmax=None):
    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    fmax = rate / 2 if fmax is None else fmax
    hz_points = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bin_hz = np.linspace(0, rate / 2, n_fft // 2 + 1)
    lower, centre, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    filters = np.maximum(0.0, np.minimum(rising, falling))
    filters *= (2.0 / (upper - lower))
    return filters


def _old_sound_effects(rate, n_fft, n_mels):
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    fft_freqs = np.linspace(0, rate / 2, n_fft // 2 + 1)
    mel_freqs = mel_to_hz(np.linspace(hz_to_mel(np.array(0.0)), hz_to_mel(np.array(rate / 2)),
                                      n_mels + 2))
    gaps = np.diff(mel_freqs)
    ramps = mel_freqs[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / gaps[:-1, None]
    upper = ramps[2:] / gaps[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    sums = weights.sum(axis=1, keepdims=True)
    weights = weights / np.where(sums > 0, sums, 1.0)
    return scipy.sparse.csr_matrix(weights.astype(np.float32))


@pytest.mark.parametrize("args", [(16000, 512, 16, 20.0, 4000.0), (16000, 400, 40), (22050, 1024, 64)])
def test_area_filters_are_the_classical_ones(args):
    np.testing.assert_array_equal(mel_filterbank(*args), _old_classical(*args))


def test_sum_filters_are_the_sound_effects_ones():
    new = mel_filterbank(44100, 2048, 96, norm="sum", sparse=True)
    old = _old_sound_effects(44100, 2048, 96)
    assert new.dtype == np.float32 and scipy.sparse.issparse(new)
    np.testing.assert_array_equal(new.toarray(), old.toarray())


def test_windows():
    np.testing.assert_array_equal(window(400), np.hamming(400).astype(np.float32))
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(2048) / 2048)).astype(np.float32)
    np.testing.assert_array_equal(window(2048, "hann"), hann)
    assert not window(16).flags.writeable
    with pytest.raises(ValueError, match="window kind"):
        window(16, "kaiser")
    with pytest.raises(ValueError, match="norm must be"):
        mel_filterbank(16000, 512, 16, norm="peak")
