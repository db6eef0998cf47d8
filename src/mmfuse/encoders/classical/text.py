"""Classical text encoders: ``tfidf`` (learns a vocabulary), ``hashing`` and
``tfidf-hashed`` (no vocabulary)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..._errors import InputError
from ...preprocess.text import clean_text
from ..base import Encoder, MissingItem
from ..registry import register_encoder
from ._checks import _check_positive_int


@register_encoder("tfidf", cost=2.0, default=True, modality="text", dim=None,
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
        from ...privacy.scrub import scrub_text

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


@register_encoder("hashing", cost=1.0, variant_of="tfidf", modality="text", dim=2 * 2**12,
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


@register_encoder("tfidf-hashed", cost=2.0, variant_of="tfidf", modality="text", dim=2 * 2**12,
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
