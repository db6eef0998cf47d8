"""How the CLI answers a usage mistake: one clean line on stderr and exit 2 (no usage box,
no exception class name, no ``--debug`` hint), and the renamed options' old names, kept as
hidden aliases for one release.

typer (0.29 and later) carries its own copy of click, so typer's parameter errors are not
``click``'s classes: the group below catches typer's. pyproject bounds typer to the
versions this was tested with.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

try:  # typer >= 0.29 vendors click
    from typer._click import exceptions as _click_exceptions
except ImportError:  # pragma: no cover - older typer builds on click itself
    from click import exceptions as _click_exceptions

UsageError = _click_exceptions.UsageError
ClickException = _click_exceptions.ClickException
Abort = typer.Abort

#: Per command: an old option name -> its new name (None: the old flag is now the default
#: and is dropped). Accepted, with a warning, for one release; not shown in --help.
RENAMED: Mapping[str, Mapping[str, str | None]] = {
    **{cmd: {"--json": "--json-out", "--no-progress": "--quiet", "--progress": None}
       for cmd in ("run", "evaluate", "demo")},
    "train": {"--save-model": "--out"},
    "extract": {"--workers": "--jobs", "--no-progress": "--quiet", "--progress": None},
    "audit": {"--json": "--json-out"},
}

_err = Console(stderr=True, soft_wrap=True)


def rename_legacy(command: str, args: Sequence[str], warn: Any = None) -> list[str]:
    """``args`` with the old option names of ``command`` replaced by the new ones (both
    ``--old VALUE`` and ``--old=VALUE``); ``warn(old, new)`` is called once per old name."""
    renamed = RENAMED.get(command, {})
    out: list[str] = []
    seen: set[str] = set()
    for i, arg in enumerate(args):
        if arg == "--":
            out.extend(args[i:])
            break
        name, eq, value = arg.partition("=")
        if name in renamed:
            new = renamed[name]
            if warn is not None and name not in seen:
                warn(name, new)
            seen.add(name)
            if new is not None:
                out.append(f"{new}{eq}{value}")
            continue
        out.append(arg)
    return out


def _warn_renamed(old: str, new: str | None) -> None:
    what = f"use {new}" if new else "it is the default"
    _err.print(f"[yellow]warning:[/yellow] {escape(old)} is deprecated ({what}); the old "
               f"name goes in the next release", highlight=False)


def usage_line(exc: Any) -> str:
    """One line for a usage error: what was wrong and where the command's help is."""
    message = " ".join(exc.format_message().split())
    message = message.replace("Value error, ", "").rstrip(".")  # typer's coercion prefix
    ctx = getattr(exc, "ctx", None)
    where = ""
    if ctx is not None and ctx.command.get_help_option(ctx) is not None:
        where = f" (see '{ctx.command_path} --help')"
    return f"error: {message}{where}"


class MmfuseGroup(TyperGroup):
    """The top-level group: maps renamed options and prints usage errors as one line."""

    def resolve_command(self, ctx: Any, args: list[str]) -> tuple[Any, Any, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if name:
            rest = rename_legacy(name, rest, _warn_renamed)
        return name, cmd, rest

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError as exc:
            if exc.format_message().strip():  # rich help was printed as the error was made
                _err.print(exc.format_message(), markup=False, highlight=False)
            sys.exit(2)
        except UsageError as exc:
            _err.print(usage_line(exc), markup=False, highlight=False)
            sys.exit(2)
        except ClickException as exc:
            _err.print(f"error: {' '.join(exc.format_message().split())}", markup=False,
                       highlight=False)
            sys.exit(exc.exit_code)
        except Abort:
            _err.print("aborted", markup=False, highlight=False)
            sys.exit(1)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)
