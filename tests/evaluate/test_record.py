"""The JSON record of an evaluation: validated against the schema shipped in the package,
complete (per-fold scores, weights, encoders, versions, seed, classes) and free of paths."""

import json

import jsonschema
import numpy as np
import pytest

from conftest import make_views, number_frame
from mmfuse.evaluate import evaluate
from mmfuse.evaluate.record import reduce_paths, schema


def test_a_real_run_validates_against_the_shipped_schema():
    df, y = number_frame(n=120)
    labels = np.array(["cat", "dog", "owl", "ant"])[y]
    result = evaluate(df, labels, encoders={"left": "test-number", "right": "test-vocab"},
                      cv=3, strategies=["late", "stacking"], random_state=7, n_jobs=1)
    doc = json.loads(json.dumps(result.to_dict(argv=["mmfuse", "run", "--cv", "3"])))
    jsonschema.validate(doc, schema())
    assert doc["classes"] == ["ant", "cat", "dog", "owl"] and doc["seed"] == 7
    assert doc["encoders"] == {"left": "test-number", "right": "test-vocab"}
    assert doc["command"] == ["mmfuse", "run", "--cv", "3"] and doc["cv"]["n_splits"] == 3
    assert {"mmfuse", "python", "numpy", "scikit-learn", "onnxruntime", "torch"} <= set(
        doc["versions"])
    rows = {r["name"]: r for r in doc["rows"]}
    for r in rows.values():
        assert len(r["fold_accuracy"]) == len(r["fold_macro_f1"]) == 3
        assert r["accuracy"] == pytest.approx(np.mean(r["fold_accuracy"]))
    stacking = rows["stacking"]
    assert stacking["weights"] is None  # asked for nothing: the meta-model's own
    assert len(stacking["fold_weights"]) == 3 and all(stacking["fold_weights"])
    assert stacking["modality_weights"] == pytest.approx(
        {m: np.mean([w[m] for w in stacking["fold_weights"]]) for m in ("left", "right")})
    assert rows["left"]["fold_weights"] == [None] * 3


def test_uncertainty_scores_and_sets_validate_and_hold_per_fold_values():
    from mmfuse.uncertainty.evaluation import UncertaintySpec

    views, y = make_views(n=300)
    groups = np.arange(300) // 10
    spec = UncertaintySpec("temperature", (0.9, 0.8), ("aps", "lac"), mask={"a": 0.5})
    result = evaluate(views, y, groups=groups, cv=3, inner_cv=3, strategies=["late"],
                      random_state=0, n_jobs=1, uncertainty=spec)
    doc = json.loads(json.dumps(result.to_dict()))
    jsonschema.validate(doc, schema())
    assert doc["uncertainty"] == {"calibration": "temperature", "coverage": [0.9, 0.8],
                                  "scores": ["aps", "lac"], "mondrian": False,
                                  "mask": {"a": 0.5}}
    for row in doc["rows"]:
        unc = row["uncertainty"]
        masked = {"sets_masked"} if "a" in row["modalities"] else set()
        assert set(unc) == {"log_loss", "brier", "ece", "ece_floor", "ece_debiased", "raw",
                            "sets", "reliability", "reliability_raw", "diagnosis",
                            "calibration_groups"} | masked
        assert set(unc["sets"]) == {"aps@0.9", "aps@0.8", "lac@0.9", "lac@0.8"}
        for name in ("binning", "isotonic"):  # top-label calibration, in the diagnosis
            top = unc["diagnosis"][f"test_ece_top_label_{name}"]
            assert len(top["folds"]) == 3 and 0 <= top["mean"] <= 1
        cover = unc["sets"]["aps@0.9"]["coverage"]
        assert len(cover["folds"]) == 3 and cover["mean"] == pytest.approx(
            np.mean(cover["folds"]))
        assert cover["ci95"][0] <= cover["mean"] <= cover["ci95"][1]
        assert unc["sets"]["aps@0.9"]["set_size"]["mean"] >= unc["sets"]["aps@0.8"][
            "set_size"]["mean"]
        # temperature scaling keeps the labels: the row's accuracy is the raw one
        assert row["accuracy"] == pytest.approx(unc["raw"]["accuracy"]["mean"])
    assert set(doc["rows"][-1]["uncertainty"]["sets_masked"]) == {
        f"{k} a-0.5" for k in ("aps@0.9", "aps@0.8", "lac@0.9", "lac@0.8")}


def test_every_row_reports_log_loss_brier_and_ece_without_calibration():
    views, y = make_views(n=150)
    doc = evaluate(views, y, cv=3, strategies=["early"], n_jobs=1).to_dict()
    jsonschema.validate(doc, schema())
    assert "uncertainty" not in doc
    for row in doc["rows"]:
        assert set(row["uncertainty"]) == {"log_loss", "brier", "ece", "ece_floor",
                                           "ece_debiased", "reliability"}
        assert sum(row["uncertainty"]["reliability"]["count"]) == 150
        assert row["uncertainty"]["log_loss"]["ci95"][1] >= row["uncertainty"]["log_loss"][
            "mean"]


def test_the_schema_rejects_an_incomplete_record():
    views, y = make_views(n=90)
    doc = evaluate(views, y, cv=3, strategies=["late"], n_jobs=1).to_dict()
    jsonschema.validate(doc, schema())
    del doc["rows"][0]["fold_macro_f1"]
    with pytest.raises(jsonschema.ValidationError, match="fold_macro_f1"):
        jsonschema.validate(doc, schema())


def test_candidate_columns_record_what_each_fold_chose():
    df, y = number_frame(n=120)
    result = evaluate(df, y, encoders={"left": ["test-number", "test-vocab"],
                                       "right": "test-number"},
                      cv=3, strategies=["late"], n_jobs=1)
    doc = result.to_dict()
    jsonschema.validate(doc, schema())
    assert doc["encoders"]["left"] == "test-number/test-vocab"
    assert len(doc["chosen_encoders"]) == 3


def test_the_command_keeps_file_names_only(tmp_path):
    (tmp_path / "data").mkdir()
    manifest = tmp_path / "data" / "secret-manifest.csv"
    manifest.write_text("x\n")
    argv = ["mmfuse", "run", "--manifest", str(manifest), f"--json={tmp_path}/r.json",
            "--views", f"image={manifest},text=t.npy", "--encoders", "text=tfidf/minilm",
            "--model", "weights/m.mmfuse"]
    out = reduce_paths(argv, path_options=["--model"])
    assert out == ["mmfuse", "run", "--manifest", "secret-manifest.csv", "--json=r.json",
                   "--views", "image=secret-manifest.csv,text=t.npy", "--encoders",
                   "text=tfidf/minilm", "--model", "m.mmfuse"]
    assert not any(str(tmp_path) in a for a in out)
