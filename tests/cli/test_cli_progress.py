"""One progress reporter for every command: rich bars on a terminal, plain timestamped
lines (throttled) elsewhere, nothing with --quiet; the library reports through callbacks."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

from conftest import REPO, make_views, number_frame
from mmfuse.cli import app
from mmfuse.cli._progress import Progress

runner = CliRunner()
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d (.+): (\d+)/(\d+)( \(\d+%\))?, \S+ elapsed$",
                  re.MULTILINE)


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=100), buffer


def test_plain_lines_are_timestamped_and_at_most_one_per_interval():
    console, buffer = _console(terminal=False)
    clock = Clock()
    with Progress(False, console, interval=5.0, clock=clock) as progress:
        for t, done in [(0, 0), (1, 1), (4.9, 2), (5.0, 3), (6, 4), (9.9, 5), (10.5, 6)]:
            clock.t = 100.0 + t
            progress("cross-validation", done, 6)
    found = LINE.findall(buffer.getvalue())
    assert [(stage, done) for stage, done, _, _ in found] == [
        ("cross-validation", "0"), ("cross-validation", "3"), ("cross-validation", "6")]
    assert "(50%), 5s elapsed" in buffer.getvalue()


def test_quiet_gives_no_callback_and_prints_nothing():
    for terminal in (False, True):
        console, buffer = _console(terminal)
        with Progress(True, console) as progress:
            assert progress is None
        assert buffer.getvalue() == ""


def test_a_terminal_gets_rich_bars_not_lines():
    console, buffer = _console(terminal=True)
    with Progress(False, console) as progress:
        progress("features: image", 3, 10)
        progress("features: image", 10, 10)
        progress("cross-validation", 1, 5)
    assert not LINE.search(buffer.getvalue())
    assert "features: image" in buffer.getvalue()  # drawn by rich (transient)


def _stages(output: str) -> set[str]:
    return {stage for stage, *_ in LINE.findall(output)}


@pytest.fixture
def manifest(tmp_path):
    df, y = number_frame(n=90)
    df["label"] = y
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    return path


def test_train_predict_and_audit_report_progress(tmp_path, manifest):
    model = tmp_path / "m.mmfuse"
    common = ["--text", "left", "--label", "label", "--encoders", "text=test-number"]
    result = runner.invoke(app, ["train", "--manifest", str(manifest), *common,
                                 "--out", str(model)])
    assert result.exit_code == 0, result.output
    assert "features: text" in _stages(result.output)  # the first line of the run
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(manifest)])
    assert result.exit_code == 0, result.output
    assert _stages(result.output) == {"features: text"}
    result = runner.invoke(app, ["audit", str(model), "--members", str(manifest),
                                 "--non-members", str(manifest), "--bootstrap", "10"])
    assert result.exit_code == 0, result.output
    assert "members: features: text" in _stages(result.output)
    quiet = runner.invoke(app, ["predict", str(model), "--manifest", str(manifest), "-q"])
    assert quiet.exit_code == 0 and not LINE.search(quiet.output)


def test_extract_reports_progress(tmp_path):
    pytest.importorskip("pyarrow")
    from PIL import Image

    rows = []
    for i in range(6):
        Image.fromarray(np.full((16, 16), i * 40, np.uint8)).save(tmp_path / f"{i}.png")
        rows.append({"image": f"{i}.png", "label": i % 2})
    import pandas as pd

    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    result = runner.invoke(app, ["extract", "--manifest", str(tmp_path / "m.csv"), "--image",
                                 "image", "--encoders", "image=pixels", "--out",
                                 str(tmp_path / "store"), "--shard-size", "2", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "shards" in _stages(result.output)


def test_run_with_stderr_a_pipe_writes_timestamped_lines(tmp_path):
    """The real thing: `mmfuse run ... 2>log` shows where it is while it runs."""
    views, y = make_views(n=120)
    for name, arr in (("a", views["a"]), ("b", views["b"]), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    args = [sys.executable, "-m", "mmfuse", "run", "--views",
            f"a={tmp_path / 'a.npy'},b={tmp_path / 'b.npy'}", "--labels",
            str(tmp_path / "y.npy"), "--cv", "2", "--fusion", "late", "--jobs", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "cross-validation" in _stages(done.stderr), done.stderr
    assert not LINE.search(done.stdout)  # the results table stays clean on stdout
    quiet = subprocess.run([*args, "--quiet"], capture_output=True, text=True, env=env,
                           timeout=300)
    assert quiet.returncode == 0 and not LINE.search(quiet.stderr), quiet.stderr
