"""`mmfuse run --json`: the record validates against the shipped schema and holds the
command (file names only); 60 rows, 9 classes (the rarest with 2), --cv 2 and the default
learned weights finish, warn that they fell back and say so in the JSON."""

import json
import sys

import jsonschema
import numpy as np
from typer.testing import CliRunner

from mmfuse.cli import app
from mmfuse.evaluate.record import schema

runner = CliRunner()


def small_views(folder, counts) -> list[str]:
    """Two views and labels of 9 classes with ``counts`` rows each, saved in ``folder``;
    the CLI arguments that read them."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.array([f"class-{i}" for i in range(9)]), counts)
    codes = np.unique(y, return_inverse=True)[1]
    np.save(folder / "images.npy", rng.normal(size=(len(y), 5)) + 0.8 * codes[:, None])
    np.save(folder / "texts.npy", rng.normal(size=(len(y), 4)) + 0.5 * codes[:, None])
    np.save(folder / "labels.npy", y)
    return ["--views", f"image={folder}/images.npy,text={folder}/texts.npy",
            "--labels", str(folder / "labels.npy")]


def test_small_data_falls_back_to_equal_weights_and_the_json_says_so(tmp_path, monkeypatch):
    inputs = small_views(tmp_path, [2, 6, 7, 7, 7, 7, 8, 8, 8])  # 60 rows
    out = tmp_path / "r.json"
    args = ["run", *inputs, "--cv", "2", "--fusion", "late",
            "--json-out", str(out), "--quiet", "--jobs", "1"]
    monkeypatch.setattr(sys, "argv", ["mmfuse", *args])
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: late: learned weights fell back to equal weights" in output
    assert "in 2 of 2 folds" in output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, schema())
    assert doc["weights_fallback"] == ["late"]
    late = next(r for r in doc["rows"] if r["name"] == "late")
    assert all(f.startswith("equal weights: too few") for f in late["weights_fallback"])
    assert doc["classes"][0] == "class-0" and doc["seed"] == 0
    assert doc["command"][:2] == ["mmfuse", "run"] and "r.json" in doc["command"]
    assert str(tmp_path) not in json.dumps(doc)  # names, never paths


def test_train_on_small_data_says_it_fell_back_in_words(tmp_path):
    # 30 rows, the rarest class once: no inner fold can hold every class
    inputs = small_views(tmp_path, [1, 3, 3, 3, 4, 4, 4, 4, 4])
    result = runner.invoke(app, ["train", *inputs, "--fusion", "late",
                                 "--out", str(tmp_path / "m.mmfuse"), "--quiet"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: learned weights fell back: equal weights: too few" in output
    assert "Warning" not in output  # no Python warning class, no source line
