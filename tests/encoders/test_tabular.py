"""The tabular encoder: learned on training rows only, item errors naming row and column."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from mmfuse import InputError, MultimodalClassifier
from mmfuse.encoders import create_encoder, list_encoders
from mmfuse.encoders.tabular import TabularEncoder, row_items


def table(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    price = rng.normal(10 + 5 * y, 2).round(2).astype(object)
    price[::7] = None
    kind = np.where(y == 1, "big", "small").astype(object)
    kind[::5] = "rare-" + pd.Series(range(len(kind[::5]))).astype(str).to_numpy()
    return pd.DataFrame({"price": price, "kind": kind,
                         "flag": np.where(rng.random(n) < 0.5, "yes", "no"),
                         "day": [f"2024-0{1 + i % 9}-1{i % 10}" for i in range(n)]}), y


def test_registered_and_learns_imputation_flags_scaling_and_levels():
    assert any(e["name"] == "tabular" and e["modality"] == "tabular" for e in list_encoders())
    df, _ = table()
    enc = create_encoder("tabular", numeric=["price"], categorical=["kind"], boolean=["flag"],
                         dates=["day"], min_frequency=3)
    out = enc.fit_transform(row_items(df, enc))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert enc.feature_names_ == ["price", "flag", "day", "missing:price", "kind=big",
                                  "kind=small", "kind=infrequent"]
    # median imputation then robust scaling: a missing price sits at 0 with its flag set
    assert out[0, 0] == 0 and out[0, 3] == 1 and out[1, 3] == 0
    med = np.nanmedian(pd.to_numeric(df["price"]).to_numpy(float))
    assert enc.numeric_.named_steps["impute"].statistics_[0] == pytest.approx(med)
    # rare levels share one column; an unseen level goes there too
    row = enc.transform([{"price": 1, "kind": "never-seen", "flag": "no", "day": None}])[0]
    assert row[4:].tolist() == [0, 0, 1]
    assert abs(row).max() <= enc.clip


def test_fit_on_training_rows_only():
    df, _ = table()
    enc = TabularEncoder(numeric=["price"])
    items = row_items(df, enc)
    a = enc.fit(items[:30]).numeric_.named_steps["impute"].statistics_[0]
    b = TabularEncoder(numeric=["price"]).fit(items).numeric_.named_steps["impute"].statistics_[0]
    assert a == pytest.approx(np.nanmedian(pd.to_numeric(df["price"][:30]).to_numpy(float)))
    assert a != b


@pytest.mark.parametrize("value, match", [
    ("abc", "column 'price' holds 'abc'; expected a number"),
    (math.inf, "column 'price' holds inf; expected a finite number"),
    ("-inf", "expected a finite number"),
    (pd.Timestamp("2024-01-01"), "declare it under dates"),
])
def test_bad_numbers_are_item_errors_naming_row_and_column(value, match):
    enc = TabularEncoder(numeric=["price"], categorical=["kind"]).fit(
        [{"price": 1, "kind": "a"}, {"price": 2, "kind": "b"}])
    rows = [{"price": 1, "kind": "a"}, {"price": value, "kind": "a"}]
    with pytest.raises(InputError, match=f"row 1.*{match}"):
        enc.transform(rows)
    out = enc.transform(rows, on_error="skip")
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()
    assert [(e.row, e.column) for e in enc.errors_] == [(1, "price")]
    with pytest.raises(InputError, match="row 1, column 'price': "):
        enc.transform(rows)


def test_bad_booleans_and_dates_are_refused_clearly():
    enc = TabularEncoder(boolean=["ok"], dates=["d"])
    with pytest.raises(InputError, match="column 'ok' holds 'maybe'; expected a boolean"):
        enc.fit([{"ok": "maybe", "d": "2024-01-01"}])
    with pytest.raises(InputError, match="column 'd' holds 'soon'; expected a date"):
        enc.fit([{"ok": "yes", "d": "soon"}])
    with pytest.raises(InputError, match="column 'd' holds the number 3"):
        enc.fit([{"ok": "yes", "d": 3}])


def test_all_cells_empty_is_a_missing_modality_and_bad_params_are_value_errors():
    enc = TabularEncoder(numeric=["a"], categorical=["b"]).fit(
        [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}])
    out = enc.transform([{"a": None, "b": ""}, {"a": 1.5, "b": None}])
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    with pytest.raises(ValueError, match="at least one column"):
        TabularEncoder().fit([{"a": 1}])
    with pytest.raises(ValueError, match="listed as both numeric and categorical"):
        TabularEncoder(numeric=["a"], categorical=["a"]).fit([{"a": 1}])
    with pytest.raises(InputError, match=r"tabular columns \['zz'\] are not in the data"):
        row_items(pd.DataFrame({"a": [1]}), TabularEncoder(numeric=["zz"]))


def test_in_the_classifier_with_missing_rows_and_a_saved_model(tmp_path):
    import mmfuse

    df, y = table(120)
    rng = np.random.default_rng(1)
    df["x"] = list(rng.normal(size=(120, 3)).astype(np.float32))
    df.loc[3, ["price", "kind", "flag", "day"]] = None   # tabular missing for row 3
    enc = TabularEncoder(numeric=["price"], categorical=["kind"], boolean=["flag"],
                         dates=["day"])
    for fusion in ("late", "early"):
        clf = MultimodalClassifier(encoders={"x": "passthrough", "tabular": enc},
                                   fusion=fusion, random_state=0).fit(df, y)
        assert clf.score(df, y) > 0.8  # price and kind carry the label
        views, present = clf.transform_views(df)
        assert not present["tabular"][3] and present["tabular"].sum() == 119
    path = clf.save(tmp_path / "m.mmfuse")
    back = mmfuse.load(path)
    np.testing.assert_allclose(back.predict_proba(df), clf.predict_proba(df))
    with pytest.raises(InputError, match=r"lacks the columns the model was trained on: "
                                         r"\['price'\]"):
        clf.predict(df.drop(columns=["price"]))


def test_gather_fields_builds_one_row_per_tabular_view():
    from mmfuse.encoders.tabular import gather_fields

    encs = {"tabular": TabularEncoder(numeric=["a"], categorical=["b"]), "text": "tfidf"}
    rest, tables = gather_fields({"a": 1.5, "text": "hi"}, encs)
    assert rest == {"text": "hi"} and tables == {"tabular": {"a": 1.5, "b": None}}
    assert gather_fields({"text": "hi"}, encs) == ({"text": "hi"}, {})
    with pytest.raises(InputError, match="field 'b' .* must be a number, a string"):
        gather_fields({"b": [1, 2]}, encs)


def test_evaluation_and_robustness_treat_tabular_as_one_more_view():
    from mmfuse.evaluate import evaluate
    from mmfuse.evaluate import evaluate_robustness

    df, y = table(120)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 3)).astype(np.float32)
    x[:, 0] += 1.5 * y
    df["x"] = list(x)
    enc = {"x": "passthrough", "tabular": TabularEncoder(numeric=["price"],
                                                         categorical=["kind"])}
    res = evaluate(df, y, encoders=enc, strategies=["late"], cv=3, baseline=False)
    assert {r.name for r in res.rows} == {"x", "tabular", "late"}
    rob = evaluate_robustness(df, y, encoders=enc, strategies=["late"], cv=3,
                              missing_levels=[0.5], missing_modality="tabular",
                              baseline=False)
    assert rob.missing_modality == "tabular"


def test_the_fast_transform_equals_scikit_learns():
    df, _ = table(200, seed=3)
    enc = TabularEncoder(numeric=["price"], categorical=["kind", "flag"], dates=["day"],
                         min_frequency=3)
    items = row_items(df, enc)
    enc.fit(items[:150])
    prepared = [enc.prepare(it) for it in items[150:]]
    prepared.append(enc.prepare({"price": None, "kind": "unseen!", "flag": None, "day": None}))
    np.testing.assert_allclose(enc.embed(prepared), enc.embed_sklearn(prepared), atol=1e-6)
    assert enc.embed(prepared).shape == (51, enc.dim)


def _strategies():
    from mmfuse.fusion import list_fusions

    return sorted(f["name"] for f in list_fusions())


@pytest.mark.parametrize("fusion", _strategies())
def test_every_strategy_takes_the_tabular_view_with_rows_missing_it(fusion, tmp_path):
    if fusion in ("attention", "gmu", "lowrank"):
        pytest.importorskip("torch")
    import mmfuse

    df, y = table(90, seed=4)
    rng = np.random.default_rng(5)
    df["x"] = list(rng.normal(size=(90, 3)).astype(np.float32))  # noise: tabular knows y
    df.loc[[2, 11], ["price", "kind", "flag", "day"]] = None      # tabular missing there
    enc = TabularEncoder(numeric=["price"], categorical=["kind"], boolean=["flag"],
                         dates=["day"])
    clf = MultimodalClassifier(encoders={"x": "passthrough", "tabular": enc},
                               fusion=fusion, cv=3, random_state=0).fit(df, y)
    assert clf.score(df, y) > 0.75, fusion
    proba = clf.predict_proba(df)
    assert np.isfinite(proba).all()
    back = mmfuse.load(clf.save(tmp_path / "m.mmfuse"))
    np.testing.assert_allclose(back.predict_proba(df), proba, rtol=1e-5, atol=1e-6)
    exp = clf.explain(df.iloc[:12])
    assert exp.modalities == ["tabular", "x"]
    assert (exp.contributions[[2, 11], 0] == 0).all()  # an absent modality contributes 0
