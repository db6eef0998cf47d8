"""The JSON record of an evaluation (``mmfuse run --json``, ``EvaluationResult.to_dict()``).

A full record of the run, checked against ``run.schema.json`` (shipped in the package:
:func:`schema`): per row the fold-mean and per-fold accuracy and macro-F1, the weights
each fold's fitted strategy used and whether they fell back to equal weights; the encoders
(and those chosen per fold), the class names, the CV, the seed, the versions that produced
it and, from the command line, the command. It carries no training text, paths or ids: the
command's file arguments are reduced to their names (:func:`reduce_paths`).
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: what ``format`` says in every record, and the version of its layout
FORMAT, FORMAT_VERSION = "mmfuse-run", 1
_LIBRARIES = ("numpy", "scipy", "pandas", "scikit-learn", "onnxruntime", "torch")


def versions() -> dict[str, str | None]:
    """mmfuse, Python and the libraries a result depends on (None: not installed)."""
    from .. import __version__

    out: dict[str, str | None] = {"mmfuse": __version__, "python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def reduce_paths(argv: Iterable[str], path_options: Iterable[str] = ()) -> list[str]:
    """The command line with every file reduced to its name: the values of
    ``path_options`` (``--opt=value`` forms included), and any token, or ``key=value``
    value of a comma list (``--views image=a/x.npy``), that names an existing file or
    folder, or a file to be written in an existing folder (``--json out/r.json``).
    ``data/m.csv`` becomes ``m.csv``; ``text=tfidf/minilm`` stays."""
    path_options = set(path_options)
    out: list[str] = []
    after_path_option = False
    for token in map(str, argv):
        if after_path_option:
            out.append(_name(token))
        elif token.startswith("--") and "=" in token:
            opt, _, value = token.partition("=")
            out.append(f"{opt}={_name(value) if opt in path_options else _reduce_list(value)}")
        else:
            out.append(_reduce_list(token))
        after_path_option = token in path_options
    return out


def _name(value: str) -> str:
    return Path(value).name or value


def _reduce_list(token: str) -> str:
    if _is_path(token):
        return _name(token)
    parts = []
    for part in token.split(","):
        key, sep, value = part.partition("=")
        parts.append(f"{key}={_name(value)}" if sep and _is_path(value) else part)
    return ",".join(parts)


def _is_path(value: str) -> bool:
    if not value or value.startswith("-") or value in (".", ".."):
        return False
    try:
        return os.path.exists(value) or (
            any(sep in value for sep in (os.sep, os.altsep) if sep)
            and os.path.isdir(os.path.dirname(value)))
    except (OSError, ValueError):
        return False


def _plain(value: Any) -> Any:
    """numpy scalars (class names) as JSON values."""
    return value.item() if hasattr(value, "item") else value


def _row(row: Any) -> dict[str, Any]:
    d = {"name": row.name, "kind": row.kind, "modalities": list(row.modalities),
         "fusion": row.fusion,
         "weights": row.weights if isinstance(row.weights, (str, type(None)))
         else {m: float(v) for m, v in dict(row.weights).items()},
         "accuracy": float(row.accuracy),
         "accuracy_ci95": [float(v) for v in row.accuracy_ci95],
         "macro_f1": float(row.macro_f1), "seconds": float(row.seconds),
         "fold_accuracy": [float(v) for v in row.fold_accuracy],
         "fold_macro_f1": [float(v) for v in row.fold_macro_f1],
         "modality_weights": None if row.modality_weights is None
         else {m: float(v) for m, v in row.modality_weights.items()},
         "fold_weights": [None if w is None else {m: float(v) for m, v in w.items()}
                          for w in row.fold_weights],
         "weights_fallback": list(row.weights_fallback)}
    if row.chosen:
        d["chosen"] = list(row.chosen)
    if getattr(row, "uncertainty", None):
        d["uncertainty"] = row.uncertainty
    return d


def run_record(result: Any, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """The JSON document of an :class:`~mmfuse.evaluate.EvaluationResult`.

    Parameters
    ----------
    result : EvaluationResult
    argv : sequence of str, optional
        The command that ran (recorded as given: reduce its paths first, as the CLI does
        with :func:`reduce_paths`); None records ``"command": null``.
    """
    seed = result.random_state
    out: dict[str, Any] = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "versions": versions(),
        "command": None if argv is None else [str(a) for a in argv],
        "seed": int(seed) if isinstance(seed, (int, float)) or hasattr(seed, "item") else None,
        "n_samples": int(result.n_samples), "n_classes": int(result.n_classes),
        "classes": [_plain(c) for c in result.classes], "cv": dict(result.cv),
        "inner_cv": result.inner_cv, "encoders": dict(result.encoders),
        "path": getattr(result, "path", "in-memory"),
        "rows": [_row(r) for r in result.rows], "best": result.best.name,
        "best_tied_with": result.best_tied_with,
        "weights_fallback": sorted({r.name for r in result.rows
                                    if any(f for f in r.weights_fallback)}),
    }
    if result.chosen_encoders:
        out["chosen_encoders"] = [dict(c) for c in result.chosen_encoders]
    spec = getattr(result, "uncertainty", None)
    if spec is not None and spec.fits:
        out["uncertainty"] = {"calibration": spec.calibration,
                              "coverage": [float(c) for c in spec.coverage],
                              "scores": list(spec.scores), "mondrian": bool(spec.mondrian),
                              "mask": {m: float(v) for m, v in spec.mask.items()}}
    return out


def schema() -> dict[str, Any]:
    """The JSON schema (draft 2020-12) every record follows (``run.schema.json``)."""
    from importlib import resources

    return json.loads(resources.files(__package__).joinpath("run.schema.json").read_text())
