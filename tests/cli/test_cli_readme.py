"""The README's command lines use options the commands have (under their current names)."""

from __future__ import annotations

import re

import typer

from conftest import REPO
from mmfuse.cli import app


def _options() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    found = {"": {o for p in group.params for o in p.opts + p.secondary_opts}}
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            for sub, subcmd in cmd.commands.items():
                found[f"{name} {sub}"] = {o for p in subcmd.params
                                          for o in p.opts + p.secondary_opts}
            continue
        found[name] = {o for p in cmd.params for o in p.opts + p.secondary_opts}
    for opts in found.values():
        opts.update({"-h", "--help"})
    return found


def _command_lines(text: str) -> list[str]:
    """``mmfuse ...`` commands of the README's sh blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = line.split("#")[0]
            for part in re.split(r"&&|\|", line):
                part = re.sub(r"^\s*(\w+=\S+\s+)*", "", part)
                if part.startswith("mmfuse "):
                    lines.append(part.strip())
    return lines


def test_readme_commands_use_existing_options():
    options = _options()
    lines = _command_lines((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(lines) > 15
    checked = 0
    for line in lines:
        words = line.split()[1:]
        name = next((w for w in words if not w.startswith("-")), "")
        if name == "cache":
            name = f"cache {words[words.index('cache') + 1]}"
        if name not in options or " | " in line:
            continue  # e.g. `mmfuse encoders | strategies | datasets`
        for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", line):
            assert flag in options[name] or flag in options[""], (line, flag)
            checked += 1
    assert checked > 40
