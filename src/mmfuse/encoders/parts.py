"""Candidate encoders' features for the encoder choice (:mod:`mmfuse.encoder_choice`).

:func:`encode_parts` computes every single encoder's features once for the whole table
(stateless encoders through the feature cache); :class:`Part` holds them, fitting an
encoder that learns (TF-IDF) on the training rows of each fold only; and
:func:`candidate_features` builds a candidate's view (``a+b``: the concatenation).

A candidate ``a|b`` keeps two encoders of one modality as **separate experts**: its view
is the same concatenation as ``a+b`` (:func:`view_name`), but its per-view classifier is a
:class:`~mmfuse.fusion.linear.SplitExperts` over the parts' column blocks
(:func:`view_classifier`) rather than one classifier over every column.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import InputError
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
        index = np.cumsum(self.present) - 1
        return Part(self.present[rows], encoder=self.encoder,
                    prepared=[self.prepared[index[r]] for r in rows if self.present[r]])

    def features(self, train: np.ndarray | None) -> Any:
        """Features of every row, an encoder that learns being fit on ``train`` rows only."""
        if self.encoder is None:
            return self.view
        index = np.cumsum(self.present) - 1
        rows = np.arange(len(self.present)) if train is None else train
        items = [self.prepared[index[r]] for r in rows if self.present[r]]
        enc = copy.deepcopy(self.encoder).fit_prepared(items)
        return enc.assemble(self.prepared, self.present)


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


def encode_parts(names: Sequence[str], samples: Sequence[Any], *, on_error: str = "raise",
                 column: str | None = None, cache: Any = True, progress: Any = None,
                 stats: dict[str, Any] | None = None, scrub_pii: bool = False
                 ) -> tuple[dict[str, Part], list]:
    """Features of every encoder in ``names`` for ``samples``: ``({name: Part}, errors)``.

    Stateless encoders are streamed through :func:`mmfuse.extract.extract_features` (the
    feature cache: computed once for every fold); encoders that learn keep their prepared
    items, to be fit on training rows only (:meth:`Part.features`). Item errors are
    reported once per item (the first encoder's report wins: the others name the same
    rows). ``scrub_pii`` scrubs text before any text encoder sees it.
    """
    from ..extract import extract_features
    from .registry import create_encoder

    parts: dict[str, Part] = {}
    errors: list = []
    seen_rows: set[int] = set()
    for name in names:
        enc = create_encoder(name)
        if scrub_pii and enc.modality == "text":
            if not enc.scrubs_pii:
                raise InputError(f"scrub_pii=True, but the candidate encoder {name!r} of text "
                                 f"column {column!r} does not support scrubbing")
            enc.scrub_pii = True
        if enc.stateless:
            tick = None if progress is None else (
                lambda done, total, name=name: progress(f"features: {column} ({name})", done,
                                                        total))
            counts: dict[str, Any] = {}
            view, mask, errs = extract_features(enc, samples, cache=cache, on_error=on_error,
                                                column=column, progress=tick, stats=counts)
            if stats is not None:
                stats["not_cached"] = stats.get("not_cached", 0) + counts.get("not_cached", 0)
            parts[name] = Part(np.asarray(mask, bool), view=view)
        else:
            prepared, mask, errs = enc.prepare_all(samples, on_error, column=column)
            parts[name] = Part(np.asarray(mask, bool), encoder=enc, prepared=prepared)
        for e in errs:
            if e.row not in seen_rows:
                seen_rows.add(e.row)
                errors.append(e)
    return parts, sorted(errors, key=lambda e: e.row)
