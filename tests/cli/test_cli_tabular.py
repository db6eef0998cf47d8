"""The CLI's tabular options: --numeric/--categorical/--boolean/--dates."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from conftest import number_frame
from mmfuse.cli import app

runner = CliRunner()


def manifest(tmp_path, n=120):
    df, y = number_frame(n=n)
    rng = np.random.default_rng(0)
    df["label"] = y
    df["size"] = (y // 2 * 3.0 + rng.normal(size=n)).round(3)   # knows the half
    df.loc[::9, "size"] = np.nan
    df["shape"] = np.where(y % 2 == 0, "round", "square")          # knows the parity
    df["sold"] = np.where(rng.random(n) < 0.5, "yes", "no")
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    return path


def test_run_with_tabular_columns_beside_text(tmp_path):
    out = tmp_path / "r.json"
    html = tmp_path / "r.html"
    result = runner.invoke(app, ["run", "--manifest", str(manifest(tmp_path)), "--text", "left",
                                 "--label", "label", "--encoders", "text=test-number",
                                 "--numeric", "size", "--categorical", "shape",
                                 "--boolean", "sold", "--fusion", "late", "--cv", "3",
                                 "--json-out", str(out), "--report", str(html), "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    rows = {r["name"]: r for r in doc["rows"]}
    page = html.read_text()
    assert "Modality contributions per prediction" in page and "least confident" in page
    assert "<th>tabular</th><th>text</th>" in page
    assert set(rows) == {"tabular", "text", "late", "seed-baseline"}
    assert rows["tabular"]["accuracy"] > 0.75  # size and shape together know the label


def test_train_saves_a_model_with_the_tabular_encoder(tmp_path):
    import mmfuse

    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--manifest", str(manifest(tmp_path)),
                                 "--numeric", "size", "--categorical", "shape",
                                 "--label", "label", "--out", str(model)])
    assert result.exit_code == 0, result.output
    clf = mmfuse.load(model)
    assert clf.encoders_["tabular"].columns == ["size", "shape"]


def test_bad_tabular_options_are_messages(tmp_path):
    path = manifest(tmp_path)
    result = runner.invoke(app, ["run", "--manifest", str(path), "--label", "label",
                                 "--numeric", "nope", "--quiet"])
    assert result.exit_code == 2 and "lacks column(s) ['nope']" in result.output
    result = runner.invoke(app, ["run", "--manifest", str(path), "--label", "label",
                                 "--numeric", "shape", "--quiet", "--cv", "3"])
    assert result.exit_code == 2 and "row 0, column 'shape': column 'shape' holds 'square'; expected a number" \
        in result.output
    assert "Traceback" not in result.output


def test_extract_keeps_tabular_columns_raw_and_run_learns_them_per_fold(tmp_path):
    path = manifest(tmp_path)
    store = tmp_path / "store"
    base = ["extract", "--manifest", str(path), "--out", str(store), "--text", "left",
            "--encoders", "text=test-number", "--quiet"]
    result = runner.invoke(app, base + ["--numeric", "nope"])
    assert result.exit_code == 2 and "tabular column(s) ['nope'] are not in it" in result.output
    result = runner.invoke(app, base + ["--numeric", "size", "--categorical", "shape"])
    assert result.exit_code == 0, result.output
    assert "tabular columns kept raw" in result.output
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--features", str(store), "--label", "label",
                                 "--numeric", "size", "--categorical", "shape",
                                 "--fusion", "early", "--cv", "3", "--json-out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(out.read_text())["rows"]}
    assert {"tabular", "text", "early"} <= set(rows) and rows["tabular"]["accuracy"] > 0.75


def test_predict_reads_the_tabular_columns_and_explains(tmp_path):
    import pandas as pd

    path = manifest(tmp_path)
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--manifest", str(path), "--text", "left",
                                 "--encoders", "text=test-number", "--numeric", "size",
                                 "--categorical", "shape", "--label", "label",
                                 "--out", str(model)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(path),
                                 "--out", str(out), "--explain", "--keep", "label",
                                 "--text", "left"])
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert {"share_tabular", "share_text"} <= set(pred.columns)
    assert (pred["label"] == pred["input_label"]).mean() > 0.75
    np.testing.assert_allclose(pred[["share_tabular", "share_text"]].abs().sum(axis=1), 1,
                               atol=1e-6)
