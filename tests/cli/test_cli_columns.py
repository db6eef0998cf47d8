"""A saved model remembers the manifest columns it was trained on: `predict` and `audit`
read the same manifest without the column flags; a flag overrides; a missing column's
error names the flag; models saved before the mapping existed still load."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import number_frame
from mmfuse.cli import app

runner = CliRunner()


@pytest.fixture
def trained(tmp_path):
    df, y = number_frame(n=120)
    df["label"] = y
    df["id"] = range(len(df))
    manifest = tmp_path / "m.csv"
    df.to_csv(manifest, index=False)
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--manifest", str(manifest), "--text", "left",
                                 "--label", "label", "--encoders", "text=test-number",
                                 "--out", str(model), "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp_path, manifest, model, df


def test_the_model_remembers_its_columns(trained):
    from mmfuse import load

    _, _, model, _ = trained
    fitted = load(model)
    assert fitted.source_columns_ == {"text": "left"}
    assert sorted(fitted.encoders_) == ["text"]  # the model's own column is still "text"


def test_predict_reads_the_training_manifest_without_flags(trained):
    tmp, manifest, model, df = trained
    out = tmp / "p.csv"
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(manifest),
                                 "--keep", "id,label", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(out)
    assert len(preds) == len(df) and (preds["input_label"] == preds["label"]).mean() > 0.4


def test_a_flag_overrides_the_remembered_column(trained):
    tmp, manifest, model, df = trained
    other = tmp / "other.csv"
    df.rename(columns={"left": "caption"}).drop(columns="right").to_csv(other, index=False)
    out = tmp / "p.csv"
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(other),
                                 "--text", "caption", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    same = tmp / "same.csv"
    runner.invoke(app, ["predict", str(model), "--manifest", str(manifest), "--out", str(same),
                        "--quiet"])
    assert pd.read_csv(out)["label"].tolist() == pd.read_csv(same)["label"].tolist()
    # a flag naming a column the manifest lacks: the error names that column
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(other),
                                 "--text", "nope"])
    assert result.exit_code == 2
    assert "lacks column 'nope' for the model's text column" in result.output


def test_a_missing_column_names_the_flag_to_use(trained):
    tmp, _, model, df = trained
    other = tmp / "other.csv"
    df.rename(columns={"left": "caption"}).to_csv(other, index=False)
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(other)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output
    assert "lacks column 'left' (the column it was trained on) for the model's text column" in lines[0]
    assert "name it with --text COLUMN" in lines[0] and "caption" in lines[0]


def test_audit_reads_the_training_manifest_without_flags(trained):
    tmp, manifest, model, _ = trained
    result = runner.invoke(app, ["audit", str(model), "--members", str(manifest),
                                 "--non-members", str(manifest), "--bootstrap", "20",
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    assert "membership audit: 120 members" in result.output


def test_a_model_saved_without_the_mapping_still_loads_and_predicts(trained):
    """Models written before `source_columns_` existed have no such attribute: they load,
    and predict reads the model's own column names (or the flags), as before."""
    from mmfuse import load
    from mmfuse.predict import predict_manifest, source_columns

    tmp, _, model, df = trained
    fitted = load(model)
    del fitted.source_columns_
    old = tmp / "old.mmfuse"
    fitted.save(old)
    reloaded = load(old)
    assert not hasattr(reloaded, "source_columns_") and source_columns(reloaded) == {}
    renamed = tmp / "renamed.csv"
    df.rename(columns={"left": "text"}).to_csv(renamed, index=False)
    assert len(predict_manifest(reloaded, renamed)) == len(df)
    result = runner.invoke(app, ["predict", str(old), "--manifest", str(renamed), "--quiet"])
    assert result.exit_code == 0, result.output


def test_fit_checks_source_columns():
    from mmfuse import MultimodalClassifier
    from mmfuse._errors import InputError

    df, y = number_frame(n=60)
    clf = MultimodalClassifier(encoders={"left": "test-number"}, fusion="late", weights="equal")
    assert clf.fit(df[["left"]], y).source_columns_ == {}
    with pytest.raises(InputError, match=r"source_columns names columns the model does not have: \['right'\]"):
        clf.fit(df[["left"]], y, source_columns={"right": "x"})
    with pytest.raises(InputError, match="source_columns must be a dict"):
        clf.fit(df[["left"]], y, source_columns=["left"])


def test_predict_rounds_shares_for_display_and_keeps_full_precision_in_the_file(tmp_path):
    import re

    import numpy as np

    from conftest import make_views

    views, y = make_views(n=120)
    for name, arr in (("a", views["a"]), ("b", views["b"]), ("y", y)):
        np.save(tmp_path / f"{name}.npy", arr)
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--views", f"a={tmp_path / 'a.npy'},b={tmp_path / 'b.npy'}",
                                 "--labels", str(tmp_path / "y.npy"), "--out", str(model), "-q"])
    assert result.exit_code == 0, result.output
    manifest = tmp_path / "new.jsonl"
    pd.DataFrame({"a": [list(map(float, r)) for r in views["a"][:5]],
                  "b": [list(map(float, r)) for r in views["b"][:5]]}).to_json(
        manifest, orient="records", lines=True)
    shown = runner.invoke(app, ["predict", str(model), "--manifest", str(manifest), "--explain",
                                "-q"])
    assert shown.exit_code == 0, shown.output
    numbers = re.findall(r"-?\d+\.\d+", shown.output)
    assert numbers and max(len(n.split(".")[1]) for n in numbers) <= 3, shown.output
    out = tmp_path / "p.csv"
    runner.invoke(app, ["predict", str(model), "--manifest", str(manifest), "--explain",
                        "--out", str(out), "-q"])
    written = pd.read_csv(out, dtype=str)
    share = [c for c in written.columns if c.startswith("share_")][0]
    assert max(len(v.split(".")[1]) for v in written[share] if "." in v) > 3
