"""``mmfuse audit``: membership inference against a saved model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ._common import (MODALITY_OPTIONS, JsonOpt, ModelOnErrorOpt, QuietOpt, _Progress, _errors,
                      _load_input, app, console)


@app.command()
def audit(
    model: Annotated[Path, typer.Argument(help="A model file written by `mmfuse train`.")],
    members: Annotated[Path, typer.Option(help="Manifest of rows the model was trained on.")],
    non_members: Annotated[Path, typer.Option("--non-members", help="Manifest of rows from the same distribution it never saw.")],
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[str, typer.Option(help="Manifest column with the label.")] = "label",
    on_error: ModelOnErrorOpt = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC's 95% CI.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed of the bootstrap.")] = 0,
    json_out: JsonOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Membership-inference audit: can the loss or confidence of the model tell its training
    rows from unseen ones? Prints each attack's AUC with a bootstrap 95% CI."""
    from ..persist import load
    from ..privacy.audit import audit_model

    with _errors():
        fitted = load(model)
        if on_error is not None:
            fitted.on_error = on_error
        if not (image or text or audio):  # the columns it was trained on
            from ..predict import source_columns

            cols, remembered = set(fitted.encoders_), source_columns(fitted)
            image, text, audio = (remembered.get(m, m) if m in cols else None
                                  for m in MODALITY_OPTIONS)
        X_m, y_m, _, _, _ = _load_input(members, image, text, audio, label, None, None, None, None)
        X_n, y_n, _, _, _ = _load_input(non_members, image, text, audio, label, None, None,
                                        None, None)
        with _Progress(quiet) as bar:
            result = audit_model(fitted, X_m, y_m, X_n, y_n, n_bootstrap=bootstrap,
                                 random_state=seed, progress=bar)
        table = Table(title=f"membership audit: {len(y_m)} members, {len(y_n)} non-members",
                      title_justify="left")
        for col in ("attack", "AUC", "95% CI", "advantage"):
            table.add_column(col)
        for a in result.attacks:
            table.add_row(a.name, f"{a.auc:.3f}", f"{a.auc_ci95[0]:.3f}-{a.auc_ci95[1]:.3f}",
                          f"{a.advantage:.3f}")
        console.print(table)
        console.print(f"accuracy: members {result.accuracy_members:.3f}, non-members "
                      f"{result.accuracy_non_members:.3f}", markup=False, highlight=False)
        worst = result.worst
        verdict = ("members are distinguishable (the CI lies above 0.5): the model leaks "
                   "membership" if worst.auc_ci95[0] > 0.5 else
                   "no membership leak detected at this sample size (the CI includes 0.5)")
        console.print(f"worst attack: {worst.name}, AUC {worst.auc:.3f}; {verdict}",
                      markup=False, highlight=False)
        if json_out:
            from .._io import atomic_write_json

            atomic_write_json(json_out, {"model": model.name, **result.to_dict()})
            console.print(f"wrote {json_out}")
