"""CLI: mmfuse train/run --epsilon, mmfuse audit."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import make_views
from mmfuse.cli import app

runner = CliRunner()


def _views(tmp_path, n=300, seed=0):
    views, y = make_views(n=n, seed=seed)
    np.save(tmp_path / "a.npy", views["a"])
    np.save(tmp_path / "b.npy", views["b"])
    np.save(tmp_path / "y.npy", y)
    return ["--views", f"image={tmp_path / 'a.npy'},text={tmp_path / 'b.npy'}",
            "--labels", str(tmp_path / "y.npy")]


def test_run_and_train_with_epsilon(tmp_path):
    from mmfuse.privacy.dp import import_diffprivlib

    try:
        import_diffprivlib()
    except ImportError:
        pytest.skip('needs pip install "mmfuse[privacy]"')
    source = _views(tmp_path)
    out = tmp_path / "dp.json"
    result = runner.invoke(app, ["run", *source, "--epsilon", "2", "--cv", "3", "--no-progress",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert [r["name"] for r in doc["rows"]] == ["image", "text", "early", "late"]
    assert doc["cv"]["epsilon"] == 2.0 and doc["cv"]["delta"] == 1e-5
    result = runner.invoke(app, ["run", *source, "--epsilon", "2", "--fusion", "stacking",
                                 "--no-progress"])
    assert result.exit_code == 2 and "must be one of ['early', 'late']" in result.output
    model = tmp_path / "dp.mmfuse"
    result = runner.invoke(app, ["train", *source, "--epsilon", "1", "--delta", "0",
                                 "--save-model", str(model)])
    assert result.exit_code == 0, result.output
    assert "spent epsilon=1, delta=0" in result.output


def test_audit_reports_auc_with_ci(tmp_path):
    # an overfitting model (1-NN-like: many features, few rows) against a private-ish one
    rng = np.random.default_rng(0)
    n, d = 60, 200
    y = rng.integers(0, 2, 2 * n)
    x = rng.normal(size=(2 * n, d)) + 0.3 * y[:, None]
    frame = pd.DataFrame({"text": [" ".join(f"w{int(abs(v) * 3)}_{j}" for j, v in enumerate(row[:30]))
                                   for row in x], "label": y})
    frame.iloc[:n].to_csv(tmp_path / "members.csv", index=False)
    frame.iloc[n:].to_csv(tmp_path / "others.csv", index=False)
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--manifest", str(tmp_path / "members.csv"), "--text",
                                 "text", "--label", "label", "--fusion", "early",
                                 "--weights", "equal", "--save-model", str(model)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "audit.json"
    result = runner.invoke(app, ["audit", str(model), "--members", str(tmp_path / "members.csv"),
                                 "--non-members", str(tmp_path / "others.csv"),
                                 "--bootstrap", "200", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert {a["name"] for a in doc["attacks"]} == {"loss", "confidence"}
    loss = next(a for a in doc["attacks"] if a["name"] == "loss")
    # memorised training rows: the loss attack separates them clearly
    assert loss["auc"] > 0.8 and loss["auc_ci95"][0] > 0.5
    assert doc["accuracy_members"] > doc["accuracy_non_members"]
    assert "leaks membership" in result.output
    assert str(tmp_path) not in out.read_text()
