"""``auto``'s candidates: the default list, the ``neural`` heads, and the race that admits a
head only while it keeps up with the simple candidates."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError
from .choice import simple_order

#: Classical candidates: (strategy, parameters). Weight variants are separate candidates.
CLASSICAL_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("early", {"weights": "equal"}),
    ("late", {"weights": "equal"}),
    ("seed-baseline", {}),
    ("late", {"weights": "cv"}),
    ("stacking", {}),
)
# (``weighted`` is not a default candidate: on class scores it is a constrained stacking,
# and scoring its weight grid on every inner fold costs more than all the others together;
# add it with ``candidates=``.)
#: Learned heads (``neural=True`` or ``"auto"``: all of them).
NEURAL_CANDIDATES: tuple[tuple[str, dict[str, Any]], ...] = (
    ("gmu", {}), ("attention", {}), ("lowrank", {}),
)
#: The heads raced by default when PyTorch is installed (``AutoFusion``'s ``neural``).
RACED_HEADS = ("gmu",)
#: Racing of the heads (cheap admission): after HEAD_RACE_MIN_FOLDS inner folds, a head
#: whose mean inner accuracy is more than HEAD_RACE_MARGIN below the best simple
#: candidate's on the same folds is not trained on the other folds and cannot be chosen.
#: A head that pays must beat the best simple candidate by more than one standard error
#: anyway; one that trails it by two points after two folds rarely does. With no more
#: inner folds than HEAD_RACE_MIN_FOLDS (leave one group out over two or three training
#: groups), a raced head is not trained at all: there is nothing left to race on, and two
#: paired differences say nothing of a standard error (measured on icons-theme, leave one
#: theme out: the head doubled the one command's time and was never chosen).
HEAD_RACE_MIN_FOLDS = 2
HEAD_RACE_MARGIN = 0.02


class RacedOut(Exception):
    """A raced head stopped early (see :func:`head_race`)."""


@dataclass(frozen=True)
class Candidate:
    name: str
    fusion: str
    modalities: tuple[str, ...]
    params: Mapping[str, Any] = field(default_factory=dict)


def label(fusion: str, params: Mapping[str, Any]) -> str:
    """A candidate's name: the strategy, with its weight option in brackets."""
    w = params.get("weights")
    if w is None:
        return fusion
    return f"{fusion}[{w}]" if isinstance(w, str) else f"{fusion}[custom]"


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def heads(neural: Any) -> list[str]:
    """The learned heads among the default candidates, for ``neural`` (see ``AutoFusion``):
    True: all; "auto": all when PyTorch is installed; a name or list of names: those, when
    PyTorch is installed; False: none."""
    names = [h for h, _ in NEURAL_CANDIDATES]
    if isinstance(neural, (bool, np.bool_)):
        return names if neural else []
    if isinstance(neural, str) and neural == "auto":
        return names if torch_installed() else []
    chosen = [neural] if isinstance(neural, str) else neural
    if (not isinstance(chosen, (list, tuple)) or not chosen
            or any(not isinstance(h, str) or h not in names for h in chosen)):
        raise InputError(f"neural must be True, False, 'auto' or head names among {names}; "
                         f"got {neural!r}")
    return list(dict.fromkeys(chosen)) if torch_installed() else []


def is_raced(c: Candidate, candidates: Any, neural: Any) -> bool:
    """True for a head that is raced: one of the default candidates by head name (not asked
    for with ``neural=True``/``"auto"`` or listed in ``candidates``)."""
    return (candidates is None and not isinstance(neural, (bool, np.bool_))
            and neural != "auto" and c.fusion in {h for h, _ in NEURAL_CANDIDATES})


def fused_candidates(modalities: tuple[str, ...], candidates: Sequence[Any] | None,
                     neural: Any, weights: Any,
                     candidate_params: Mapping[str, Mapping[str, Any]] | None
                     ) -> list[Candidate]:
    """The fused candidates of ``auto`` (see its parameters of the same names)."""
    from .base import FUSIONS, capabilities, load_builtin

    load_builtin()
    if candidates is None:
        specs = list(CLASSICAL_CANDIDATES) + [(h, {}) for h in heads(neural)]
    else:
        if isinstance(candidates, str):
            raise InputError(
                f"candidates must be a list of strategy names or (name, params) pairs; "
                f"got the string {candidates!r}"
            )
        heads(neural)  # (a bad value fails here too)
        specs = []
        for spec in candidates:
            if isinstance(spec, str):
                specs.append((spec, {}))
            elif (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)
                  and isinstance(spec[1], Mapping)):
                specs.append((spec[0], dict(spec[1])))
            else:
                raise InputError(
                    f"each candidate must be a strategy name or a (name, params) pair; "
                    f"got {spec!r}"
                )
    extra = dict(candidate_params or {})
    out, seen = [], set()
    for fusion, params in specs:
        if fusion == "auto":
            raise InputError("'auto' cannot be one of its own candidates")
        FUSIONS.entry(fusion)  # unknown names fail with the valid list
        params = {**params, **dict(extra.get(fusion, {}))}
        if capabilities(fusion)["takes_weights"] and (
                not isinstance(weights, str) or weights != "cv" or "weights" not in params):
            params["weights"] = weights  # fixed weights override the list's
        name = label(fusion, params)
        if name in seen:
            continue
        seen.add(name)
        out.append(Candidate(name, fusion, modalities, params))
    return out


def head_race(fold_scores: Mapping[str, Sequence[float]], splits: Sequence[Any],
              y: np.ndarray) -> Any:
    """The check a raced head passes after each inner fold: ``check(j, proba)``, with the
    out-of-fold probabilities of folds ``0..j`` filled, raises :class:`RacedOut` when,
    after :data:`HEAD_RACE_MIN_FOLDS` folds (and before the last), the head's mean accuracy
    trails the best simple candidate's (in ``fold_scores``) on the same folds by more than
    :data:`HEAD_RACE_MARGIN`."""
    simple = simple_order(fold_scores)

    def check(j: int, proba: np.ndarray) -> None:
        done = j + 1
        if not simple or done < HEAD_RACE_MIN_FOLDS or done >= len(splits):
            return
        mine = float(np.mean([np.mean(proba[te].argmax(axis=1) == y[te])
                              for _, te in splits[:done]]))
        best = max(float(np.mean(fold_scores[n][:done])) for n in simple)
        if mine < best - HEAD_RACE_MARGIN:
            raise RacedOut(f"raced out after {done} inner folds: accuracy {mine:.3f} "
                           f"against {best:.3f} for the best simple candidate")
    return check
