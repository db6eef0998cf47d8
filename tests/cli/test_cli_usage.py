"""Usage mistakes are one clean line and exit 2; -h; the renamed options' old names; the
choice types and help panels; no help text loses a [bracket] to rich markup."""

from __future__ import annotations

import json

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from conftest import make_views
from mmfuse.cli import app
from mmfuse.cli._usage import RENAMED, rename_legacy

runner = CliRunner()


def _one_clean_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert line.startswith("error: ")
    for noise in ("Traceback", "--debug", "BadParameter", "ValueError", "UsageError", "╭", "│"):
        assert noise not in line, line
    return line


@pytest.mark.parametrize("args, says", [
    (["run", "--dataset", "av-digits", "--cv", "1"], "--cv': expected an integer >= 2 or 'loso'; got '1'"),
    (["run", "--dataset", "av-digits", "--cv", "abc"], "expected an integer >= 2 or 'loso'; got 'abc'"),
    (["run", "--dataset", "av-digits", "--device", "gpu"], "'gpu' is not one of 'auto', 'cpu', 'cuda'"),
    (["run", "--dataset", "av-digits", "--weights", "best"], "'best' is not one of 'cv', 'relative', 'equal'"),
    (["train", "--dataset", "av-digits", "--out", "m.mmfuse", "--on-error", "ignore"],
     "'ignore' is not one of 'raise', 'skip'"),
    (["predict", "m.mmfuse", "--manifest", "m.csv", "--device", "tpu"], "'tpu' is not one of"),
    (["serve", "m.mmfuse", "--device", "gpu"], "'gpu' is not one of"),
    (["encoders", "--modality", "smell"], "'smell' is not one of 'image', 'text', 'audio', 'tabular'"),
    (["run", "--dataset", "av-digits", "--pooling", "median"], "'median' is not one of 'mean', 'max'"),
    (["run", "--seed", "x"], "Invalid value for '--seed'"),
    (["run", "--bogus"], "No such option: --bogus"),
    (["bogus"], "No such command 'bogus'"),
    (["train", "--dataset", "av-digits"], "Missing option '--out'"),
    (["run"], "give exactly one of --manifest, --views or --dataset"),
])
def test_usage_mistakes_are_one_clean_line_and_exit_2(args, says):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _one_clean_line(result)
    assert says in line
    assert "--help'" in line or "give exactly one" in line


def test_cv_accepts_integers_from_2_and_loso(seed_arrays):
    tmp, source = seed_arrays
    out = tmp / "r.json"
    result = runner.invoke(app, ["run", *source, "--cv", "2", "--fusion", "late", "--quiet",
                                 "--jobs", "1", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["cv"]["n_splits"] == 2
    # 'loso' passes the parser: the library then asks for groups, as before
    result = runner.invoke(app, ["run", *source, "--cv", "loso", "--fusion", "late", "--quiet"])
    assert "expected an integer" not in result.output


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["train", "-h"], ["cache", "-h"]])
def test_dash_h_is_help(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_run_help_is_grouped_in_panels():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    positions = [result.output.find(f"─ {panel} ") for panel in
                 ("Input", "Encoders", "Fusion", "Evaluation", "Privacy", "Output")]
    assert -1 not in positions and positions == sorted(positions), result.output
    assert "mmfuse[privacy]" in result.output  # was "(needs mmfuse)": markup ate [privacy]


def _commands(group, prefix=()):
    for name, cmd in sorted(group.commands.items()):
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*prefix, name))
        else:
            yield (*prefix, name), cmd


def test_no_help_text_loses_brackets_to_rich_markup():
    command = typer.main.get_command(app)
    texts = [command.help or ""]
    for _, cmd in _commands(command):
        texts.append(cmd.help or "")
        texts.extend(getattr(p, "help", None) or "" for p in cmd.params)
    assert len(texts) > 100
    for text in texts:
        # what rich shows must be the text itself, with \[ read as a literal [
        assert Text.from_markup(text).plain == text.replace("\\[", "["), text


def test_renamed_options_are_hidden_aliases(seed_arrays):
    tmp, source = seed_arrays
    new_out, old_out = tmp / "new.json", tmp / "old.json"
    new = runner.invoke(app, ["run", *source, "--cv", "2", "--fusion", "late", "--jobs", "1",
                              "--quiet", "--json-out", str(new_out)])
    old = runner.invoke(app, ["run", *source, "--cv", "2", "--fusion", "late", "--jobs", "1",
                              "--no-progress", f"--json={old_out}"])
    assert new.exit_code == 0 and old.exit_code == 0, old.output
    def scores(path):
        return [(r["name"], r["accuracy"]) for r in json.loads(path.read_text())["rows"]]

    assert scores(old_out) == scores(new_out)
    assert "--json is deprecated (use --json-out)" in old.output
    assert "--no-progress is deprecated (use --quiet)" in old.output
    model = tmp / "m.mmfuse"
    result = runner.invoke(app, ["train", *source, "--save-model", str(model)])
    assert result.exit_code == 0, result.output
    assert model.is_file() and "--save-model is deprecated (use --out)" in result.output
    help_text = runner.invoke(app, ["train", "--help"]).output + runner.invoke(
        app, ["run", "--help"]).output + runner.invoke(app, ["extract", "--help"]).output
    for old_name in ("--save-model", "--json ", "--workers", "--no-progress"):
        assert old_name not in help_text


def test_rename_legacy_keeps_values_and_everything_after_double_dash():
    assert rename_legacy("extract", ["--workers", "4", "--workers=2", "--", "--workers"]) == [
        "--jobs", "4", "--jobs=2", "--", "--workers"]
    assert rename_legacy("run", ["--progress", "--cv", "3"]) == ["--cv", "3"]
    assert rename_legacy("predict", ["--json", "x"]) == ["--json", "x"]  # not renamed there
    assert all(old.startswith("--") for renames in RENAMED.values() for old in renames)


def test_listing_json_flag_is_unchanged():
    result = runner.invoke(app, ["strategies", "--json"])
    assert result.exit_code == 0
    assert any(s["name"] == "late" for s in json.loads(result.stdout))


@pytest.fixture
def seed_arrays(tmp_path):
    import numpy as np

    views, y = make_views(n=120)
    np.save(tmp_path / "a.npy", views["a"])
    np.save(tmp_path / "b.npy", views["b"])
    np.save(tmp_path / "y.npy", y)
    return tmp_path, ["--views", f"a={tmp_path / 'a.npy'},b={tmp_path / 'b.npy'}",
                      "--labels", str(tmp_path / "y.npy")]
