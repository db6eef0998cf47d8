"""predict_table: labels, per-class probabilities, modalities used and per-row errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_views, number_frame

from mmfuse import InputError, MultimodalClassifier
from mmfuse.predict import PROBA_PREFIX, predict_table


@pytest.fixture(scope="module")
def number_model():
    df, y = number_frame(n=120)
    model = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                                 fusion="late", cv=3, random_state=0).fit(df, y)
    return model, df, y


def test_table_matches_the_estimator(number_model):
    model, df, _ = number_model
    out = predict_table(model, df)
    assert list(out.columns) == (["label"] + [f"{PROBA_PREFIX}{c}" for c in model.classes_]
                                 + ["modalities_used", "error"])
    assert out.index.equals(df.index)
    proba = out[[f"{PROBA_PREFIX}{c}" for c in model.classes_]].to_numpy()
    assert proba.tobytes() == model.predict_proba(df).tobytes()
    assert (out["label"].to_numpy() == model.predict(df)).all()
    assert (out["modalities_used"] == "left+right").all()
    assert (out["error"] == "").all()


def test_missing_cells_change_the_modalities_used(number_model):
    model, df, _ = number_model
    gappy = df.iloc[:6].copy()
    gappy.loc[gappy.index[0], "left"] = None
    gappy.loc[gappy.index[1], "right"] = ""
    gappy.loc[gappy.index[2], "right"] = float("nan")
    gappy.loc[gappy.index[3], "left"] = "-"  # the encoder says: missing after cleaning
    out = predict_table(model, gappy)
    assert out["modalities_used"].tolist() == ["right", "left", "left", "right",
                                               "left+right", "left+right"]
    proba = out.filter(like=PROBA_PREFIX).to_numpy()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert proba.tobytes() == model.predict_proba(gappy).tobytes()


def test_sets_column_matches_predict_set_with_missing_cells():
    df, y = number_frame(n=200)
    model = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                                 fusion="late", cv=3, calibration="temperature",
                                 coverage=0.8, random_state=0).fit(df, y)
    gappy = df.iloc[:30].copy()
    gappy.loc[gappy.index[:10], "left"] = None
    out = predict_table(model, gappy, sets=True)
    expected = model.predict_set(gappy)
    assert out["set"].tolist() == ["|".join(str(c) for c in model.classes_[row])
                                   for row in expected]
    # a row without "left" uses the thresholds of its own pattern: larger sets
    sizes = expected.sum(axis=1)
    assert sizes[:10].mean() > sizes[10:].mean()
    proba = out.filter(like=PROBA_PREFIX).to_numpy()
    assert proba.tobytes() == model.predict_proba(gappy).tobytes()


def test_sets_need_a_model_with_coverage(number_model):
    model, df, _ = number_model
    with pytest.raises(InputError, match="prediction sets need a model trained with a "
                                         "coverage"):
        predict_table(model, df, sets=True)


def test_on_error_raise_names_row_and_column(number_model):
    model, df, _ = number_model
    bad = df.iloc[:5].copy()
    bad.loc[bad.index[2], "right"] = "not a number"
    with pytest.raises(InputError, match="row 2, column 'right'.*not a number"):
        predict_table(model, bad)


def test_on_error_skip_reports_per_row(number_model):
    model, df, _ = number_model
    bad = df.iloc[:5].copy().reset_index(drop=True)
    bad.loc[1, "right"] = "oops"
    bad.loc[3, ["left", "right"]] = ["bad", "worse"]
    out = predict_table(model, bad, on_error="skip")
    assert out.loc[1, "modalities_used"] == "left"
    assert "right: cannot parse 'oops'" in out.loc[1, "error"]
    assert out.loc[3, "modalities_used"] == ""
    assert "no usable modality: predicted the class prior" in out.loc[3, "error"]
    assert "left: cannot parse 'bad'" in out.loc[3, "error"]
    assert out.loc[[0, 2, 4], "error"].eq("").all()
    # the prior comes from the training labels
    prior = model.fusion_.prior_
    np.testing.assert_allclose(out.filter(like=PROBA_PREFIX).to_numpy()[3], prior)


def test_row_without_any_modality_raises_by_default(number_model):
    model, df, _ = number_model
    empty = pd.DataFrame({"left": [None, "1.0"], "right": [None, "0.5"]}, index=["a", "b"])
    with pytest.raises(InputError, match="row 'a' has no usable modality"):
        predict_table(model, empty)


def test_model_on_error_is_the_default(number_model):
    model, df, y = number_model
    skipping = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                                    fusion="early", weights="equal", on_error="skip").fit(df, y)
    out = predict_table(skipping, pd.DataFrame({"left": ["x"], "right": ["1"]}))
    assert "cannot parse" in out.loc[0, "error"]
    with pytest.raises(InputError):
        predict_table(skipping, pd.DataFrame({"left": ["x"], "right": ["1"]}), on_error="raise")


def test_keep_and_missing_columns(number_model):
    model, df, _ = number_model
    table = df.iloc[:4].assign(id=["r1", "r2", "r3", "r4"])
    out = predict_table(model, table, keep=["id"])
    assert out.columns[0] == "id" and out["id"].tolist() == ["r1", "r2", "r3", "r4"]
    with pytest.raises(InputError, match="lacks the model's columns \\['right'\\]"):
        predict_table(model, table[["left"]])
    only_left = predict_table(model, table[["left"]], missing_columns="absent")
    assert (only_left["modalities_used"] == "left").all()
    with pytest.raises(InputError, match="keep names columns"):
        predict_table(model, table, keep=["nope"])
    with pytest.raises(InputError, match="on_error must be"):
        predict_table(model, table, on_error="ignore")


def test_dict_input_and_model_left_unchanged(number_model):
    model, df, _ = number_model
    errors_before = list(model.errors_)
    params_before = model.get_params()
    out = predict_table(model, {"left": ["0.1", "bad"], "right": ["1.5", "0.2"]},
                        on_error="skip")
    assert out["modalities_used"].tolist() == ["left+right", "right"]
    assert model.errors_ == errors_before and model.get_params() == params_before


def test_passthrough_views_with_missing_rows():
    views, y = make_views(n=100)
    model = MultimodalClassifier(fusion="late", cv=3, random_state=0).fit(views, y)
    table = pd.DataFrame({"a": list(views["a"][:4]), "b": list(views["b"][:4])})
    table.loc[1, "b"] = None
    out = predict_table(model, table)
    assert out["modalities_used"].tolist() == ["a+b", "a", "a+b", "a+b"]
    expected = {"a": views["a"][:4].copy(), "b": views["b"][:4].copy()}
    expected["b"][1] = np.nan
    assert out.filter(like=PROBA_PREFIX).to_numpy().tobytes() == \
        model.predict_proba(expected).tobytes()


def test_empty_table(number_model):
    model, df, _ = number_model
    out = predict_table(model, df.iloc[:0])
    assert len(out) == 0 and "label" in out.columns


def test_real_files_and_a_loaded_model(tmp_path, data_root):
    from mmfuse import load
    from mmfuse.data.datasets import load_dataset

    X, y, _ = load_dataset("tuxpaint", root=data_root)
    keep = np.flatnonzero(np.isin(y, ["animals", "food", "vehicles"]))[::9][:21]
    X = X.iloc[keep][["image", "text", "audio"]].reset_index(drop=True)
    model = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf-hashed", "audio": "mfcc"},
                                 fusion="late", cv=2, random_state=0).fit(X, y[keep])
    loaded = load(model.save(tmp_path / "m.mmfuse"))
    table = X.iloc[:4].copy()
    table.loc[0, "audio"] = None
    table.loc[1, ["image", "text"]] = [None, ""]
    table.loc[2, "image"] = str(tmp_path / "no-such-file.png")
    out = predict_table(loaded, table, on_error="skip")
    assert out["modalities_used"].tolist() == ["image+text", "audio", "audio+text",
                                               "audio+image+text"]
    assert "image file not found" in out.loc[2, "error"]
    reference = predict_table(model, table, on_error="skip")
    pd.testing.assert_frame_equal(out, reference)


def test_predict_manifest_from_a_model_file(tmp_path, number_model):
    from mmfuse.predict import predict_manifest, write_predictions

    model, df, y = number_model
    path = model.save(tmp_path / "m.mmfuse")
    manifest = tmp_path / "samples.csv"
    pd.DataFrame({"id": ["s0", "s1", "s2"], "L": df["left"][:3], "right": df["right"][:3],
                  "label": y[:3]}).to_csv(manifest, index=False)
    out = predict_manifest(path, manifest, columns={"left": "L"}, keep=["id", "label"])
    assert list(out.columns[:2]) == ["id", "input_label"]
    reference = predict_table(model, df.iloc[:3].reset_index(drop=True))
    pd.testing.assert_frame_equal(out.drop(columns=["id", "input_label"]), reference)
    with pytest.raises(InputError, match="'left'"):
        predict_manifest(path, manifest)
    with pytest.raises(InputError, match="does not use"):
        predict_manifest(path, manifest, columns={"photo": "L"})
    for suffix in (".csv", ".tsv", ".jsonl"):
        written = write_predictions(out, tmp_path / f"preds{suffix}")
        assert written.read_text().count("s2") == 1
    with pytest.raises(InputError, match="unknown output extension"):
        write_predictions(out, tmp_path / "preds.xlsx")


def test_display_table_rounds_probabilities_and_shares_only():
    import pandas as pd

    from mmfuse.predict import display_table

    table = pd.DataFrame({"label": ["x"], "proba_x": [0.838788667558846],
                          "share_image": [0.161211332441154], "score": [0.123456789]})
    shown = display_table(table)
    assert shown["proba_x"].iloc[0] == 0.839 and shown["share_image"].iloc[0] == 0.161
    assert shown["score"].iloc[0] == 0.123456789  # not a prediction column
    assert table["proba_x"].iloc[0] == 0.838788667558846  # the table is not changed


def test_modalities_used_by_the_model_and_per_row(number_model):
    from mmfuse.predict import modalities_used

    model, _, _ = number_model
    assert modalities_used(model) == ["left", "right"]
    present = {"left": np.array([True, False]), "right": np.array([True, True])}
    assert modalities_used(model, present) == [["left", "right"], ["right"]]
