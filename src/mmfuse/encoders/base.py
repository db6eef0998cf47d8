"""The encoder contract.

An encoder turns raw samples of one modality into a float32 matrix. It works in two steps so
that decoding can run per item (and, later, in a pool of workers) while the model runs on
batches:

* ``prepare(item)`` decodes and preprocesses one raw item (a path, an array, a string, a
  ``(waveform, rate)`` pair) into whatever the model eats. It raises
  :class:`~mmfuse.InputError` naming the item when the item is unreadable.
* ``embed(prepared)`` maps a list of prepared items to an ``(n, dim)`` float32 array.

Stateful encoders (TF-IDF) learn in ``fit_prepared``; ``stateless = True`` tells the
evaluation code it may extract once for every fold, because nothing is learned from data.

``fit(samples)`` / ``transform(samples)`` are the scikit-learn style entry points: missing
items (``None``, NaN, ``""``) give NaN rows, and ``on_error`` decides what an unreadable
item does (``"raise"``, or ``"skip"``: a NaN row, reported in ``errors_``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._params import check_on_error
from .._constants import MODALITIES, ON_ERROR  # noqa: F401 (re-exported)
from .._errors import DeviceError, InputError, MissingDependencyError

#: Exceptions never turned into an item error: they are about the machine or the
#: installation, not about one item (a missing package or GPU would otherwise skip every
#: item).
NOT_ITEM_ERRORS = (MemoryError, KeyboardInterrupt, SystemExit, MissingDependencyError,
                   DeviceError)



def is_missing(item: Any) -> bool:
    """True for the values that mean "this modality is absent for this sample"."""
    if item is None:
        return True
    if isinstance(item, float) and math.isnan(item):
        return True
    if isinstance(item, str) and item.strip() == "":
        return True
    try:
        import pandas as pd

        if item is pd.NA or item is pd.NaT:
            return True
    except ImportError:  # pragma: no cover
        pass
    return False


def describe_item(item: Any) -> str:
    """A short human description of a raw item for error messages."""
    if isinstance(item, str):
        return repr(item if len(item) <= 80 else item[:77] + "...")
    if isinstance(item, np.ndarray):
        return f"array of shape {item.shape}"
    if isinstance(item, tuple) and len(item) == 2:
        return "(waveform, rate) pair"
    return type(item).__name__


def failure_message(exc: BaseException, item: Any) -> str:
    """The message of an item error: an :class:`~mmfuse.InputError` says it all (it names the
    file); any other exception is a failure of the decoder/encoder on this item, reported
    with the item and the exception's type."""
    if isinstance(exc, InputError):
        return str(exc)
    text = str(exc) or "(no message)"
    return f"{describe_item(item)} could not be processed: {type(exc).__name__}: {text}"


def raise_item_error(exc: BaseException, row: int, column: str | None, item: Any) -> None:
    """Raise the :class:`~mmfuse.InputError` of ``on_error="raise"`` for one item."""
    where = f"row {row}" + (f", column {column!r}" if column else "")
    raise InputError(f"{where}: {failure_message(exc, item)}") from exc


class MissingItem(Exception):
    """Raised by ``prepare`` when an item turns out empty (e.g. text that is blank after
    cleaning): the row is treated as missing, not as an error."""


@dataclass(frozen=True)
class ItemError:
    """One item that could not be used, as reported when ``on_error="skip"``."""

    row: int
    column: str | None
    item: str
    message: str

    def __str__(self) -> str:
        where = f"row {self.row}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.message}"


