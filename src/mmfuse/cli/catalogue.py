"""``mmfuse encoders``, ``strategies`` and ``datasets``: what is registered."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .._constants import MODALITIES
from ._common import app, console, _choices, _errors


ListJsonOpt = Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")]


def _print_listing(title: str, columns: list[str], rows: list[list[str]], records: list[Any],
                   as_json: bool, **table_kw: Any) -> None:
    """A listing: JSON (``--json``), a rich table on a terminal, else plain tab-separated
    rows (header first), never truncated or wrapped, so ``| grep`` and ``| cut`` work."""
    import json

    if as_json:
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
    elif console.is_terminal:
        table = Table(title=title, title_justify="left", **table_kw)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*[escape(cell) for cell in row])  # "mmfuse[image]" is not markup
        console.print(table)
    else:
        for row in [columns, *rows]:
            sys.stdout.write("\t".join(" ".join(cell.split()) for cell in row) + "\n")


@app.command("encoders")
def encoders_cmd(
    modality: Annotated[Optional[_choices((*MODALITIES, "tabular"))], typer.Option(help="Only this modality.")] = None,
    as_json: ListJsonOpt = False,
) -> None:
    """List the registered encoders with their modality and output dimension."""
    from ..encoders import list_encoders

    with _errors():
        records = list_encoders(modality)
        rows = []
        for e in records:
            needs = f'pip install "mmfuse[{e["extra"]}]"' if e.get("extra") else ""
            rows.append([e["name"], e["modality"], "data" if e["dim"] is None else str(e["dim"]),
                         needs, e.get("description", "")])
        _print_listing("encoders", ["name", "modality", "dim", "needs", "description"], rows,
                       records, as_json)


@app.command("strategies")
def strategies_cmd(as_json: ListJsonOpt = False) -> None:
    """List the registered fusion strategies."""
    from ..fusion import list_fusions

    with _errors():
        records = list_fusions()
        rows = [[f["name"], f.get("description", ""),
                 f'pip install "mmfuse[{f["extra"]}]"' if f.get("extra") else ""]
                for f in records]
        _print_listing("fusion strategies", ["name", "description", "needs"], rows, records,
                       as_json)


@app.command("datasets")
def datasets_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Show this dataset in full (citation, source...).")] = None,
    as_json: ListJsonOpt = False,
) -> None:
    """List the bundled real datasets (modalities, size, cv, licence); with NAME, one
    dataset in full, with its citation and source."""
    import json

    from ..data.datasets import dataset_info, list_datasets

    with _errors():
        if name is not None:
            info = dataset_info(name)
            if as_json:
                sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
                return
            for key, value in info.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, default=str)
                console.print(f"{key}: {value}", markup=False, highlight=False,
                              soft_wrap=not console.is_terminal)
            return
        records = list_datasets()
        rows = []
        for d in records:
            cv = d.get("cv", {})
            cv_text = cv.get("kind", "") if isinstance(cv, dict) else str(cv)
            if isinstance(cv, dict) and cv.get("n_splits"):
                cv_text += f" ({cv['n_splits']} folds)"
            rows.append([d["name"], ", ".join(d["modalities"]), str(d.get("n_samples", "")),
                         str(d.get("n_classes", "")), cv_text, d.get("licence", "")])
        _print_listing("datasets (`mmfuse datasets NAME`: one in full, with its citation)",
                       ["name", "modalities", "samples", "classes", "cv", "licence"], rows,
                       records, as_json)
