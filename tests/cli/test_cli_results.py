"""The results table: a best whose 95% interval overlaps the runner-up's is marked tied,
in the table and in the JSON; the caption says what the interval is."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from conftest import make_views
from mmfuse.cli import app

runner = CliRunner()


def test_an_overlapping_best_is_marked_tied(tmp_path):
    views, y = make_views(n=120)
    for name, arr in (("a", views["a"]), ("b", views["b"]), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    out = tmp_path / "r.json"
    # two folds: the t-interval of a two-fold mean is wide, so the top two overlap
    result = runner.invoke(app, ["run", "--views", f"a={tmp_path / 'a.npy'},b={tmp_path / 'b.npy'}",
                                 "--labels", str(tmp_path / "y.npy"), "--cv", "2",
                                 "--fusion", "late,early", "--jobs", "1", "-q",
                                 "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    tied = doc["best_tied_with"]
    assert tied in {r["name"] for r in doc["rows"]} and tied != doc["best"]
    assert f"best: {doc['best']}, tied with {tied} (their 95% CIs overlap)" in " ".join(
        result.output.split())
    assert f"{doc['best']} (tied)" in result.output and f"{tied} (tied)" in result.output
    assert "t-interval of that mean over the" in result.output
