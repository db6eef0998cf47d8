"""The mmfuse command line (typer): the only package that prints or exits.

``app`` (entry point ``mmfuse.cli:main``) is built in :mod:`._common`; each module here adds
one group of commands, imported below in the order ``mmfuse --help`` lists them.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import _common
from ._common import app, console
from . import run, model, audit, features, catalogue, demo  # noqa: E402,F401 - register commands

__all__ = ["app", "main"]


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
          debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks of errors.")] = False) -> None:
    _common._DEBUG = debug
    if version:
        from .. import __version__

        console.print(f"mmfuse {__version__}")
        raise typer.Exit()


def main() -> None:
    app()

