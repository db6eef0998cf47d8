import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import make_views, number_frame
from mmfuse.cli import app

runner = CliRunner()


def test_run_with_seed_arrays_writes_the_json_contract(tmp_path):
    views, y = make_views(n=200)
    np.save(tmp_path / "images.npy", views["a"])
    np.save(tmp_path / "texts.npy", views["b"])
    np.save(tmp_path / "labels.npy", y)
    out = tmp_path / "out.json"
    result = runner.invoke(app, ["run", "--views", f"image={tmp_path/'images.npy'},text={tmp_path/'texts.npy'}",
                                 "--labels", str(tmp_path / "labels.npy"), "--cv", "3",
                                 "--fusion", "late,stacking", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "seed-baseline" in result.output and "best:" in result.output
    doc = json.loads(out.read_text())
    assert doc["n_samples"] == 200 and doc["n_classes"] == 4
    assert doc["cv"] == {"kind": "stratified", "n_splits": 3}
    assert [r["name"] for r in doc["rows"]] == ["image", "text", "late", "stacking", "seed-baseline"]
    assert doc["rows"][0]["kind"] == "single" and doc["rows"][0]["fusion"] is None
    assert doc["best"] in {"late", "stacking"}


def test_run_with_a_manifest_and_groups(tmp_path):
    df, y = number_frame(n=150)
    df["label"] = y
    df["speaker"] = np.arange(150) % 5
    df.to_csv(tmp_path / "m.csv", index=False)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "left",
                                 "--label", "label", "--group", "speaker",
                                 "--encoders", "text=test-number", "--json", str(out),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["cv"] == {"kind": "group", "n_splits": 5}
    assert [r["name"] for r in doc["rows"]] == ["text"]


@pytest.mark.parametrize("args, message", [
    (["run"], "exactly one of --manifest, --views or --dataset"),
    (["run", "--manifest", "nope.csv", "--text", "t", "--label", "l"], "does not exist"),
    (["run", "--views", "image=a.npy"], "--views needs --labels"),
    (["run", "--views", "image", "--labels", "l.npy"], "NAME=VALUE"),
    (["run", "--dataset", "nope"], "unknown dataset"),
])
def test_run_errors_are_messages_not_tracebacks(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_unknown_strategy_and_encoder(tmp_path):
    df, y = number_frame(n=60)
    df["label"] = y
    df.to_csv(tmp_path / "m.csv", index=False)
    base = ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "left", "--label", "label"]
    result = runner.invoke(app, base + ["--encoders", "text=magic"])
    assert result.exit_code == 2 and "unknown encoder 'magic'" in result.output
    result = runner.invoke(app, base + ["--encoders", "text=test-number", "--fusion", "nope"])
    assert result.exit_code == 2 and "unknown fusion strategy" in result.output


def test_listing_commands():
    for cmd, expected in [("encoders", "test-number"), ("strategies", "stacking"),
                          ("datasets", "av-digits")]:
        result = runner.invoke(app, [cmd])
        assert result.exit_code == 0, result.output
        assert expected in result.output
    assert "mmfuse" in runner.invoke(app, ["--version"]).output


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mmfuse", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("mmfuse ")
