"""The encoders a column chooses from (``encoders="auto"`` or a list of names per column):
:class:`Candidates`, how a column spec asks for a choice, and each encoder's relative cost.
The choice itself (inner cross-validation) is :mod:`mmfuse.encoder_choice`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._errors import InputError
from .parts import encoder_parts, view_name

AUTO = "auto"

#: Relative cost of encoding one item, which breaks ties (and drives the opt-in one-SE rule
#: toward the cheaper encoder). Each encoder declares it (``register_encoder(cost=...)``); a
#: name put here overrides that (empty by default), one without either (a user's encoder)
#: costs DEFAULT_COST, and a concatenation costs the sum of its parts.
COST: dict[str, float] = {}
DEFAULT_COST = 10.0


def encoder_cost(name: str) -> float:
    """Relative cost of an encoder name (a concatenation or separate experts: the sum of
    its parts)."""
    return float(sum(_part_cost(p) for p in encoder_parts(name)))


def _part_cost(name: str) -> float:
    from .registry import ENCODERS, load_builtin

    if name in COST:
        return COST[name]
    load_builtin()
    cost = ENCODERS.entry(name).meta.get("cost") if name in ENCODERS else None
    return DEFAULT_COST if cost is None else float(cost)


#: Variants of another encoder that exist for privacy, not accuracy, declare it
#: (``register_encoder(variant_of=...)``): ``hashing`` (learns nothing: usable under
#: differential privacy) and ``tfidf-hashed`` (no vocabulary in a saved model) approximate
#: ``tfidf``. ``"auto"`` scores ``tfidf`` and leaves them out; a list may name them
#: (``mmfuse train --encoders auto`` swaps ``tfidf`` for ``tfidf-hashed`` when the model
#: must not store training text).


def installed_encoders(modality: str, variants: bool = False) -> list[str]:
    """Every registered encoder of ``modality`` whose packages are installed, cheapest first
    (without the privacy variants of an installed encoder unless ``variants``)."""
    from .registry import ENCODERS, list_encoders

    names = []
    for row in list_encoders(modality):
        if not variants and row.get("variant_of") in ENCODERS:
            continue
        check = getattr(ENCODERS.entry(row["name"]).builder, "available", None)
        if check is None or check():
            names.append(row["name"])
    return sorted(names, key=lambda n: (encoder_cost(n), n))


@dataclass(frozen=True)
class Candidates:
    """The encoders one column chooses from.

    Attributes
    ----------
    names : tuple of str
        Candidate encoder names (``"a+b"`` is a concatenation, ``"a|b"`` separate experts).
    pair : bool
        Also score the concatenation of the two best single candidates (``"auto"``).
    """

    names: tuple[str, ...]
    pair: bool = False


def is_choice(spec: Any) -> bool:
    """True for a column spec that asks for a choice (``"auto"`` or a list of names)."""
    return (isinstance(spec, str) and spec == AUTO) or (
        isinstance(spec, (list, tuple)) and not isinstance(spec, str))


def parse_candidates(spec: Any, column: str, modality: str | None = None) -> Candidates:
    """The :class:`Candidates` of a column spec: ``"auto"`` (every installed encoder of the
    column's modality, plus the best pair) or a list of encoder names."""
    from .base import MODALITIES
    from .registry import create_encoder, encoder_modality

    if isinstance(spec, str) and spec == AUTO:
        modality = modality or column
        if modality not in MODALITIES:
            raise InputError(f"encoders 'auto' for column {column!r}: the modality is unknown "
                             f"(columns named {list(MODALITIES)} get one); give a list of "
                             f"encoder names instead")
        return Candidates(tuple(installed_encoders(modality)), pair=True)
    names = list(spec)
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise InputError(f"candidate encoders of column {column!r} must be a non-empty list of "
                         f"encoder names; got {spec!r}")
    names = [n.strip() for n in names]
    if len(set(names)) != len(names):
        raise InputError(f"candidate encoders of column {column!r} repeat a name: {names}")
    mods = {}
    for n in names:
        create_encoder(view_name(n))  # unknown names fail here, with the list of valid ones
        mods[n] = {encoder_modality(p) for p in encoder_parts(n)}
    found = set().union(*mods.values())
    if len(found) > 1:
        raise InputError(f"candidate encoders of column {column!r} mix modalities: "
                         f"{ {n: sorted(m) for n, m in mods.items()} }")
    return Candidates(tuple(names), pair=False)