class Encoder:
    """Base class of every encoder (see the module docstring for the contract)."""

    name: ClassVar[str] = "encoder"
    modality: ClassVar[str] = "image"
    stateless: ClassVar[bool] = True
    #: True when the fitted state holds pieces of the training data (e.g. a vocabulary):
    #: such a model is saved only on request (``save(..., allow_training_text=True)``).
    stores_training_text: ClassVar[bool] = False
    #: True for text encoders whose ``prepare`` honours ``scrub_pii`` (an attribute set by
    #: ``MultimodalClassifier(scrub_pii=True)``; see :mod:`mmfuse.privacy.scrub`).
    scrubs_pii: ClassVar[bool] = False

    # -- to implement -------------------------------------------------------------------
    def prepare(self, item: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_prepared(self, prepared: Sequence[Any]) -> "Encoder":
        return self

    @property
    def dim(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Everything that changes the output for a given input (goes into the fingerprint)."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def weights_hash(self) -> str:
        """Hash of the pretrained weights; classical encoders have none."""
        return ""

    # -- where it runs ------------------------------------------------------------------
    @classmethod
    def device_for(cls, device: str) -> str | None:
        """The device this encoder runs on when a run asks for ``device`` (resolved:
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``); None when it takes no device (the classical
        ones run on the CPU)."""
        return None

    def to(self, device: str) -> "Encoder":
        """Run on ``device`` (resolved) from now on, as :meth:`device_for` places it; an
        encoder without a device stays as it is. Returns self."""
        return self

    # -- provided -----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """Stable identity of this encoder's output: name + weights hash + config."""
        payload = json.dumps(
            {"name": self.name, "weights": self.weights_hash(), "config": self.config()},
            sort_keys=True,
            default=str,
        )
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    def prepare_all(
        self, samples: Sequence[Any], on_error: str = "raise", column: str | None = None
    ) -> tuple[list[Any], np.ndarray, list[ItemError]]:
        """Prepare every item: returns (prepared items of present rows, present mask, errors)."""
        check_on_error(on_error)
        samples = list(samples)
        present = np.zeros(len(samples), dtype=bool)
        prepared: list[Any] = []
        errors: list[ItemError] = []
        for row, item in enumerate(samples):
            if is_missing(item):
                continue
            try:
                prepared.append(self.prepare(item))
            except MissingItem:
                continue
            except NOT_ITEM_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - one bad item never ends the run
                # a multi-column item (tabular) names the column at fault on its error
                where = getattr(exc, "column", None) or column
                if on_error == "raise":
                    raise_item_error(exc, row, where, item)
                errors.append(ItemError(row, where, describe_item(item),
                                        failure_message(exc, item)))
                continue
            present[row] = True
        return prepared, present, errors

    def fit(self, samples: Sequence[Any], y: Any = None, on_error: str = "raise") -> "Encoder":
        prepared, _, self.errors_ = self.prepare_all(samples, on_error)
        return self.fit_prepared(prepared)

    def transform(self, samples: Sequence[Any], on_error: str = "raise") -> np.ndarray:
        prepared, present, self.errors_ = self.prepare_all(samples, on_error)
        return self.assemble(prepared, present)

    def fit_transform(self, samples: Sequence[Any], y: Any = None, on_error: str = "raise") -> np.ndarray:
        prepared, present, self.errors_ = self.prepare_all(samples, on_error)
        self.fit_prepared(prepared)
        return self.assemble(prepared, present)

    def assemble(self, prepared: Sequence[Any], present: np.ndarray) -> np.ndarray:
        """Embed the present rows and put them into an (n, dim) matrix with NaN rows elsewhere.

        An encoder whose ``embed`` returns a SciPy sparse matrix (TF-IDF) gets a sparse CSR
        view with all-zero missing rows (``present`` marks them)."""
        if len(prepared):
            emb = self.embed(prepared)
            from ..views import is_sparse

            if is_sparse(emb):
                return _sparse_rows(emb, present, self.dim)
        out = np.full((len(present), self.dim), np.nan, dtype=np.float32)
        if len(prepared):
            emb = np.asarray(emb, dtype=np.float32)
            if emb.shape != (len(prepared), self.dim):
                raise RuntimeError(
                    f"encoder {self.name!r} returned shape {emb.shape}, "
                    f"expected ({len(prepared)}, {self.dim})"
                )
            out[present] = emb
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def fit_on_rows(encoder: Encoder, prepared: Sequence[Any], present: np.ndarray,
                train: np.ndarray | None) -> Any:
    """The view of every row from a stateful encoder fit (on a copy) on the ``train`` rows
    only (None: every row); ``prepared`` holds the items of the ``present`` rows. Used by
    the featurizer's per-fold views and by the candidate encoders alike."""
    import copy

    rows = np.arange(len(present)) if train is None else train
    items = prepared_rows(prepared, present, rows)
    return copy.deepcopy(encoder).fit_prepared(items).assemble(prepared, present)


def prepared_rows(prepared: Sequence[Any], present: np.ndarray, rows: np.ndarray) -> list[Any]:
    """The prepared items of ``rows`` (those present): ``prepared`` holds one item per
    present row, in order."""
    index = np.cumsum(present) - 1  # position of each present row in ``prepared``
    return [prepared[index[r]] for r in rows if present[r]]


def _sparse_rows(emb: Any, present: np.ndarray, dim: int) -> Any:
    """``emb`` (one row per present row) spread to ``len(present)`` rows, zero elsewhere."""
    from scipy import sparse

    present = np.asarray(present, bool)
    if emb.shape != (int(present.sum()), dim):
        raise RuntimeError(f"encoder returned shape {emb.shape}, expected "
                           f"({int(present.sum())}, {dim})")
    spread = sparse.csr_matrix((np.ones(emb.shape[0], np.float32),
                                (np.flatnonzero(present), np.arange(emb.shape[0]))),
                               shape=(len(present), emb.shape[0]))
    return (spread @ emb.tocsr()).astype(np.float32).tocsr()
