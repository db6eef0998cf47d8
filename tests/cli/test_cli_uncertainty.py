"""`run --calibration --coverage`: probability and set scores in the table and the JSON;
`train --coverage` then `predict --sets`: a set column, the same sets as the library's."""

import json

import jsonschema
import numpy as np
import pandas as pd
from conftest import make_views
from typer.testing import CliRunner

import mmfuse
from mmfuse.cli import app
from mmfuse.evaluate.record import schema

runner = CliRunner()


def arrays(tmp_path, n=240):
    views, y = make_views(n=n)
    for name, arr in (("a", views["a"]), ("b", views["b"]), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    return views, y, ["--views", f"a={tmp_path / 'a.npy'},b={tmp_path / 'b.npy'}",
                      "--labels", str(tmp_path / "y.npy")]


def test_run_reports_calibration_and_set_scores(tmp_path, monkeypatch):
    from mmfuse.cli import _common

    monkeypatch.setattr(_common.console, "width", 300)
    _, _, source = arrays(tmp_path)
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", *source, "--cv", "3", "--fusion", "late",
                                 "--calibration", "temperature", "--coverage", "0.9",
                                 "--json-out", str(out), "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    for header in ("log-loss", "Brier", "ECE", "ECE debiased", "coverage 0.9", "set size", "singletons",
                   "temperature calibration"):
        assert header in result.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, schema())
    assert doc["uncertainty"]["calibration"] == "temperature"
    assert doc["uncertainty"]["coverage"] == [0.9]
    for row in doc["rows"]:
        sets = row["uncertainty"]["sets"]["aps@0.9"]
        assert len(sets["coverage"]["folds"]) == 3
        assert 0.0 <= sets["singletons"]["mean"] <= 1.0
        assert row["uncertainty"]["ece_debiased"]["mean"] <= row["uncertainty"]["ece"]["mean"]


def test_bad_coverage_is_a_usage_error(tmp_path):
    _, _, source = arrays(tmp_path, n=60)
    result = runner.invoke(app, ["run", *source, "--coverage", "90", "--quiet"])
    assert result.exit_code == 2
    assert "--coverage" in result.output and "Traceback" not in result.output


def test_train_with_coverage_then_predict_sets(tmp_path):
    views, y, source = arrays(tmp_path)
    model_path = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", *source, "--fusion", "late", "--calibration",
                                 "temperature", "--coverage", "0.9", "--out", str(model_path),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "calibration: temperature; prediction sets: coverage 0.9 (aps)" in result.output
    manifest = tmp_path / "new.jsonl"
    pd.DataFrame({"a": [list(map(float, r)) for r in views["a"][:20]],
                  "b": [list(map(float, r)) for r in views["b"][:20]]}).to_json(
        manifest, orient="records", lines=True)
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", str(model_path), "--manifest", str(manifest),
                                 "--sets", "--out", str(out)])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(out, keep_default_na=False)
    model = mmfuse.load(model_path)
    expected = model.predict_set({k: v[:20] for k, v in views.items()})
    assert preds["set"].tolist() == ["|".join(str(c) for c in model.classes_[row])
                                     for row in expected]
    # a model trained without a coverage has no sets: a one-line error
    plain = tmp_path / "plain.mmfuse"
    assert runner.invoke(app, ["train", *source, "--fusion", "early", "--out", str(plain),
                               "--quiet"]).exit_code == 0
    result = runner.invoke(app, ["predict", str(plain), "--manifest", str(manifest), "--sets"])
    assert result.exit_code != 0
    assert "prediction sets need a model trained with a coverage" in " ".join(
        result.output.split())
    assert "Traceback" not in result.output


def test_too_few_groups_for_the_coverage_is_one_plain_warning_line(tmp_path):
    from conftest import number_frame

    df, y = number_frame(n=200)
    df["label"], df["g"] = y, [f"g{i % 5}" for i in range(len(y))]  # 5 groups (0.9 needs 9)
    df.to_csv(tmp_path / "m.csv", index=False)
    source = ["--manifest", str(tmp_path / "m.csv"), "--text", "left", "--label", "label",
              "--group", "g", "--encoders", "text=test-number", "--coverage", "0.9"]
    result = runner.invoke(app, ["train", *source, "--out", str(tmp_path / "m.mmfuse"),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "warning: conformal sets calibrated on 5 groups" in " ".join(result.output.split())
    assert "FewCalibrationGroupsWarning" not in result.output
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", *source, "--cv", "5", "--json-out", str(out),
                                 "--quiet", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "conformal sets calibrated on 4 groups" in text  # 4 of 5 in each outer fold
    assert "FewCalibrationGroupsWarning" not in result.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, schema())
    groups = doc["rows"][0]["uncertainty"]["calibration_groups"]
    assert groups["folds"] == [4] * 5 and groups["ci95"] == [4, 4]  # a count: not cut at 1
