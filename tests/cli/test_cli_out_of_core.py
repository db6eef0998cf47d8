"""``run``/``train --features STORE --out-of-core``: the streamed path, what says it ran,
and what it refuses (one line each)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_small_store
from mmfuse.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """Smaller than the shared one: these tests only check the command's plumbing."""
    return write_small_store(tmp_path_factory.mktemp("cli-store") / "store", n=480,
                             rows_per_shard=160)


def _flat(result):
    return " ".join(result.output.split())  # rich wraps long lines


def test_run_out_of_core_says_which_path_ran(small_store, tmp_path):
    out = tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--features", str(small_store), "--label", "label",
                                 "--group", "group", "--out-of-core", "--cv", "3",
                                 "--json-out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    flat = _flat(result)
    assert "(out of core)" in flat and "path: out-of-core" in flat
    doc = json.loads(out.read_text())
    assert doc["path"] == "out-of-core" and doc["n_samples"] == 480
    # the default list, stacking's meta level streamed too
    assert [r["name"] for r in doc["rows"]] == ["image", "text", "early", "weighted", "late",
                                                "stacking", "seed-baseline"]
    assert all(r["weights_fallback"] == [None] * 3 for r in doc["rows"])


def test_a_store_above_the_threshold_streams_without_the_flag(small_store, tmp_path,
                                                             monkeypatch):
    # (below it, the in-memory path: evaluate/test_evaluate_streamed.py::choose_path)
    out = tmp_path / "r.json"
    monkeypatch.setenv("MMFUSE_OUT_OF_CORE_BYTES", "1000")  # the store holds 61,440 bytes
    result = runner.invoke(app, ["run", "--features", str(small_store), "--label", "label",
                                 "--cv", "3", "--fusion", "late", "--weights", "equal",
                                 "--json-out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["path"] == "out-of-core" and [r["name"] for r in doc["rows"]] == [
        "image", "text", "late", "seed-baseline"]
    assert doc["rows"][2]["weights_fallback"] == [None] * 3  # equal weights were asked for


def test_out_of_core_refusals_are_one_line(small_store, tmp_path):
    cases = [
        (["run", "--features", str(small_store), "--label", "label", "--out-of-core",
          "--fusion", "gmu"], "fusion gmu cannot be fitted out of core"),
        (["run", "--features", str(small_store), "--label", "label", "--out-of-core",
          "--missing", "0,0.5"], "--missing is not available out of core"),
        (["run", "--views", f"a={tmp_path / 'a.npy'}", "--labels", str(tmp_path / "y.npy"),
          "--out-of-core"], "--out-of-core needs a feature store"),
        (["run", "--features", str(small_store), "--out-of-core"], "--label COL is required"),
        (["train", "--features", str(small_store), "--label", "label", "--out-of-core",
          "--fusion", "gmu", "--out", str(tmp_path / "m.mmfuse")],
         "fusion 'gmu' cannot be trained out of core"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in _flat(result) and "Traceback" not in result.output, result.output


def test_train_out_of_core_saves_a_model_that_loads_and_predicts(small_store, tmp_path):
    from mmfuse.features import load
    from mmfuse.persist import load as load_model

    model = tmp_path / "m.mmfuse"
    result = runner.invoke(app, ["train", "--features", str(small_store), "--label", "label",
                                 "--group", "group", "--out-of-core", "--fusion", "stacking",
                                 "--out", str(model), "-q"])
    assert result.exit_code == 0, result.output
    flat = _flat(result)
    assert "trained stacking out of core on 480 samples" in flat and "path: out-of-core" in flat
    assert "note:" not in flat  # its meta level was fitted on streamed inner folds
    clf = load_model(model)
    store = load(small_store)
    proba = clf.predict_proba(store.views)
    assert proba.shape == (480, 4) and np.allclose(proba.sum(axis=1), 1)
    assert (clf.classes_[proba.argmax(axis=1)] == store.column("label")).mean() > 0.6
    assert clf.fit_path_ == "out-of-core"


def test_a_model_trained_out_of_core_predicts_from_raw_files(reference_store, store_manifest,
                                                             tmp_path):
    model, out = tmp_path / "m.mmfuse", tmp_path / "p.csv"
    result = runner.invoke(app, ["train", "--features", str(reference_store.out), "--label",
                                 "label", "--out-of-core", "--weights", "equal", "--out",
                                 str(model), "-q"])
    assert result.exit_code == 0, result.output
    assert "it predicts from raw files" in _flat(result)
    result = runner.invoke(app, ["predict", str(model), "--manifest", str(store_manifest),
                                 "--on-error", "skip", "--out", str(out)])
    assert result.exit_code == 0, result.output
    import pandas as pd

    predicted = pd.read_csv(out)
    assert len(predicted) == 24 and predicted.filter(like="prob").shape[1] >= 4
