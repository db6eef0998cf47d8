"""The service with a tabular view: fields named after the columns, and explain=true."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mmfuse import MultimodalClassifier, load  # noqa: E402
from mmfuse.encoders.tabular import TabularEncoder  # noqa: E402
from server_harness import ServerThread  # noqa: E402

from mmfuse.serving import create_app  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 120
    y = rng.integers(0, 2, n)
    df = pd.DataFrame({
        "size": (3.0 * y + rng.normal(size=n)).round(3),
        "shape": np.where(rng.random(n) < 0.8, np.where(y == 1, "square", "round"), "oval"),
        "text": [("big box" if v else "small ball") + f" {i}" for i, v in enumerate(y)],
    })
    model = MultimodalClassifier(
        encoders={"text": "tfidf-hashed",
                  "tabular": TabularEncoder(numeric=["size"], categorical=["shape"])},
        fusion="late", cv=3, random_state=0).fit(df, y)
    path = model.save(tmp_path_factory.mktemp("serve") / "tab.mmfuse")
    loaded = load(path)
    with ServerThread(create_app(loaded, batch_wait_ms=0)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, loaded, df


def test_tabular_fields_are_named_after_the_columns(service):
    client, model, df = service
    info = client.get("/model").json()
    assert info["encoders"]["tabular"]["columns"] == ["size", "shape"]
    r = client.post("/predict", json={"size": 3.2, "shape": "square"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["modalities_used"] == ["tabular"] and body["label"] == 1
    expected = model.predict_proba(pd.DataFrame({"size": [3.2], "shape": ["square"],
                                                 "text": [None]}))[0]
    np.testing.assert_allclose([body["probabilities"][c] for c in ("0", "1")], expected,
                               rtol=1e-6)
    form = client.post("/predict", data={"size": "3.2", "shape": "square", "text": "big box"})
    assert form.status_code == 200 and form.json()["modalities_used"] == ["tabular", "text"]


def test_bad_tabular_values_are_422_naming_the_column(service):
    client, _, _ = service
    r = client.post("/predict", json={"size": "huge", "shape": "square"})
    assert r.status_code == 422 and "column 'size' holds 'huge'" in r.json()["error"]["message"]
    r = client.post("/predict", json={"size": [1, 2]})
    assert r.status_code == 422 and "field 'size'" in r.json()["error"]["message"]


def test_explain_true_adds_the_contributions(service):
    client, model, df = service
    r = client.post("/predict?explain=true", json={"size": 3.0, "shape": "square",
                                                   "text": "big box"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body["contributions"]) == {"tabular", "text"}
    assert body["explain_method"] == "log-share"
    assert abs(sum(abs(v) for v in body["contributions"].values()) - 1) < 1e-6
    plain = client.post("/predict", json={"size": 3.0, "shape": "square", "text": "big box"})
    assert plain.json()["probabilities"] == pytest.approx(body["probabilities"])
    assert "contributions" not in plain.json()


def test_tabular_fields_all_empty_mean_the_modality_is_missing(service):
    client, model, _ = service
    r = client.post("/predict", json={"size": None, "shape": "", "text": "big box"})
    assert r.status_code == 200, r.text
    assert r.json()["modalities_used"] == ["text"]
    expected = model.predict_proba(pd.DataFrame({"size": [None], "shape": [None],
                                                 "text": ["big box"]}))[0]
    np.testing.assert_allclose([r.json()["probabilities"][c] for c in ("0", "1")], expected,
                               rtol=1e-6)
    # in a form, an empty field is an empty cell too
    form = client.post("/predict", data={"size": "", "shape": "", "text": "big box"})
    assert form.status_code == 200 and form.json()["modalities_used"] == ["text"]
    # one column sent, the other absent: the absent one is an empty cell, imputed
    part = client.post("/predict", json={"size": 3.1})
    assert part.status_code == 200 and part.json()["modalities_used"] == ["tabular"]
    # nothing usable at all
    none = client.post("/predict", json={"size": None, "shape": None})
    assert none.status_code == 422
    assert none.json()["error"]["code"] == "no_usable_modality"


@pytest.mark.parametrize("value, message", [
    ("inf", "column 'size' holds 'inf'; expected a finite number"),
    ("1e999", "expected a finite number"),
    (True, None),  # a JSON boolean in a numeric column is 1.0, like a boolean cell
])
def test_non_finite_numbers_are_422_naming_the_column(service, value, message):
    client, _, _ = service
    r = client.post("/predict", json={"size": value, "shape": "square"})
    if message is None:
        assert r.status_code == 200, r.text
        return
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert message in error["message"] and error["field"] == "size"
    assert error["code"] == "bad_value"
