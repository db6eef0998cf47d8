"""Encoders are created by name: ``create_encoder("hog")``; ``list_encoders()`` shows them all."""

from __future__ import annotations

from typing import Any, Callable

from .._errors import InputError
from .._registry import Registry
from .base import Encoder

ENCODERS: Registry[Encoder] = Registry("encoder")


def register_encoder(name: str, *, modality: str, dim: int | None, description: str = "",
                     extra: str | None = None, default: bool = False,
                     auto_rank: int | None = None, cost: float | None = None,
                     variant_of: str | None = None) -> Callable:
    """Decorator registering an encoder builder (a class or a function returning an Encoder).

    The encoder declares its own properties here; nothing outside the registry switches on
    encoder names.

    Parameters
    ----------
    dim : int or None
        The output dimension (None when it depends on the data, e.g. TF-IDF).
    extra : str, optional
        The ``mmfuse[extra]`` the encoder needs, if any.
    default : bool, default=False
        The modality's default encoder: needs no optional package (one per modality).
    auto_rank : int, optional
        A candidate of ``encoders="auto"``: lower ranks are preferred when their packages
        are installed; the default encoder is the last resort.
    cost : float, optional
        Relative cost of encoding one item (order of magnitude, from the "extraction"
        benchmark): choosing among equally good encoders leans toward the cheaper one.
        None: :data:`mmfuse.encoders.candidates.DEFAULT_COST`.
    variant_of : str, optional
        The encoder this one is a privacy variant of (it exists for privacy, not accuracy):
        ``encoders="auto"`` leaves it out when that encoder is installed.
    """
    return ENCODERS.register(name, modality=modality, dim=dim, description=description,
                             extra=extra, default=default, auto_rank=auto_rank, cost=cost,
                             variant_of=variant_of)


def create_encoder(name: str | Encoder, **kwargs: Any) -> Encoder:
    """Build a fresh encoder by registered name (an Encoder instance is returned as a copy).

    Names joined by ``+`` (``"tfidf+minilm"``) build a
    :class:`~mmfuse.encoders.concat.ConcatEncoder`: the encoders' features side by side."""
    _load_builtin()
    if isinstance(name, Encoder):
        import copy

        return copy.deepcopy(name)
    if isinstance(name, str) and "+" in name:  # several encoders side by side
        from .concat import ConcatEncoder, split_name

        names = split_name(name)
        if len(names) < 2 or not all(names):
            raise InputError(f"a concatenation needs at least 2 encoder names joined by '+'; "
                             f"got {name!r}")
        enc = ConcatEncoder(names).set_parts([create_encoder(n) for n in names])
        for key, value in kwargs.items():
            setattr(enc, key, value)
        return enc
    return ENCODERS.create(name, **kwargs)


def list_encoders(modality: str | None = None) -> list[dict[str, Any]]:
    """Registered encoders as dicts: name, modality, dim, description, extra."""
    _load_builtin()
    rows = []
    for name in ENCODERS.names():
        meta = ENCODERS.entry(name).meta
        if modality is None or meta["modality"] == modality:
            rows.append({"name": name, **meta})
    return rows


def default_encoder(modality: str) -> str:
    """The modality's default encoder (registered with ``default=True``)."""
    _load_builtin()
    for name in ENCODERS.names():
        meta = ENCODERS.entry(name).meta
        if meta["modality"] == modality and meta.get("default"):
            return name
    raise ValueError(f"no default encoder for modality {modality!r}; modalities with one: "
                     f"{sorted({ENCODERS.entry(n).meta['modality'] for n in ENCODERS.names() if ENCODERS.entry(n).meta.get('default')})}")


def auto_candidates(modality: str) -> tuple[str, ...]:
    """The encoders ``encoders="auto"`` tries for a modality, best first (by ``auto_rank``),
    ending with the default encoder."""
    _load_builtin()
    ranked = sorted((ENCODERS.entry(n).meta["auto_rank"], n) for n in ENCODERS.names()
                    if ENCODERS.entry(n).meta["modality"] == modality
                    and ENCODERS.entry(n).meta.get("auto_rank") is not None)
    return (*(n for _, n in ranked), default_encoder(modality))


def encoder_modality(name: str) -> str:
    _load_builtin()
    return ENCODERS.entry(name).meta["modality"]


def check_modality(column: str, spec: Any) -> None:
    """A column named like a modality (``image``, ``text``, ``audio``) takes only encoders
    of that modality: TF-IDF on image paths reads the file names, which can hold the label.

    Raises
    ------
    InputError
        Naming the column, the encoder and the encoders that fit the column.
    """
    from .base import MODALITIES
    from .concat import split_name

    if column not in MODALITIES:
        return
    # registered names (``a+b``: each part), or the names a column chooses from (Candidates)
    names = [spec] if isinstance(spec, str) else getattr(spec, "names", None)
    if isinstance(names, (list, tuple)):
        found = {n: "/".join(sorted({encoder_modality(p) for p in split_name(n)}))
                 for n in names}
    else:  # an Encoder instance declares its modality as a class attribute
        found = {getattr(spec, "name", type(spec).__name__): getattr(spec, "modality", column)}
    wrong = {n: m for n, m in found.items() if m != column}
    if wrong:
        name, modality = next(iter(wrong.items()))
        fits = ", ".join(e["name"] for e in list_encoders(column))
        raise InputError(f"encoder {name!r} encodes {modality}, not {column}: column "
                         f"{column!r} takes one of {fits}")


def load_builtin() -> None:
    """Import the built-in encoder modules, which registers their encoders."""
    _load_builtin()


def _load_builtin() -> None:
    # Importing the modules registers their encoders; pretrained ones import heavy packages
    # only when an encoder is built, so this stays cheap. Every public module of the two
    # encoder families (classical/, pretrained/) is imported, so a new encoder module is
    # found without being listed; tabular.py is the one encoder module outside them.
    import importlib
    import importlib.util
    import pkgutil

    for family in ("classical", "pretrained", "tabular"):
        if importlib.util.find_spec(f"{__package__}.{family}") is None:
            continue
        package = importlib.import_module(f"{__package__}.{family}")
        for info in pkgutil.iter_modules(getattr(package, "__path__", [])):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
