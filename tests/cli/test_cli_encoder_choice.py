"""`mmfuse run/train --encoders` with candidates: the choice is printed and in the JSON."""

import json

import numpy as np
from typer.testing import CliRunner

from conftest import number_frame
from mmfuse.cli import app

runner = CliRunner()


def _manifest(tmp_path, n=120):
    df, y = number_frame(n=n)
    df["label"] = y
    df["speaker"] = np.arange(n) // 8
    df.to_csv(tmp_path / "m.csv", index=False)
    return ["--manifest", str(tmp_path / "m.csv"), "--text", "left", "--label", "label",
            "--group", "speaker"]


def test_run_prints_and_writes_the_encoders_chosen_per_fold(tmp_path):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", *_manifest(tmp_path), "--cv", "3",
                                 "--encoders", "text=test-number/test-vocab",
                                 "--fusion", "late", "--json-out", str(out), "--quiet",
                                 "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert "encoders chosen: text=" in result.output
    doc = json.loads(out.read_text())
    assert len(doc["chosen_encoders"]) == 3
    assert all(f["text"] in ("test-number", "test-vocab") for f in doc["chosen_encoders"])


def test_train_prints_the_choice(tmp_path):
    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", *_manifest(tmp_path), "--out", str(model),
                                 "--encoders", "text=test-number/test-vocab",
                                 "--fusion", "late"])
    assert result.exit_code == 0, result.output
    assert "encoders chosen: text=test-" in result.output
    assert model.exists()


def test_candidates_of_mixed_modalities_are_a_message(tmp_path):
    result = runner.invoke(app, ["run", *_manifest(tmp_path), "--encoders",
                                 "text=test-number/hog", "--quiet"])
    assert result.exit_code != 0
    assert "mix modalities" in result.output and "Traceback" not in result.output
