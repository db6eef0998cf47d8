"""Classical encoders: hand-made features that need no weights.

Image: ``pixels``, ``hog``, ``color-hist``. Text: ``tfidf`` (learns a vocabulary).
Audio: ``mfcc``, ``logmel`` (own mel filterbank in numpy/scipy, no librosa).

``prepare`` decodes and resizes / cleans / resamples one item; ``embed`` computes the features
of a batch. Parameters are validated when first used, not in ``__init__`` (scikit-learn
style); a bad parameter raises ``ValueError``, never :class:`~mmfuse.InputError`, so that
``on_error="skip"`` cannot hide it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from ..preprocess.audio import load_audio, trim_silence
from ..preprocess.dsp import mel_filterbank, window
from ..preprocess.image import RESIZE_MODES, load_image, resize_image
from ..preprocess.text import clean_text
from .base import Encoder, MissingItem
from .registry import register_encoder

# -- image -----------------------------------------------------------------------------------

_IMAGES_PER_CHUNK = 256  # bounds the float64 temporaries of a HOG batch to a few MB


class _ImageEncoder(Encoder):
    """Shared decoding for the image encoders: RGB or grayscale uint8 at ``size`` x ``size``."""

    modality = "image"

    def _load(self, item: Any, size: int, resize: str, gray: bool) -> np.ndarray:
        _check_positive_int(size, "size")
        if resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}; got {resize!r}")
        img = load_image(item, max_pixels=self.max_pixels, size_hint=size)
        img = resize_image(img.convert("L") if gray else img, size, resize)
        return np.asarray(img, dtype=np.uint8)


@register_encoder("pixels", modality="image", dim=32 * 32,
                  description="raw grayscale pixels of the image resized to 32x32")
class PixelsEncoder(_ImageEncoder):
    """Raw pixels of the resized image, scaled to [0, 1].

    Parameters
    ----------
    size : int, default=32
        Side of the square the image is resized to.
    resize : {"pad", "crop", "stretch"}, default="pad"
        How to reach a square (see :func:`mmfuse.preprocess.resize_image`).
    grayscale : bool, default=True
        One channel instead of three.
    max_pixels : int, default=50_000_000
        Larger images are refused.

    Examples
    --------
    >>> import numpy as np
    >>> PixelsEncoder(size=8).transform([np.zeros((28, 28), np.uint8)]).shape
    (1, 64)
    """

    name = "pixels"

    def __init__(self, *, size: int = 32, resize: str = "pad", grayscale: bool = True,
                 max_pixels: int = 50_000_000):
        self.size = size
        self.resize = resize
        self.grayscale = grayscale
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        _check_positive_int(self.size, "size")
        return self.size * self.size * (1 if self.grayscale else 3)

    def prepare(self, item: Any) -> np.ndarray:
        return self._load(item, self.size, self.resize, self.grayscale)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        batch = np.stack(prepared).reshape(len(prepared), -1)
        return batch.astype(np.float32) / 255.0


@register_encoder("hog", default=True, modality="image", dim=7 * 7 * 2 * 2 * 9,
                  description="histogram of oriented gradients of the 64x64 grayscale image")
class HogEncoder(_ImageEncoder):
    """Histogram of oriented gradients of the grayscale image (as :func:`skimage.feature.hog`).

    Parameters
    ----------
    size : int, default=64
        Side of the square the image is resized to.
    orientations : int, default=9
        Gradient orientation bins.
    pixels_per_cell : int, default=8
        Side of a cell, in pixels.
    cells_per_block : int, default=2
        Side of a normalisation block, in cells.
    resize : {"pad", "crop", "stretch"}, default="pad"
        How to reach a square.
    max_pixels : int, default=50_000_000
        Larger images are refused.

    Notes
    -----
    ``dim = blocks**2 * cells_per_block**2 * orientations`` with
    ``blocks = size // pixels_per_cell - cells_per_block + 1``.
    """

    name = "hog"

    def __init__(self, *, size: int = 64, orientations: int = 9, pixels_per_cell: int = 8,
                 cells_per_block: int = 2, resize: str = "pad", max_pixels: int = 50_000_000):
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.resize = resize
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        for param in ("size", "orientations", "pixels_per_cell", "cells_per_block"):
            _check_positive_int(getattr(self, param), param)
        blocks = self.size // self.pixels_per_cell - self.cells_per_block + 1
        if blocks < 1:
            raise ValueError(
                f"size={self.size} holds {self.size // self.pixels_per_cell} cells of "
                f"{self.pixels_per_cell} px per side, fewer than cells_per_block="
                f"{self.cells_per_block}; use a larger size or smaller cells"
            )
        return blocks * blocks * self.cells_per_block**2 * self.orientations

    def prepare(self, item: Any) -> np.ndarray:
        return self._load(item, self.size, self.resize, gray=True)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        dim = self.dim  # validates the parameters once per batch
        images = np.stack(prepared)
        out = np.empty((len(images), dim), dtype=np.float32)
        for start in range(0, len(images), _IMAGES_PER_CHUNK):
            chunk = images[start:start + _IMAGES_PER_CHUNK]
            out[start:start + len(chunk)] = hog_batch(
                chunk, self.orientations, self.pixels_per_cell, self.cells_per_block)
        return out


def hog_batch(images: np.ndarray, orientations: int = 9, pixels_per_cell: int = 8,
              cells_per_block: int = 2) -> np.ndarray:
    """HOG descriptors of a batch of grayscale images, shape (n, H, W) -> (n, dim).

    The same numbers as ``skimage.feature.hog(image, orientations, (p, p), (c, c),
    block_norm="L2-Hys")`` for each image, computed for the whole batch at once: skimage
    loops over blocks in Python and takes milliseconds per image, too slow for thousands.
    """
    images = images.astype(np.float64)
    g_row = np.zeros_like(images)
    g_col = np.zeros_like(images)
    g_row[:, 1:-1, :] = images[:, 2:, :] - images[:, :-2, :]
    g_col[:, :, 1:-1] = images[:, :, 2:] - images[:, :, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    # Hard binning: bin i holds [i, i + 1) * 180 / orientations, as skimage computes it.
    upper_edges = (180.0 / orientations) * np.arange(1, orientations)
    bins = np.searchsorted(upper_edges, orientation, side="right")

    n, height, width = images.shape
    cells_r, cells_c = height // pixels_per_cell, width // pixels_per_cell
    crop = (slice(None), slice(0, cells_r * pixels_per_cell), slice(0, cells_c * pixels_per_cell))
    # One weighted bincount over (image, cell, orientation bin) builds every histogram.
    cell_of_pixel = (np.arange(cells_r * pixels_per_cell)[:, None] // pixels_per_cell * cells_c
                     + np.arange(cells_c * pixels_per_cell)[None, :] // pixels_per_cell)
    n_cells = cells_r * cells_c
    index = ((np.arange(n)[:, None, None] * n_cells + cell_of_pixel) * orientations
             + bins[crop])
    histogram = np.bincount(index.ravel(), weights=magnitude[crop].ravel(),
                            minlength=n * n_cells * orientations)
    histogram = histogram.reshape(n, cells_r, cells_c, orientations) / pixels_per_cell**2

    blocks_r, blocks_c = cells_r - cells_per_block + 1, cells_c - cells_per_block + 1
    blocks = np.stack([
        np.stack([histogram[:, i:i + blocks_r, j:j + blocks_c] for j in range(cells_per_block)],
                 axis=3)
        for i in range(cells_per_block)
    ], axis=3)  # (n, blocks_r, blocks_c, cells_per_block, cells_per_block, orientations)
    eps = 1e-5
    norm_axes = (3, 4, 5)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=norm_axes, keepdims=True) + eps**2)
    blocks = np.minimum(blocks, 0.2)
    blocks = blocks / np.sqrt(np.sum(blocks**2, axis=norm_axes, keepdims=True) + eps**2)
    return blocks.reshape(n, -1).astype(np.float32)


@register_encoder("color-hist", modality="image", dim=8 * 4 * 4,
                  description="joint HSV colour histogram (8x4x4 bins), L1-normalised")
class ColorHistogramEncoder(_ImageEncoder):
    """Joint hue-saturation-value histogram, normalised to sum to 1.

    Parameters
    ----------
    bins : (int, int, int), default=(8, 4, 4)
        Bins for hue, saturation and value; ``dim`` is their product.
    size : int, default=64
        The image is first resized (stretched) to ``size`` x ``size``: plenty for a
        histogram, and it makes the cost independent of the photo's resolution.
    max_pixels : int, default=50_000_000
        Larger images are refused.
    """

    name = "color-hist"

    def __init__(self, *, bins: tuple[int, int, int] = (8, 4, 4), size: int = 64,
                 max_pixels: int = 50_000_000):
        self.bins = bins
        self.size = size
        self.max_pixels = max_pixels

    @property
    def dim(self) -> int:
        return math.prod(self._bins())

    def _bins(self) -> tuple[int, int, int]:
        bins = tuple(self.bins)
        if len(bins) != 3 or not all(_is_positive_int(b) for b in bins):
            raise ValueError(f"bins must be three positive ints (hue, saturation, value); "
                             f"got {self.bins!r}")
        return bins

    def prepare(self, item: Any) -> np.ndarray:
        _check_positive_int(self.size, "size")
        img = load_image(item, max_pixels=self.max_pixels, size_hint=self.size)
        img = resize_image(img, self.size, "stretch").convert("HSV")
        return np.asarray(img, dtype=np.uint8)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        bins = np.array(self._bins())
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for row, hsv in enumerate(prepared):
            # 0..255 per channel -> bin index per channel -> one joint index per pixel.
            index = (hsv.reshape(-1, 3).astype(np.int64) * bins) >> 8
            joint = np.ravel_multi_index(index.T, bins)
            counts = np.bincount(joint, minlength=out.shape[1])
            out[row] = counts / counts.sum()
        return out


# -- text ------------------------------------------------------------------------------------


@register_encoder("tfidf", default=True, modality="text", dim=None,
                  description="TF-IDF of word 1-2 grams and character 2-5 grams (learns a "
                              "vocabulary; optional SVD)")
class TfidfEncoder(Encoder):
    """TF-IDF bag of word and character n-grams, as a sparse float32 CSR matrix.

    Rows have unit L2 norm. The view stays sparse through fusion (no centring; see
    :mod:`mmfuse.views`); ``svd=`` gives a dense reduction instead.

    Parameters
    ----------
    word_ngrams : (int, int) or None, default=(1, 2)
        Word n-gram range; ``None`` leaves words out.
    char_ngrams : (int, int) or None, default=(2, 5)
        Character n-gram range within word boundaries (``char_wb``), robust to typos
        and inflections; ``None`` leaves them out.
    min_df : int or float, default=1
        Minimum document frequency of a word n-gram.
    char_min_df : int or float, default=2
        Minimum document frequency of a character n-gram (most occur once and are noise).
    max_features : int or None, default=20_000
        Keep the most frequent n-grams of each kind.
    lowercase : bool, default=True
        Lower-case before tokenising.
    svd : int or None, default=None
        Reduce to this many dimensions with TruncatedSVD (latent semantic analysis);
        clipped to what the fitted data supports.
    random_state : int, default=0
        Seed of the SVD.

    Attributes
    ----------
    vectorizers_ : list of TfidfVectorizer
        The fitted vectorizers (words first, then characters).
    svd_ : TruncatedSVD or None
        The fitted SVD.
    """

    name = "tfidf"
    modality = "text"
    stateless = False
    #: The fitted vocabulary holds n-grams of the training texts: a saved model carries them
    #: (see :func:`mmfuse.persist.save`, ``allow_training_text``).
    stores_training_text = True
    scrubs_pii = True

    def __init__(self, *, word_ngrams: tuple[int, int] | None = (1, 2),
                 char_ngrams: tuple[int, int] | None = (2, 5), min_df: float = 1,
                 char_min_df: float = 2, max_features: int | None = 20_000,
                 lowercase: bool = True, svd: int | None = None, random_state: int = 0):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.char_min_df = char_min_df
        self.max_features = max_features
        self.lowercase = lowercase
        self.svd = svd
        self.random_state = random_state

    @property
    def dim(self) -> int:
        self._check_fitted()
        if self.svd_ is not None:
            return int(self.svd_.n_components)
        return sum(len(v.vocabulary_) for v in self.vectorizers_)

    def prepare(self, item: Any) -> str:
        return _prepare_text(self, item)

    def fit_prepared(self, prepared: Sequence[str]) -> TfidfEncoder:
        from sklearn.decomposition import TruncatedSVD

        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams cannot both be None")
        if self.svd is not None:
            _check_positive_int(self.svd, "svd")
        if not prepared:
            raise InputError("tfidf needs at least one non-empty text to learn a vocabulary")
        vectorizers = self._make_vectorizers(len(prepared))
        try:
            blocks = [vectorizer.fit_transform(prepared) for vectorizer in vectorizers]
        except ValueError as exc:  # empty vocabulary: only stop words / punctuation
            raise InputError(f"tfidf could not learn a vocabulary from {len(prepared)} "
                             f"texts: {exc}") from None
        self.vectorizers_ = vectorizers
        self.svd_ = None
        if self.svd is not None:
            features = self._stack(blocks)
            # TruncatedSVD needs fewer components than features.
            components = max(1, min(self.svd, features.shape[1] - 1, features.shape[0]))
            self.svd_ = TruncatedSVD(components, random_state=self.random_state).fit(features)
        return self

    def embed(self, prepared: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        features = self._stack([vectorizer.transform(prepared)
                                for vectorizer in self.vectorizers_])
        if self.svd_ is not None:
            return self.svd_.transform(features).astype(np.float32)
        return features.astype(np.float32, copy=False).tocsr()

    def _make_vectorizers(self, n_texts: int) -> list[Any]:
        from sklearn.feature_extraction.text import TfidfVectorizer

        common = {"sublinear_tf": True, "lowercase": self.lowercase,
                  "max_features": self.max_features, "dtype": np.float32}
        vectorizers = []
        if self.word_ngrams is not None:
            vectorizers.append(TfidfVectorizer(analyzer="word", ngram_range=tuple(self.word_ngrams),
                                               min_df=_feasible_min_df(self.min_df, n_texts),
                                               token_pattern=r"(?u)\b\w+\b", **common))
        if self.char_ngrams is not None:
            vectorizers.append(TfidfVectorizer(analyzer="char_wb",
                                               ngram_range=tuple(self.char_ngrams),
                                               min_df=_feasible_min_df(self.char_min_df, n_texts),
                                               **common))
        return vectorizers

    def _stack(self, blocks: list[Any]) -> Any:
        from scipy import sparse

        # Each block has unit rows; rescale so the concatenation has unit rows too.
        return sparse.hstack(blocks, format="csr") * np.float32(1 / math.sqrt(len(blocks)))

    def _check_fitted(self) -> None:
        if not hasattr(self, "vectorizers_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError(
                "this tfidf encoder is not fitted yet, so its dim (the vocabulary size) is "
                "unknown; call fit(texts) or fit_transform(texts) first"
            )


def _feasible_min_df(min_df: float, n_texts: int) -> float:
    # An integer min_df above the number of texts would leave no vocabulary on tiny fits.
    return min(min_df, n_texts) if isinstance(min_df, int) else min_df


def _prepare_text(encoder: Encoder, item: Any) -> str:
    """Clean a text item; with ``encoder.scrub_pii`` set, replace PII by typed placeholders
    (see :mod:`mmfuse.privacy.scrub`) before anything else sees it."""
    text = clean_text(item)
    if text and getattr(encoder, "scrub_pii", False):
        from ..privacy.scrub import scrub_text

        text = scrub_text(text)
    if not text:
        raise MissingItem
    return text


class _HashedTextEncoder(Encoder):
    """Shared part of the hashed text encoders: word and character n-grams hashed into a
    fixed number of columns (the hashing trick), so no vocabulary, and no text, is stored."""

    modality = "text"
    scrubs_pii = True

    def __init__(self, *, word_ngrams: tuple[int, int] | None = (1, 2),
                 char_ngrams: tuple[int, int] | None = (2, 5), n_features: int = 2**12,
                 lowercase: bool = True):
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.n_features = n_features
        self.lowercase = lowercase

    def _analyzers(self) -> list[tuple[str, tuple[int, int]]]:
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams cannot both be None")
        _check_positive_int(self.n_features, "n_features")
        out = []
        if self.word_ngrams is not None:
            out.append(("word", tuple(self.word_ngrams)))
        if self.char_ngrams is not None:
            out.append(("char_wb", tuple(self.char_ngrams)))
        return out

    @property
    def dim(self) -> int:
        return self.n_features * len(self._analyzers())

    def prepare(self, item: Any) -> str:
        return _prepare_text(self, item)

    def _counts(self, prepared: Sequence[str]) -> list[Any]:
        """One sparse block of sublinear term frequencies (1 + log tf) per analyzer."""
        from sklearn.feature_extraction.text import HashingVectorizer

        blocks = []
        for analyzer, ngrams in self._analyzers():
            extra = {"token_pattern": r"(?u)\b\w+\b"} if analyzer == "word" else {}
            vectorizer = HashingVectorizer(analyzer=analyzer, ngram_range=ngrams,
                                           n_features=self.n_features, alternate_sign=False,
                                           norm=None, lowercase=self.lowercase,
                                           dtype=np.float32, **extra)
            counts = vectorizer.transform(prepared).tocsr()
            counts.data = 1.0 + np.log(counts.data)
            blocks.append(counts)
        return blocks

    def _finish(self, blocks: list[Any], idf: list[np.ndarray] | None) -> np.ndarray:
        from scipy import sparse
        from sklearn.preprocessing import normalize

        out = []
        for i, block in enumerate(blocks):
            if idf is not None:
                block = block @ sparse.diags(idf[i])
            out.append(normalize(block, norm="l2", copy=False))
        # each block has unit rows; rescale so that the concatenation has unit rows too
        stacked = sparse.hstack(out, format="csr") * np.float32(1 / math.sqrt(len(out)))
        return stacked.toarray().astype(np.float32, copy=False)


@register_encoder("hashing", modality="text", dim=2 * 2**12,
                  description="hashed word 1-2 and character 2-5 grams, sublinear tf, no idf: "
                              "learns nothing from data (usable under differential privacy)")
class HashingTextEncoder(_HashedTextEncoder):
    """Hashed n-gram term frequencies: nothing is learned, nothing of the text is stored.

    Word 1-2 grams and character 2-5 grams (within word boundaries) are hashed into
    ``n_features`` columns each (scikit-learn's ``HashingVectorizer``); the term frequencies
    are dampened (``1 + log tf``) and each block is L2-normalised. The encoder is
    data-independent, so it is usable under differential privacy and its features are cached.

    Parameters
    ----------
    word_ngrams : (int, int) or None, default=(1, 2)
        Word n-gram range; ``None`` leaves words out.
    char_ngrams : (int, int) or None, default=(2, 5)
        Character n-gram range within word boundaries; ``None`` leaves them out.
    n_features : int, default=4096
        Hash buckets per n-gram kind (collisions share a column).
    lowercase : bool, default=True

    Notes
    -----
    ``dim = n_features * (number of n-gram kinds)``. Hashing is not encryption: someone who
    guesses a string can hash it and look for its columns in the features.
    """

    name = "hashing"
    stateless = True

    def embed(self, prepared: Sequence[str]) -> np.ndarray:
        return self._finish(self._counts(prepared), None)


@register_encoder("tfidf-hashed", modality="text", dim=2 * 2**12,
                  description="TF-IDF of hashed word 1-2 and character 2-5 grams: the idf is "
                              "learned as numbers only, no vocabulary (the default for saved "
                              "models)")
class HashedTfidfEncoder(_HashedTextEncoder):
    """TF-IDF over hashed n-grams: like ``tfidf``, but a saved model holds no vocabulary.

    As :class:`HashingTextEncoder`, with each column weighted by its smoothed inverse
    document frequency ``idf = ln((1 + n) / (1 + df)) + 1`` learned at fit time. The fitted
    state is one float vector per n-gram kind: no token, n-gram or text. Because the idf is
    learned from the training texts, the encoder is data-dependent and is refused under
    differential privacy (use ``hashing`` there).

    Parameters
    ----------
    word_ngrams, char_ngrams, n_features, lowercase
        As for :class:`HashingTextEncoder`.

    Attributes
    ----------
    idf_ : list of ndarray of shape (n_features,)
        Inverse document frequencies, one vector per n-gram kind.
    """

    name = "tfidf-hashed"
    stateless = False

    def fit_prepared(self, prepared: Sequence[str]) -> HashedTfidfEncoder:
        if not prepared:
            raise InputError("tfidf-hashed needs at least one non-empty text to fit")
        n = len(prepared)
        idf = []
        for block in self._counts(prepared):
            df = np.bincount(block.indices, minlength=self.n_features)
            idf.append((np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32))
        self.idf_ = idf
        return self

    def embed(self, prepared: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "idf_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this tfidf-hashed encoder is not fitted yet; call "
                                 "fit(texts) or fit_transform(texts) first")
        return self._finish(self._counts(prepared), self.idf_)


# -- audio -----------------------------------------------------------------------------------

_DYNAMIC_RANGE = 8.0 * math.log(10.0)  # 80 dB, in natural-log units of power
_FRAMES_PER_CHUNK = 8192


class _AudioEncoder(Encoder):
    """Shared audio pipeline: decode, resample, trim silence, frame, mel spectrogram, pool."""

    modality = "audio"

    def prepare(self, item: Any) -> np.ndarray:
        _check_positive_int(self.rate, "rate")
        wave = load_audio(item, rate=self.rate, max_seconds=self.max_seconds)
        if self.trim_db is not None:
            wave = trim_silence(wave, self.rate, top_db=self.trim_db)
        return wave

    def _log_mels(self, waves: Sequence[np.ndarray]) -> list[np.ndarray]:
        """(frames, n_mels) log mel energies of each waveform."""
        import scipy.fft  # here, not at the top: listing encoders should stay cheap

        win = round(self.rate * self.window_seconds)
        hop = round(self.rate * self.hop_seconds)
        if win < 2 or hop < 1:
            raise ValueError(f"window_seconds and hop_seconds are too short for rate={self.rate}")
        n_fft = 1 << (win - 1).bit_length()
        filters = mel_filterbank(self.rate, n_fft, self.n_mels, self.fmin, self.fmax)
        frames = [self._frames(wave, win, hop) for wave in waves]
        # One FFT and one matrix product per chunk of clips rather than per clip: tiny
        # products are dominated by call and BLAS threading overhead.
        energies: list[np.ndarray] = []
        for chunk in _chunks(frames, max_rows=_FRAMES_PER_CHUNK):
            spectrum = scipy.fft.rfft(np.concatenate(chunk), n_fft, axis=1)
            power = (spectrum.real**2 + spectrum.imag**2) / n_fft
            stacked = power @ filters.T
            energies.extend(np.split(stacked, np.cumsum([len(f) for f in chunk])[:-1]))
        log_mels = []
        for energy in energies:
            log_mel = np.log(np.maximum(energy, 1e-10))
            # Floor at 80 dB below the clip's peak: near-empty bands (e.g. above 4 kHz in
            # upsampled 8 kHz speech) would otherwise add huge, noisy negative values.
            log_mels.append(np.maximum(log_mel, log_mel.max() - _DYNAMIC_RANGE))
        return log_mels

    def _frames(self, wave: np.ndarray, win: int, hop: int) -> np.ndarray:
        """Windowed, pre-emphasised analysis frames of one waveform, (frames, win)."""
        wave = np.asarray(wave, dtype=np.float32)
        if self.preemphasis:
            wave = np.append(wave[:1], wave[1:] - self.preemphasis * wave[:-1])
        if len(wave) < win:
            wave = np.pad(wave, (0, win - len(wave)))
        return np.lib.stride_tricks.sliding_window_view(wave, win)[::hop] * window(win)

    def _pool(self, features: np.ndarray, segment_features: np.ndarray) -> np.ndarray:
        """Mean and std over time, then the mean of each of ``segments`` equal time spans."""
        parts = [features.mean(axis=0), features.std(axis=0)]
        n_frames = len(segment_features)
        edges = np.linspace(0, n_frames, self.segments + 1)
        for start, stop in itertools.pairwise(edges):
            # At least one frame per segment, even when a clip has fewer frames than segments.
            first = min(int(start), n_frames - 1)
            last = max(first + 1, math.ceil(stop))
            parts.append(segment_features[first:last].mean(axis=0))
        return np.concatenate(parts)

    def _check_params(self) -> None:
        for param in ("rate", "n_mels"):
            _check_positive_int(getattr(self, param), param)
        if not isinstance(self.segments, int) or self.segments < 0:
            raise ValueError(f"segments must be an int >= 0; got {self.segments!r}")


@register_encoder("mfcc", default=True, modality="audio", dim=13 * 4 + 13 * 4,
                  description="MFCC + delta mean/std over time, plus MFCC means of 4 "
                              "time segments (16 kHz, 25 ms windows, 10 ms hop)")
class MfccEncoder(_AudioEncoder):
    """Mel-frequency cepstral coefficients pooled over time.

    The features are the mean and standard deviation over time of the MFCCs (and of their
    deltas), followed by the MFCC means over ``segments`` equal parts of the clip, which
    keeps the temporal order (what tells "six" from "seven").

    Parameters
    ----------
    n_mfcc : int, default=13
        Cepstral coefficients kept.
    include_c0 : bool, default=False
        Start at c0 (the overall log energy) rather than c1. Loudness depends on the
        microphone more than on the word: leaving it out gained 2-3 points on FSDD.
    deltas : bool, default=True
        Add first-order deltas (regression over +-2 frames) to the pooled statistics.
    segments : int, default=4
        Equal time segments whose MFCC means are appended; 0 for plain statistics.
    rate : int, default=16000
        Audio is resampled to this rate.
    window_seconds, hop_seconds : float, default=0.025, 0.010
        Frame length and step.
    n_mels : int, default=40
        Mel bands.
    fmin, fmax : float, default=20.0, 4000.0
        Frequency range of the mel bands (``fmax=None``: half the rate). Speech content
        lies mostly below 4 kHz, and narrow-band recordings (telephone, FSDD's 8 kHz) have
        nothing above it: bands there only add recording artefacts (on FSDD, fmax=None
        cost 5 points and one speaker fell from 0.67 to 0.36).
    preemphasis : float, default=0.97
        First-order high-pass coefficient (0 disables it).
    trim_db : float or None, default=40.0
        Trim leading and trailing silence quieter than this many dB below the peak.
    max_seconds : float, default=600.0
        Longer recordings are refused.

    Notes
    -----
    ``dim = n_mfcc * (2 * (1 + deltas) + segments)``.
    """

    name = "mfcc"

    def __init__(self, *, n_mfcc: int = 13, include_c0: bool = False, deltas: bool = True,
                 segments: int = 4, rate: int = 16_000, window_seconds: float = 0.025, hop_seconds: float = 0.010,
                 n_mels: int = 40, fmin: float = 20.0, fmax: float | None = 4000.0,
                 preemphasis: float = 0.97, trim_db: float | None = 40.0,
                 max_seconds: float = 600.0):
        self.n_mfcc = n_mfcc
        self.include_c0 = include_c0
        self.deltas = deltas
        self.segments = segments
        self.rate = rate
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.n_mels = n_mels
        self.fmin = fmin
        self.fmax = fmax
        self.preemphasis = preemphasis
        self.trim_db = trim_db
        self.max_seconds = max_seconds

    @property
    def dim(self) -> int:
        self._check_params()
        _check_positive_int(self.n_mfcc, "n_mfcc")
        if self.n_mfcc + (not self.include_c0) > self.n_mels:
            raise ValueError(f"n_mfcc={self.n_mfcc} needs more than n_mels={self.n_mels} bands")
        return self.n_mfcc * (2 * (1 + bool(self.deltas)) + self.segments)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        from scipy.fft import dct

        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for row, log_mel in enumerate(self._log_mels(prepared)):
            first = 0 if self.include_c0 else 1
            mfcc = dct(log_mel, type=2, norm="ortho", axis=1)[:, first:first + self.n_mfcc]
            stats = np.hstack([mfcc, _deltas(mfcc)]) if self.deltas else mfcc
            out[row] = self._pool(stats, mfcc)
        return out


@register_encoder("logmel", modality="audio", dim=16 * (2 + 6),
                  description="16 log-mel band energies: mean/std over time plus means of 6 "
                              "time segments (16 kHz, 25 ms windows, 10 ms hop)")
class LogMelEncoder(_AudioEncoder):
    """Log mel-band energies pooled over time.

    The mean and standard deviation over time of each band, then the band means over
    ``segments`` equal parts of the clip. Parameters as for :class:`MfccEncoder`
    (without ``n_mfcc``, ``include_c0`` and ``deltas``), except the defaults
    ``n_mels=16`` and ``segments=6``: with a linear classifier, coarse bands generalise
    across speakers better than fine ones (FSDD, leave-one-speaker-out: 0.68 with 40
    bands and 4 segments, 0.785 with 16 bands and 6 segments).

    Notes
    -----
    ``dim = n_mels * (2 + segments)``.
    """

    name = "logmel"

    def __init__(self, *, n_mels: int = 16, segments: int = 6, rate: int = 16_000,
                 window_seconds: float = 0.025, hop_seconds: float = 0.010, fmin: float = 20.0,
                 fmax: float | None = 4000.0, preemphasis: float = 0.97,
                 trim_db: float | None = 40.0, max_seconds: float = 600.0):
        self.n_mels = n_mels
        self.segments = segments
        self.rate = rate
        self.window_seconds = window_seconds
        self.hop_seconds = hop_seconds
        self.fmin = fmin
        self.fmax = fmax
        self.preemphasis = preemphasis
        self.trim_db = trim_db
        self.max_seconds = max_seconds

    @property
    def dim(self) -> int:
        self._check_params()
        return self.n_mels * (2 + self.segments)

    def embed(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for row, log_mel in enumerate(self._log_mels(prepared)):
            out[row] = self._pool(log_mel, log_mel)
        return out


def _deltas(features: np.ndarray, width: int = 2) -> np.ndarray:
    """Regression deltas over +-``width`` frames (edges repeated), as in HTK."""
    padded = np.pad(features, ((width, width), (0, 0)), mode="edge")
    n = len(features)
    weights = range(1, width + 1)
    numerator = sum(k * (padded[width + k:width + k + n] - padded[width - k:width - k + n])
                    for k in weights)
    return numerator / (2 * sum(k * k for k in weights))


def _chunks(arrays: list[np.ndarray], max_rows: int) -> list[list[np.ndarray]]:
    """Group consecutive arrays so that each group has at most ``max_rows`` rows (or one array)."""
    groups: list[list[np.ndarray]] = [[]]
    rows = 0
    for array in arrays:
        if groups[-1] and rows + len(array) > max_rows:
            groups.append([])
            rows = 0
        groups[-1].append(array)
        rows += len(array)
    return groups if groups[-1] else []


def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _check_positive_int(value: Any, name: str) -> None:
    if not _is_positive_int(value):
        raise ValueError(f"{name} must be a positive int; got {value!r}")
