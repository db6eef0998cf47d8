"""Several encoders for one modality, concatenated: ``create_encoder("tfidf+minilm")``.

A concatenation is one view (one column, one block for the fusion strategy): the parts'
features side by side, so the per-modality classifier weighs every feature of every part.
How the parts are put side by side depends only on each row, never on the data set (so
it learns nothing and cannot leak):

* all parts dense -> the raw features side by side (dense); the fusion strategy
  standardises each column on the training rows, as for any dense view;
* any part sparse (TF-IDF) -> every part's rows scaled to unit L2 norm, side by side as
  one sparse CSR matrix: each part then carries the same share of a row's norm (a dense
  part kept raw would drown the unit-norm TF-IDF rows; see :class:`~mmfuse.fusion.scaling.
  ViewScaler` for how sparse views are scaled).

A row is present when every part has it (an item one part cannot read is an error of the
concatenation). :func:`concat_views` builds the same matrix from the parts' views, which is
how :mod:`mmfuse.encoder_choice` scores a concatenation from cached features.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .._errors import InputError
from .base import Encoder

SEPARATOR = "+"


def split_name(name: str) -> list[str]:
    """``"tfidf+minilm"`` -> ``["tfidf", "minilm"]`` (a plain name -> ``[name]``)."""
    return [p.strip() for p in str(name).split(SEPARATOR)]


def concat_views(parts: Sequence[Any], present: Sequence[np.ndarray] | None = None) -> Any:
    """The concatenation of the parts' views (same rows), as :class:`ConcatEncoder` makes it.

    Rows missing in any part (``present`` False, or NaN rows when ``present`` is None)
    are missing in the result: NaN rows (dense) or all-zero rows (sparse).
    """
    from scipy import sparse

    from ..views import is_sparse

    n = parts[0].shape[0]
    if present is None:
        present = [np.ones(n, bool) if is_sparse(v) else ~np.isnan(np.asarray(v)).any(axis=1)
                   for v in parts]
    mask = np.logical_and.reduce([np.asarray(p, bool) for p in present])
    if not any(is_sparse(v) for v in parts):
        out = np.hstack([np.asarray(v, np.float32) for v in parts])
        out[~mask] = np.nan
        return out
    from sklearn.preprocessing import normalize

    blocks = []
    for v in parts:
        v = v.tocsr() if is_sparse(v) else sparse.csr_matrix(np.nan_to_num(np.asarray(v)))
        blocks.append(normalize(v.astype(np.float32), norm="l2", copy=True))
    out = sparse.hstack(blocks, format="csr").astype(np.float32)
    if not mask.all():
        out = (sparse.diags(mask.astype(np.float32)) @ out).tocsr()
    return out


class ConcatEncoder(Encoder):
    """Several encoders of one modality, their features side by side (see the module doc).

    Parameters
    ----------
    encoders : sequence of str or Encoder
        At least two encoders of the same modality (registered names or instances).

    Attributes
    ----------
    parts_ : list of Encoder
        The encoders, built (and, for those that learn, fitted by ``fit``).
    part_states_ : list of dict
        The parts' fitted attributes (what a saved model stores for them).
    """

    def __init__(self, encoders: Sequence[Any]):
        self.encoders = list(encoders)
        object.__setattr__(self, "_parts", [])

    def set_parts(self, parts: Sequence[Encoder]) -> "ConcatEncoder":
        """Give the built encoders (``create_encoder("a+b")`` does: build by name there)."""
        parts = list(parts)
        if isinstance(self.encoders, str) or len(parts) < 2:
            raise InputError(f"a concatenation needs at least 2 encoders; got {self.encoders!r}")
        mods = sorted({p.modality for p in parts})
        if len(mods) != 1:
            raise InputError(f"concatenated encoders must share one modality; "
                             f"{[p.name for p in parts]} are {mods}")
        names = [p.name for p in parts]
        if len(set(names)) != len(names):
            raise InputError(f"an encoder appears twice in the concatenation {names}")
        object.__setattr__(self, "_parts", parts)
        self._sync_states()
        return self

    @property
    def parts_(self) -> list[Encoder]:
        return self._parts

    def _sync_states(self) -> None:
        # the parts' fitted state as plain attributes (what a saved model stores); setting
        # ``part_states_`` (when a model is loaded) gives it back to the parts
        object.__setattr__(self, "part_states_", [
            {k: v for k, v in vars(p).items()
             if k.endswith("_") and not k.startswith("_") and k != "errors_"}
            for p in self._parts])

    # Encoder's class-level attributes, per instance (they depend on the parts)
    @property
    def modality(self) -> str:  # type: ignore[override]
        return self.parts_[0].modality

    @property
    def stateless(self) -> bool:  # type: ignore[override]
        return all(p.stateless for p in self.parts_)

    @property
    def stores_training_text(self) -> bool:  # type: ignore[override]
        return any(p.stores_training_text for p in self.parts_)

    @property
    def scrubs_pii(self) -> bool:  # type: ignore[override]
        return all(p.scrubs_pii for p in self.parts_)

    @property
    def name(self) -> str:  # type: ignore[override]
        """The parts' names joined by ``+``, e.g. ``"tfidf+minilm"``."""
        return SEPARATOR.join(p.name for p in self.parts_)

    def __setattr__(self, key: str, value: Any) -> None:
        # settings meant for every part (scrub_pii, device...) reach the parts
        if key == "part_states_" and "_parts" in vars(self):
            for p, state in zip(self._parts, value):
                for k, v in state.items():
                    setattr(p, k, v)
        if key in ("scrub_pii", "device") and "_parts" in vars(self):
            for p in self._parts:
                if key != "device" or "device" in vars(p):
                    setattr(p, key, value)
        object.__setattr__(self, key, value)

    def config(self) -> dict[str, Any]:
        return {"parts": [p.fingerprint for p in self.parts_]}

    def weights_hash(self) -> str:
        return "+".join(p.weights_hash() for p in self.parts_)

    @property
    def dim(self) -> int:
        return sum(p.dim for p in self.parts_)

    def prepare(self, item: Any) -> tuple[Any, ...]:
        return tuple(p.prepare(item) for p in self.parts_)

    def fit_prepared(self, prepared: Sequence[Any]) -> "ConcatEncoder":
        for i, p in enumerate(self.parts_):
            if not p.stateless:
                p.fit_prepared([item[i] for item in prepared])
        self._sync_states()
        return self

    def embed(self, prepared: Sequence[Any]) -> Any:
        views = [p.embed([item[i] for item in prepared]) for i, p in enumerate(self.parts_)]
        return concat_views(views, [np.ones(len(prepared), bool)] * len(views))

    def __repr__(self) -> str:
        return f"ConcatEncoder({self.name!r})"
