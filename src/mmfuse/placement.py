"""Placing a whole run on a device: which encoder runs where, the learned heads' ``device``.

This sits above the encoders and the fusion strategies (it reads their registries) and below
the CLI; the device helpers themselves are :mod:`mmfuse.devices` (the bottom layer). A fitted
model moves itself with ``model.to(device)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["encoder_device", "head_params", "place_encoders"]


def encoder_device(name: str, device: str) -> str | None:
    """The device an encoder registered as ``name`` gets when the run asks for ``device``
    (already resolved: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``): what its class declares
    (:meth:`~mmfuse.encoders.base.Encoder.device_for`). None when it takes no ``device``
    (the classical ones run on the CPU)."""
    from .encoders.registry import ENCODERS, load_builtin

    load_builtin()
    builder = ENCODERS.entry(name).builder
    try:
        takes = "device" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        takes = False
    device_for = getattr(builder, "device_for", None)
    return device_for(device) if takes and device_for is not None else None


def place_encoders(spec: Any, columns: Any, device: str) -> Any:
    """An encoder spec (``{column: name}`` or ``"auto"``) with every encoder that takes a
    device built for ``device`` (resolved). Columns of pre-extracted arrays (spec None)
    stay as they are."""
    from .encoders.base import Encoder
    from .encoders.featurizer import is_passthrough, resolve_encoders
    from .encoders.registry import create_encoder

    if spec is None:
        return None
    out: dict[str, Any] = {}
    for col, enc in resolve_encoders(spec, columns).items():
        if isinstance(enc, str) and "+" in enc:
            out[col] = enc  # a concatenation: its parts run where they run
        elif isinstance(enc, str) and not is_passthrough(enc):
            where = encoder_device(enc, device)
            out[col] = enc if where is None else create_encoder(enc, device=where)
        elif isinstance(enc, Encoder) and "device" in vars(enc):
            out[col] = create_encoder(enc).to(device)
        else:
            out[col] = enc
    return out


def head_params(strategies: Sequence[str], device: str,
                params: Mapping[str, Mapping[str, Any]] | None = None
                ) -> dict[str, dict[str, Any]]:
    """Per-strategy parameters (as ``evaluate(fusion_params=...)`` takes them) putting the
    learned heads on ``device``, directly or as candidates of ``auto``."""
    from .fusion.base import FUSIONS, fusions_with

    heads = fusions_with(takes_device=True)
    out = {k: dict(v) for k, v in (params or {}).items()}
    for name in strategies:
        if name in heads:
            out.setdefault(name, {})["device"] = device
        elif name in FUSIONS.names() and _takes_candidate_params(FUSIONS.entry(name).builder):
            # a strategy choosing among others (``auto``): its head candidates on ``device``
            candidate = dict(out.setdefault(name, {}).get("candidate_params") or {})
            for head in heads:
                candidate[head] = {**dict(candidate.get(head, {})), "device": device}
            out[name]["candidate_params"] = candidate
    return out


def _takes_candidate_params(builder: Any) -> bool:
    """Whether a strategy class passes parameters on to candidate strategies (its own
    ``candidate_params`` parameter declares it)."""
    names = getattr(builder, "_get_param_names", None)
    return callable(names) and "candidate_params" in names()
