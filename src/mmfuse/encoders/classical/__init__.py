"""Classical encoders: hand-made features that need no weights, one module per modality.

Image: ``pixels``, ``hog``, ``color-hist``. Text: ``tfidf`` (learns a vocabulary).
Audio: ``mfcc``, ``logmel`` (own mel filterbank in numpy/scipy, no librosa).

``prepare`` decodes and resizes / cleans / resamples one item; ``embed`` computes the features
of a batch. Parameters are validated when first used, not in ``__init__`` (scikit-learn
style); a bad parameter raises ``ValueError``, never :class:`~mmfuse.InputError`, so that
``on_error="skip"`` cannot hide it.
"""

from .audio import LogMelEncoder, MfccEncoder
from .image import ColorHistogramEncoder, HogEncoder, PixelsEncoder, hog_batch
from .text import HashedTfidfEncoder, HashingTextEncoder, TfidfEncoder

__all__ = ["ColorHistogramEncoder", "HashedTfidfEncoder", "HashingTextEncoder", "HogEncoder",
           "LogMelEncoder", "MfccEncoder", "PixelsEncoder", "TfidfEncoder", "hog_batch"]
