"""Several files per cell through the CLI: ``a.png | b.png`` in a CSV manifest, a JSON
list in a JSONL manifest; a partly failing cell is pooled over the rest and reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mmfuse.cli import app

runner = CliRunner()


def write_images(folder, n=36, seed=0):
    """Rows of 1-3 grey squares: dark for class 0, bright for class 1 (plus noise)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        files = []
        for k in range(1 + i % 3):
            value = int(np.clip(60 + 130 * label + rng.normal(0, 15), 0, 255))
            name = f"r{i}_{k}.png"
            Image.new("L", (12, 12), value).save(folder / name)
            files.append(name)
        rows.append({"photo": files, "label": label})
    return rows


@pytest.mark.parametrize("kind", ["csv", "jsonl"])
def test_run_pools_several_files_per_cell(tmp_path, kind):
    rows = write_images(tmp_path)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    rows[0]["photo"] = rows[0]["photo"] + ["broken.png"]      # partly failing: pooled
    rows[1]["photo"] = ["broken.png", "broken.png"]            # wholly failing: missing
    path = tmp_path / f"m.{kind}"
    if kind == "csv":
        lines = ["photo,label"] + [f"{' | '.join(r['photo'])},{r['label']}" for r in rows]
        path.write_text("\n".join(lines) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--manifest", str(path), "--image", "photo",
                                 "--label", "label", "--encoders", "image=pixels",
                                 "--cv", "3", "--on-error", "skip", "--json-out", str(out),
                                 "--quiet"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["n_samples"] == 36
    image = next(r for r in doc["rows"] if r["name"] == "image")
    assert image["accuracy"] > 0.9  # the pooled brightness knows the class
    text = result.output
    assert "1 of 2 files failed (pooled over the other 1)" in text, text
    assert "all 2 files failed" in text


def write_max_vs_mean(folder, n=36, seed=0):
    """Rows of two grey squares whose mean is the same for both classes (about 110), while
    their maximum tells them apart: class 0 = one bright and one dark square, class 1 = two
    mid-grey ones."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % 2
        values = (200, 20) if label == 0 else (110, 110)
        files = []
        for k, v in enumerate(values):
            name = f"p{i}_{k}.png"
            Image.new("L", (12, 12), int(v + rng.normal(0, 3))).save(folder / name)
            files.append(name)
        rows.append({"photo": files, "label": label})
    path = folder / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_pooling_option_of_run_and_train(tmp_path):
    path = write_max_vs_mean(tmp_path)
    base = ["--manifest", str(path), "--image", "photo", "--label", "label",
            "--encoders", "image=pixels"]
    accuracy = {}
    for pooling in ("mean", "max"):
        out = tmp_path / f"{pooling}.json"
        result = runner.invoke(app, ["run", *base, "--cv", "3", "--json-out", str(out),
                                     "--quiet", "--pooling", pooling])
        assert result.exit_code == 0, result.output
        rows = json.loads(out.read_text())["rows"]
        accuracy[pooling] = next(r for r in rows if r["name"] == "image")["accuracy"]
    assert accuracy["max"] > 0.9 and accuracy["mean"] < 0.75, accuracy

    from mmfuse import load

    model_path = tmp_path / "max.mmfuse"
    result = runner.invoke(app, ["train", *base, "--out", str(model_path),
                                 "--pooling", "max"])
    assert result.exit_code == 0, result.output
    model = load(model_path)
    assert model.pooling == "max"
    import pandas as pd

    X = pd.read_json(path, lines=True)
    X["image"] = X["photo"].map(lambda files: [str(tmp_path / f) for f in files])
    assert np.mean(model.predict(X[["image"]]) == X["label"].to_numpy()) > 0.9

    bad = runner.invoke(app, ["run", *base, "--pooling", "median"])
    assert bad.exit_code != 0
    assert bad.exit_code == 2
    assert "'median' is not one of 'mean', 'max'" in bad.output
    assert "Traceback" not in bad.output
