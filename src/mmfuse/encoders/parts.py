"""Candidate encoders' features for the encoder choice (:mod:`mmfuse.encoder_choice`).

:func:`mmfuse.encoders.featurizer.encode_candidates` computes every single encoder's
features once for the whole table, through the featurizer (the feature cache, pooling);
:class:`Part` holds them, fitting an encoder that learns (TF-IDF) on the training rows of
each fold only (as the featurizer's per-fold views: :func:`~mmfuse.encoders.base.
fit_on_rows`); and
:func:`candidate_features` builds a candidate's view (``a+b``: the concatenation).

A candidate ``a|b`` keeps two encoders of one modality as **separate experts**: its view
is the same concatenation as ``a+b`` (:func:`view_name`), but its per-view classifier is a
:class:`~mmfuse.fusion.linear.SplitExperts` over the parts' column blocks
(:func:`view_classifier`) rather than one classifier over every column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
from .base import fit_on_rows, prepared_rows
from .concat import SEPARATOR, concat_views, split_name

#: Joins the parts of a candidate kept as separate experts (``"efficientnet-lite0|color-hist"``)
SPLIT = "|"


def encoder_parts(name: str) -> list[str]:
    """The single encoders of a candidate: ``"a+b"`` and ``"a|b"`` -> ``["a", "b"]``."""
    return [p for piece in str(name).split(SPLIT) for p in split_name(piece)]


def is_split(name: str) -> bool:
    """True for a candidate kept as separate experts (``"a|b"``)."""
    return SPLIT in str(name)


def view_name(name: str) -> str:
    """The encoder that makes a candidate's view: ``"a|b"`` -> ``"a+b"`` (the concatenation)."""
    return SEPARATOR.join(encoder_parts(name))


def view_classifier(name: str, widths: Sequence[int] | None, classifier: Any) -> Any:
    """The per-view classifier of candidate ``name``: ``classifier`` itself, or for a
    candidate ``a|b`` a :class:`~mmfuse.fusion.linear.SplitExperts` over its parts' blocks
    of ``widths`` columns (each block's classifier: ``classifier``)."""
    if not is_split(name):
        return classifier
    from ..fusion.linear import SplitExperts

    return SplitExperts(widths=tuple(int(w) for w in widths), estimator=classifier)


@dataclass
class Part:
    """One encoder's features for every row of the training data.

    Either ``view`` (fixed features, from a stateless encoder) or ``encoder`` + ``prepared``
    (an encoder that learns: fit on the training rows of each fold), and ``present``.
    """

    present: np.ndarray
    view: Any = None
    encoder: Any = None
    prepared: list | None = None

    def subset(self, rows: np.ndarray) -> "Part":
        """The same encoder's features for ``rows`` only."""
        if self.encoder is None:
            return Part(self.present[rows], view=self.view[rows])
        return Part(self.present[rows], encoder=self.encoder,
                    prepared=prepared_rows(self.prepared, self.present, rows))

    def features(self, train: np.ndarray | None) -> Any:
        """Features of every row, an encoder that learns being fit on ``train`` rows only."""
        if self.encoder is None:
            return self.view
        return fit_on_rows(self.encoder, self.prepared, self.present, train)


def candidate_features(parts: Mapping[str, Part], name: str, train: np.ndarray | None
                       ) -> tuple[Any, np.ndarray]:
    """``(view, present)`` of candidate ``name`` (a part, or ``a+b`` and ``a|b``: their
    concatenation)."""
    return candidate_view(parts, name, train)[:2]


def candidate_view(parts: Mapping[str, Part], name: str, train: np.ndarray | None
                   ) -> tuple[Any, np.ndarray, list[int]]:
    """``(view, present, widths)`` of candidate ``name``: :func:`candidate_features` and
    the width of each part's block of columns (an encoder that learns, fit on ``train``)."""
    names = encoder_parts(name)
    missing = [p for p in names if p not in parts]
    if missing:
        raise InputError(f"no features for encoder(s) {missing}; have {sorted(parts)}")
    if len(names) == 1:
        view = parts[names[0]].features(train)
        return view, parts[names[0]].present, [int(view.shape[1])]
    present = [parts[p].present for p in names]
    blocks = [parts[p].features(train) for p in names]
    return (concat_views(blocks, present), np.logical_and.reduce(present),
            [int(b.shape[1]) for b in blocks])


def needed_encoders(candidates: Any) -> list[str]:
    """The single encoders whose features the candidates use (a pair only uses singles)."""
    out: list[str] = []
    for name in candidates.names:
        for p in encoder_parts(name):
            if p not in out:
                out.append(p)
    return out
