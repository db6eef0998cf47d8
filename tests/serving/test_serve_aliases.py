"""A model trained from a manifest with its own column names (`mmfuse train --text caption`)
takes request fields under those names too."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mmfuse import MultimodalClassifier, load  # noqa: E402
from server_harness import ServerThread  # noqa: E402

from mmfuse.serving import create_app  # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    df = pd.DataFrame({"text": [("big box" if v else "small ball") + f" {i}"
                                for i, v in enumerate(y)]})
    model = MultimodalClassifier(encoders={"text": "tfidf-hashed"}, fusion="late", cv=3,
                                 random_state=0).fit(df, y, source_columns={"text": "caption"})
    loaded = load(model.save(tmp_path_factory.mktemp("alias") / "m.mmfuse"))
    with ServerThread(create_app(loaded, batch_wait_ms=0)) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def test_fields_named_after_the_training_manifest_are_accepted(service):
    client = service
    by_alias = client.post("/predict", json={"caption": "big box"})
    by_name = client.post("/predict", json={"text": "big box"})
    assert by_alias.status_code == 200, by_alias.text
    assert by_alias.json()["probabilities"] == by_name.json()["probabilities"]
    form = client.post("/predict", data={"caption": "big box"})
    assert form.status_code == 200 and form.json()["label"] == by_name.json()["label"]
    assert client.get("/model").json()["encoders"]["text"]["field_alias"] == "caption"
    schema = client.get("/openapi.json").json()
    assert "caption" in str(schema)


def test_a_column_given_under_both_names_is_refused(service):
    client = service
    r = client.post("/predict", json={"caption": "big box", "text": "small ball"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_field"
    r = client.post("/predict", data={"caption": "big box", "text": "small ball"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "duplicate_field"
