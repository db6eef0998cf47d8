"""``run --scheduler ... --manifest``: the features are extracted on the cluster into a
store (``--store DIR``, or a temporary one), then evaluated from it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mmfuse.cli import app
from mmfuse.features import read_header
from mmfuse.features.plan import storable

runner = CliRunner()


def test_run_on_a_local_cluster_extracts_into_the_named_store(store_manifest, tmp_path):
    pytest.importorskip("distributed")
    store, out = tmp_path / "store", tmp_path / "r.json"
    result = runner.invoke(app, ["run", "--manifest", str(store_manifest), "--image", "image",
                                 "--label", "label", "--encoders", "image=pixels",
                                 "--on-error", "skip", "--scheduler", "local", "--store",
                                 str(store), "--out-of-core", "--fusion", "late", "--cv", "2",
                                 "--json-out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert "extracted 24 rows on the cluster into store" in flat
    assert read_header(store)["complete"] and read_header(store)["n_rows"] == 24
    doc = json.loads(out.read_text())
    assert doc["path"] == "out-of-core" and doc["n_samples"] == 24


def test_what_a_store_cannot_hold_is_said_in_one_line(tmp_path):
    assert storable({"image": "photo"}, {"image": "pixels"}) is None
    assert "learns from data" in storable({"text": "t"}, {"text": "tfidf"})
    (tmp_path / "m.csv").write_text("t,label\nred,a\nblue,b\n")
    result = runner.invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "t",
                                 "--label", "label", "--store", str(tmp_path / "s")])
    assert result.exit_code == 2 and "--store needs --scheduler" in result.output
    result = runner.invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "t",
                                 "--label", "label", "--scheduler", "local",
                                 "--store", str(tmp_path / "s")])
    flat = " ".join(result.output.split())
    assert result.exit_code == 2 and "cannot be extracted into a store" in flat, result.output
    assert "hashing" in flat and "Traceback" not in flat
