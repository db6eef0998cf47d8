"""The HTTP service, started for real on loopback and spoken to over HTTP."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from mmfuse import InputError, MultimodalClassifier, load  # noqa: E402
from mmfuse.predict import PROBA_PREFIX, predict_table  # noqa: E402
from mmfuse.serving import create_app  # noqa: E402
from server_harness import ServerThread, free_port, start_cli_server  # noqa: E402

MAX_UPLOAD = 200_000
MAX_TEXT = 300
MODALITIES = ("audio", "image", "text")


@pytest.fixture(scope="module")
def service(tmp_path_factory, data_root):
    """A small real model (hog + tfidf-hashed + mfcc on Tux Paint stamps), saved, loaded, served."""
    from mmfuse.data.datasets import load_dataset

    X, y, _ = load_dataset("tuxpaint", root=data_root)
    usable = (X[list(MODALITIES)].notna().all(axis=1).to_numpy()
              & np.isin(y, ["animals", "food", "vehicles"])
              & np.array([os.path.getsize(p) < MAX_UPLOAD if isinstance(p, str) else False
                          for p in X["image"]]))
    rows = np.flatnonzero(usable)[::8][:24]
    X = X.iloc[rows][list(MODALITIES)].reset_index(drop=True)
    model = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf-hashed", "audio": "mfcc"},
                                 fusion="late", cv=2, random_state=0).fit(X, y[rows])
    path = model.save(tmp_path_factory.mktemp("serve") / "tux.mmfuse")
    loaded = load(path)
    app = create_app(loaded, max_upload_bytes=MAX_UPLOAD, max_text_chars=MAX_TEXT,
                     batch_max=8, batch_wait_ms=20)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        yield client, loaded, X, path


def _files(row: pd.Series, subset=MODALITIES) -> tuple[dict, dict]:
    files, data = {}, {}
    if "image" in subset:
        files["image"] = ("stamp.png", Path(row["image"]).read_bytes(), "image/png")
    if "audio" in subset:
        files["audio"] = ("said.ogg", Path(row["audio"]).read_bytes(), "audio/ogg")
    if "text" in subset:
        data["text"] = row["text"]
    return files, data


def _expected(model, row: pd.Series, subset=MODALITIES) -> pd.Series:
    table = pd.DataFrame([{m: (row[m] if m in subset else None) for m in MODALITIES}])
    return predict_table(model, table).iloc[0]


def _check_answer(answer: dict, expected: pd.Series, model, subset) -> None:
    assert answer["label"] == expected["label"]
    got = np.array([answer["probabilities"][str(c)] for c in model.classes_])
    want = np.array([expected[f"{PROBA_PREFIX}{c}"] for c in model.classes_])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert answer["modalities_used"] == sorted(subset)
    assert sorted(answer["modality_weights"]) == sorted(subset)
    assert sum(answer["modality_weights"].values()) == pytest.approx(1.0)


# -- the good path -----------------------------------------------------------------------------


def test_health_model_and_docs(service):
    client, model, _, _ = service
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["classes"] == model.classes_.tolist()
    assert info["modalities"] == list(MODALITIES)
    assert {c: e["encoder"] for c, e in info["encoders"].items()} == {
        "audio": "mfcc", "image": "hog", "text": "tfidf-hashed"}
    assert info["encoders"]["image"]["fingerprint"] == model.encoders_["image"].fingerprint
    import mmfuse

    assert info["mmfuse_version"] == mmfuse.__version__
    assert info["model_file"]["schema_version"] == 1
    assert info["limits"] == {"max_upload_bytes": MAX_UPLOAD, "max_text_chars": MAX_TEXT}
    docs = client.get("/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"]
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {"multipart/form-data", "application/json"}
    assert set(body["multipart/form-data"]["schema"]["properties"]) == set(MODALITIES)


def test_multipart_with_every_modality(service):
    client, model, X, _ = service
    for i in range(3):
        files, data = _files(X.iloc[i])
        response = client.post("/predict", files=files, data=data)
        assert response.status_code == 200, response.text
        _check_answer(response.json(), _expected(model, X.iloc[i]), model, MODALITIES)


@pytest.mark.parametrize("subset", [s for k in (1, 2)
                                    for s in itertools.combinations(MODALITIES, k)])
def test_any_subset_of_modalities(service, subset):
    client, model, X, _ = service
    row = X.iloc[5]
    files, data = _files(row, subset)
    response = client.post("/predict", files=files or None, data=data or None)
    assert response.status_code == 200, response.text
    _check_answer(response.json(), _expected(model, row, subset), model, subset)


def test_json_with_base64_files(service):
    client, model, X, _ = service
    row = X.iloc[2]
    image = base64.b64encode(Path(row["image"]).read_bytes()).decode()
    audio = "data:audio/ogg;base64," + base64.b64encode(Path(row["audio"]).read_bytes()).decode()
    response = client.post("/predict", json={"image": image, "audio": audio, "text": row["text"]})
    assert response.status_code == 200, response.text
    _check_answer(response.json(), _expected(model, row), model, MODALITIES)
    # null and "" mean missing, as in a table
    response = client.post("/predict", json={"image": None, "audio": "", "text": row["text"]})
    _check_answer(response.json(), _expected(model, row, ("text",)), model, ("text",))


def test_a_field_given_several_times_is_one_cell_of_several_files(service):
    """Several uploads of one image field (or a JSON list) are one cell of several files,
    pooled as a list cell of a table is; other fields stay single."""
    client, model, X, _ = service
    paths = [X.iloc[i]["image"] for i in (1, 2)]
    text = X.iloc[1]["text"]
    expected = predict_table(model, pd.DataFrame({"image": [paths], "audio": [None],
                                                  "text": [text]})).iloc[0]
    files = [("image", (f"s{i}.png", Path(p).read_bytes(), "image/png"))
             for i, p in enumerate(paths)]
    response = client.post("/predict", files=files, data={"text": text})
    assert response.status_code == 200, response.text
    _check_answer(response.json(), expected, model, ("image", "text"))
    images = [base64.b64encode(Path(p).read_bytes()).decode() for p in paths]
    response = client.post("/predict", json={"image": images, "text": text})
    assert response.status_code == 200, response.text
    _check_answer(response.json(), expected, model, ("image", "text"))
    twice = client.post("/predict", files=[("text", ("a.txt", b"a", "text/plain")),
                                           ("text", ("b.txt", b"b", "text/plain"))])
    assert twice.status_code == 422 and twice.json()["error"]["code"] == "duplicate_field"


def test_urlencoded_text(service):
    client, model, X, _ = service
    row = X.iloc[7]
    response = client.post("/predict", content=f"text={row['text']}".encode(),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 200, response.text
    _check_answer(response.json(), _expected(model, row, ("text",)), model, ("text",))


def test_concurrent_clients_are_batched(service):
    client, model, X, _ = service
    distinct = [_expected(model, X.iloc[i]) for i in range(8)]
    rows = [X.iloc[i % 8] for i in range(16)]
    expected = [distinct[i % 8] for i in range(16)]
    before = client.get("/health").json()

    def ask(row):
        files, data = _files(row)
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            return own.post("/predict", files=files, data=data)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, rows))
    for response, want in zip(answers, expected):
        assert response.status_code == 200, response.text
        _check_answer(response.json(), want, model, MODALITIES)
    after = client.get("/health").json()
    assert after["requests"] - before["requests"] == 16
    assert after["batches"] - before["batches"] < 16  # some requests shared a batch
    assert after["max_batch_size"] >= 2


# -- bad input ---------------------------------------------------------------------------------


def _bad_requests(X: pd.DataFrame) -> list[tuple[str, dict, int, str]]:
    row = X.iloc[0]
    png = Path(row["image"]).read_bytes()
    ogg = Path(row["audio"]).read_bytes()
    multipart = "multipart/form-data; boundary=xyz"
    return [
        ("oversize file", {"files": {"image": ("big.png", b"\x89PNG" + bytes(MAX_UPLOAD),
                                               "image/png")}}, 413, "too_large"),
        ("oversize body", {"files": {"image": ("a.png", png, "image/png"),
                                     "audio": ("b.ogg", bytes(3 * MAX_UPLOAD), "audio/ogg")}},
         413, "too_large"),
        ("oversize base64", {"json": {"image": base64.b64encode(bytes(MAX_UPLOAD + 10)).decode()}},
         413, "too_large"),
        ("undecodable image", {"files": {"image": ("a.png", b"definitely not a png", "image/png")}},
         422, "undecodable"),
        ("truncated image", {"files": {"image": ("a.png", png[: len(png) // 2], "image/png")}},
         422, "undecodable"),
        ("image sent as audio", {"files": {"audio": ("a.ogg", png, "audio/ogg")}},
         422, "undecodable"),
        ("truncated audio", {"files": {"audio": ("a.ogg", ogg[:500], "audio/ogg")}},
         422, "undecodable"),
        ("wrong request type", {"content": b"text=hello",
                                "headers": {"content-type": "text/plain"}},
         415, "unsupported_media_type"),
        ("wrong file type", {"files": {"image": ("a.pdf", png, "application/pdf")}},
         415, "unsupported_file_type"),
        ("audio as video", {"files": {"audio": ("a.mp4", ogg, "video/mp4")}},
         415, "unsupported_file_type"),
        ("unknown field", {"data": {"text": "a frog", "caption": "x"}}, 422, "unknown_field"),
        ("unknown json field", {"json": {"text": "a frog", "label": "animals"}}, 422,
         "unknown_field"),
        ("duplicate field", {"content": b"text=a&text=b",
                             "headers": {"content-type": "application/x-www-form-urlencoded"}},
         422, "duplicate_field"),
        ("empty body", {"content": b"", "headers": {"content-type": multipart}}, 400,
         "empty_request"),
        ("empty json", {"json": {}}, 400, "empty_request"),
        ("no content type", {"content": b"abc"}, 415, "unsupported_media_type"),
        ("only missing values", {"json": {"text": None, "image": ""}}, 422,
         "no_usable_modality"),
        ("blank text", {"data": {"text": "   \n "}}, 422, "no_usable_modality"),
        ("text too long", {"data": {"text": "frog " * MAX_TEXT}}, 413, "text_too_long"),
        ("json text too long", {"json": {"text": "x" * (MAX_TEXT + 1)}}, 413, "text_too_long"),
        ("text not a string", {"json": {"text": 42}}, 422, "bad_text"),
        ("invalid utf-8", {"files": {"text": ("t.txt", b"\xff\xfe\xfa", "text/plain")}}, 422,
         "bad_text"),
        ("invalid json", {"content": b'{"text": ', "headers": {"content-type": "application/json"}},
         400, "bad_json"),
        ("json array", {"json": ["a frog"]}, 422, "bad_json"),
        ("bad base64", {"json": {"image": "***not base64***"}}, 422, "bad_base64"),
        ("base64 of a number", {"json": {"image": 12}}, 422, "bad_base64"),
        ("path instead of a file", {"data": {"image": row["image"]}}, 422, "expected_file"),
        ("path in json", {"json": {"image": row["image"]}}, 422, "bad_base64"),
        ("base64 of a path", {"json": {"image": base64.b64encode(row["image"].encode()).decode()}},
         422, "undecodable"),
        ("data uri of the wrong type", {"json": {"image": "data:text/html;base64,PGI+"}}, 415,
         "unsupported_file_type"),
        ("empty file", {"files": {"image": ("a.png", b"", "image/png")}}, 422, "empty_file"),
        ("malformed multipart", {"content": b"--abc\r\nnonsense", "headers": {
            "content-type": multipart}}, 400, "bad_multipart"),
        ("multipart without boundary", {"content": b"x", "headers": {
            "content-type": "multipart/form-data"}}, 400, "bad_multipart"),
    ]


def test_burst_of_bad_requests_then_good_ones(service):
    client, model, X, _ = service
    for name, kwargs, status, code in _bad_requests(X):
        response = client.post("/predict", **kwargs)
        assert response.status_code == status, (name, response.status_code, response.text)
        assert response.headers["content-type"].startswith("application/json"), name
        error = response.json()["error"]
        assert code in error["code"], (name, error)
        assert error["message"], name
    for method, url, status in [("GET", "/predict", 405), ("GET", "/nowhere", 404),
                                ("DELETE", "/model", 405)]:
        response = client.request(method, url)
        assert response.status_code == status
        assert "error" in response.json()
    # the service keeps serving, and answers correctly
    assert client.get("/health").json()["status"] == "ok"
    for i in (0, 1):
        files, data = _files(X.iloc[i])
        response = client.post("/predict", files=files, data=data)
        assert response.status_code == 200
        _check_answer(response.json(), _expected(model, X.iloc[i]), model, MODALITIES)


def test_concurrent_bad_and_good_requests(service):
    client, model, X, _ = service
    bad = _bad_requests(X)
    jobs = [("bad", b) for b in bad[:12]] + [("good", i) for i in range(6)]

    def send(job):
        kind, payload = job
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            if kind == "bad":
                return kind, payload, own.post("/predict", **payload[1])
            files, data = _files(X.iloc[payload])
            return kind, payload, own.post("/predict", files=files, data=data)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, jobs))
    for kind, payload, response in results:
        if kind == "bad":
            assert response.status_code == payload[2], payload[0]
        else:
            assert response.status_code == 200
            _check_answer(response.json(), _expected(model, X.iloc[payload]), model, MODALITIES)


def test_create_app_checks_its_arguments(service):
    _, model, _, _ = service
    with pytest.raises(InputError, match="max_upload_bytes must be a positive int"):
        create_app(model, max_upload_bytes=0)
    with pytest.raises(InputError, match="batch_wait_ms"):
        create_app(model, batch_wait_ms=-1)


def test_no_request_path_is_ever_opened(service, monkeypatch):
    """Strings that look like paths reach no file-opening code, whatever the field."""
    import mmfuse.preprocess.audio as audio_module
    import mmfuse.preprocess.image as image_module

    client, _, X, _ = service
    opened = []

    def spy(path, *args, **kwargs):
        opened.append(path)
        raise AssertionError(f"the service opened {path!r}")

    monkeypatch.setattr(image_module, "open", spy, raising=False)
    monkeypatch.setattr(audio_module, "open", spy, raising=False)
    row = X.iloc[0]
    attempts = [
        {"data": {"image": row["image"]}},
        {"data": {"audio": row["audio"], "text": row["text"]}},
        {"json": {"image": row["image"], "text": "x"}},
        {"json": {"audio": "file://" + row["audio"]}},
        {"files": {"image": (row["image"], b"not an image", "image/png")}},
        {"json": {"image": base64.b64encode(row["image"].encode()).decode()}},
    ]
    for kwargs in attempts:
        assert client.post("/predict", **kwargs).status_code in (415, 422)
    # a real upload still works with the spies in place: it is decoded from memory
    files, data = _files(row)
    assert client.post("/predict", files=files, data=data).status_code == 200
    assert opened == []


def test_passthrough_features_as_json():
    from conftest import make_views

    views, y = make_views(n=100)
    model = MultimodalClassifier(fusion="late", cv=3, random_state=0).fit(views, y)
    with ServerThread(create_app(model, batch_wait_ms=0)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            info = client.get("/model").json()
            assert info["encoders"]["a"] == {"modality": "features", "encoder": "passthrough",
                                             "fingerprint": None, "dim": 12}
            answer = client.post("/predict", json={"a": views["a"][0].tolist()}).json()
            expected = {"a": views["a"][:1], "b": np.full((1, 8), np.nan, np.float32)}
            np.testing.assert_allclose([answer["probabilities"][str(c)] for c in model.classes_],
                                       model.predict_proba(expected)[0], rtol=1e-6)
            assert answer["modalities_used"] == ["a"]
            both = client.post("/predict", data={"a": json.dumps(views["a"][1].tolist()),
                                                 "b": json.dumps(views["b"][1].tolist())})
            assert both.json()["modalities_used"] == ["a", "b"]
            bad = client.post("/predict", json={"a": [1.0, 2.0]})
            assert bad.status_code == 422 and "expects 12" in bad.json()["error"]["message"]
            bad = client.post("/predict", json={"a": ["x"] * 12})
            assert bad.status_code == 422


def test_the_service_answers_the_same_sets_as_the_loaded_model(tmp_path):
    from conftest import make_views

    views, y = make_views(n=240)
    fitted = MultimodalClassifier(fusion="late", cv=3, calibration="temperature",
                                  coverage=0.9, random_state=0).fit(views, y)
    model = load(fitted.save(tmp_path / "m.mmfuse"))
    rows = range(12)
    only_a = {"a": views["a"][:12], "b": np.full((12, 8), np.nan, np.float32)}
    expected = {"both": model.predict_set({k: v[:12] for k, v in views.items()}),
                "a": model.predict_set(only_a)}
    assert (expected["both"] == fitted.predict_set({k: v[:12] for k, v in views.items()})).all()
    with ServerThread(create_app(model, batch_wait_ms=0)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for i in rows:
                both = client.post("/predict", json={"a": views["a"][i].tolist(),
                                                     "b": views["b"][i].tolist()}).json()
                assert both["set"] == model.classes_[expected["both"][i]].tolist()
                one = client.post("/predict", json={"a": views["a"][i].tolist()}).json()
                assert one["set"] == model.classes_[expected["a"][i]].tolist()
            plain = MultimodalClassifier(fusion="early").fit(views, y)
    with ServerThread(create_app(plain, batch_wait_ms=0)) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert "set" not in client.post("/predict",
                                            json={"a": views["a"][0].tolist()}).json()


# -- production: keys, TLS, overload, shutdown, metrics ------------------------------------------

KEYS = ("k-3f9a1c7e5b2d4f60a8c1", "k-second-7d2e9b14c3a6")


def _text_request(row: pd.Series) -> dict:
    return {"data": {"text": row["text"]}}


def test_load_api_keys_from_a_file_and_the_environment(tmp_path):
    from mmfuse.serving import load_api_keys

    path = tmp_path / "keys.txt"
    path.write_text(f"# production keys\n\n  {KEYS[0]}  \n{KEYS[1]}\n")
    assert load_api_keys(path, environ={}) == list(KEYS)
    assert load_api_keys(None, environ={"MMFUSE_API_KEYS": "a1, b2 c3"}) == ["a1", "b2", "c3"]
    assert load_api_keys(path, environ={"MMFUSE_API_KEYS": "e1"}) == [*KEYS, "e1"]
    assert load_api_keys(None, environ={}) == []
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    with pytest.raises(InputError, match="holds no key"):
        load_api_keys(tmp_path / "empty.txt", environ={})
    with pytest.raises(InputError, match="cannot read the API key file .*missing.txt"):
        load_api_keys(tmp_path / "missing.txt", environ={})
    (tmp_path / "spaced.txt").write_text("good-key\nsecret with spaces\n")
    with pytest.raises(InputError, match="line 2 of the API key file") as info:
        load_api_keys(tmp_path / "spaced.txt", environ={})
    assert "secret" not in str(info.value)  # errors never echo a key


def test_startup_notices_say_who_can_get_in():
    import logging

    from mmfuse.serving.server import startup_notices as _startup_notices

    (level, text), = _startup_notices("127.0.0.1", 8000, 0, False)
    assert level == logging.INFO and "unauthenticated" in text
    (level, text), = _startup_notices("0.0.0.0", 8000, 0, False)
    assert level == logging.WARNING and "unauthenticated" in text and "anyone" in text
    (level, text), = _startup_notices("::1", 8000, 2, True)
    assert level == logging.INFO and "2 accepted" in text and "https://" in text
    notices = _startup_notices("10.1.2.3", 8000, 1, False)
    assert [lvl for lvl, _ in notices] == [logging.INFO, logging.WARNING]
    assert "clear text" in notices[1][1]


def test_api_keys_guard_everything_but_health(service, caplog):
    import logging

    client, model, X, _ = service
    caplog.set_level(logging.INFO, logger="mmfuse")
    row = X.iloc[4]
    app = create_app(model, api_keys=KEYS, batch_wait_ms=0)
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=60) as c:
        assert c.get("/health").status_code == 200  # open: it tells nothing about the model
        for path in ("/model", "/metrics", "/openapi.json"):
            assert c.get(path).status_code == 401, path
        refused = [
            ({}, "Bearer realm=\"mmfuse\""),
            ({"Authorization": "Bearer wrong-key"}, 'error="invalid_token"'),
            ({"X-API-Key": KEYS[0][:-1]}, 'error="invalid_token"'),
            ({"Authorization": f"Basic {KEYS[0]}"}, "Bearer realm"),  # not a bearer token
        ]
        for headers, challenge in refused:
            response = c.post("/predict", headers=headers, **_text_request(row))
            assert response.status_code == 401, headers
            assert response.json()["error"]["code"] == "unauthorized"
            assert challenge in response.headers["www-authenticate"]
        expected = _expected(model, row, ("text",))
        for headers in ({"Authorization": f"Bearer {KEYS[0]}"},
                        {"authorization": f"bearer {KEYS[1]}"}, {"X-API-Key": KEYS[1]}):
            response = c.post("/predict", headers=headers, **_text_request(row))
            assert response.status_code == 200, headers
            _check_answer(response.json(), expected, model, ("text",))
        assert c.get("/model", headers={"X-API-Key": KEYS[0]}).json()["classes"] == \
            model.classes_.tolist()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /predict 401" in logged and "POST /predict 200" in logged
    for secret in (*KEYS, "wrong-key", row["text"]):
        assert secret not in logged


def _metric_samples(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_and_access_log_hold_no_request_content(service, caplog):
    import logging

    client, model, X, path = service
    caplog.set_level(logging.INFO, logger="mmfuse")
    row = X.iloc[6]
    files, data = _files(row)
    files["image"] = ("holiday-photo-of-anna.png", *files["image"][1:])
    assert client.post("/predict", files=files, data=data).status_code == 200
    assert client.post("/predict", json={"text": "x" * (MAX_TEXT + 1)}).status_code == 413
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = _metric_samples(response.text)
    ok = (("method", "POST"), ("path", "/predict"), ("status", "200"))
    assert samples[("mmfuse_http_requests_total", ok)] >= 1
    assert samples[("mmfuse_http_requests_total", ok[:2] + (("status", "413"),))] >= 1
    assert samples[("mmfuse_http_request_duration_seconds_count", (("path", "/predict"),))] >= 2
    assert samples[("mmfuse_batch_size_count", ())] >= 1
    assert samples[("mmfuse_batch_size_sum", ())] >= samples[("mmfuse_batch_size_count", ())]
    assert samples[("mmfuse_queue_depth", ())] == 0
    assert samples[("mmfuse_predict_in_progress", ())] == 0
    info = [labels for (name, labels), _ in samples.items() if name == "mmfuse_model_info"]
    assert dict(info[0])["model_id"] == model.model_file_["payload"]["sha256"]
    # two apps, two registries: metrics never leak between them (nor into the global one)
    other = create_app(model, warm_up=False)
    from prometheus_client import REGISTRY, generate_latest

    assert b"mmfuse_http_requests_total" not in generate_latest(REGISTRY)
    assert b'mmfuse_http_requests_total{' not in generate_latest(other.state.metrics_registry)
    access = [r.getMessage() for r in caplog.records if r.name == "mmfuse.access"]
    assert any(line.startswith("POST /predict 200 ") and line.endswith(" bytes")
               for line in access), access
    everything = response.text + "\n".join(r.getMessage() for r in caplog.records)
    for content in (row["text"], "holiday-photo-of-anna", "said.ogg", "xxxxxxxx"):
        assert content not in everything


def test_overload_is_answered_at_once_and_timeouts_are_503(service):
    """Two requests fill the service (max_queue=2) and wait in a long batch window: ten more
    get 503 + Retry-After at once; the two time out (503) before the batch would run."""
    client, model, X, _ = service
    row = X.iloc[1]
    app = create_app(model, max_queue=2, request_timeout=6.0, batch_max=3, batch_wait_ms=10_000)
    with ServerThread(app) as server, ThreadPoolExecutor(12) as pool:
        def ask(_=None, **kwargs):
            with httpx.Client(base_url=server.url, timeout=60) as own:
                return own.post("/predict", **(kwargs or _text_request(row)))

        holders = [pool.submit(ask) for _ in range(2)]
        # wait until both are held (each ends by itself at the latest at its own timeout)
        while _metric_samples(httpx.get(server.url + "/metrics").text)[
                ("mmfuse_predict_in_progress", ())] < 2:
            assert not any(h.done() for h in holders), "a held request ended before the burst"
            time.sleep(0.02)
        files, data = _files(row)
        burst = list(pool.map(lambda i: ask(files=files, data=data) if i % 2 else ask(), range(10)))
        for response in burst:
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"] == "1"
            assert response.json()["error"]["code"] == "overloaded"
        # a bad request is still a 4xx when the service is full, not a 503
        bad = ask(content=b"x", headers={"content-type": "text/plain"})
        assert bad.status_code == 415
        for future in holders:
            response = future.result()
            assert response.status_code == 503 and response.json()["error"]["code"] == "timeout"
            assert response.headers["retry-after"] == "1"
        # healthy afterwards: the next request is answered (it fills the batch of 3)
        response = ask()
        assert response.status_code == 200
        _check_answer(response.json(), _expected(model, row, ("text",)), model, ("text",))
        samples = _metric_samples(httpx.get(server.url + "/metrics").text)
        assert samples[("mmfuse_predict_rejected_total", (("reason", "overload"),))] == 10
        assert samples[("mmfuse_predict_rejected_total", (("reason", "timeout"),))] == 2
        assert samples[("mmfuse_predict_in_progress", ())] == 0


def test_a_body_that_never_arrives_gets_408(service):
    _, model, _, _ = service
    app = create_app(model, request_timeout=1.0, warm_up=False)
    with ServerThread(app) as server, socket.create_connection((server.host, server.port),
                                                               timeout=30) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: test\r\nContent-Type: application/json"
                     b"\r\nContent-Length: 100\r\n\r\n{\"text\": ")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer
        with httpx.Client(base_url=server.url) as c:
            samples = _metric_samples(c.get("/metrics").text)
        assert samples[("mmfuse_predict_rejected_total", (("reason", "body_timeout"),))] == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_cli_https_keys_and_graceful_sigterm(service, tmp_path):
    """The production set-up in one real `mmfuse serve` process: HTTPS, keys from a file and
    from $MMFUSE_API_KEYS. 20 requests wait in an 8 s batch window; on SIGTERM the service
    refuses new connections, answers all 20 with 200 and exits 0; its log holds no key and
    no text."""
    import signal

    pytest.importorskip("cryptography")
    _, model, X, path = service
    cert, key = _self_signed(tmp_path)
    trust = ssl.create_default_context(cafile=str(cert))
    keys = tmp_path / "keys.txt"
    keys.write_text(KEYS[0] + "\n")
    proc, url = start_cli_server(path, "--api-key-file", str(keys), "--ssl-certfile", str(cert),
                                 "--ssl-keyfile", str(key), "--batch-max", "32",
                                 "--batch-wait-ms", "8000", env={"MMFUSE_API_KEYS": KEYS[1]},
                                 scheme="https", verify=trust)
    port = int(url.rsplit(":", 1)[1])
    rows = [X.iloc[i % len(X)] for i in range(20)]
    auth = [{"Authorization": f"Bearer {KEYS[0]}"}, {"X-API-Key": KEYS[1]}]
    try:
        with httpx.Client(base_url=url, verify=trust, timeout=60) as c:
            assert c.get("/health").json()["status"] == "ok"
            assert c.post("/predict", **_text_request(rows[0])).status_code == 401
            assert c.get("/metrics").status_code == 401
        with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
        with pytest.raises(httpx.ConnectError):  # an unknown certificate is not trusted
            httpx.get(url + "/health", timeout=5)

        def ask(i):
            with httpx.Client(base_url=url, verify=trust, timeout=60, headers=auth[i % 2]) as c:
                return c.post("/predict", **_text_request(rows[i]))

        def in_progress() -> float:
            text = httpx.get(url + "/metrics", verify=trust, headers=auth[0]).text
            return _metric_samples(text)[("mmfuse_predict_in_progress", ())]

        with ThreadPoolExecutor(20) as pool:
            futures = [pool.submit(ask, i) for i in range(20)]
            while in_progress() < 20:  # each request ends by itself at its client timeout
                assert not any(f.done() for f in futures), "a request ended before SIGTERM"
                time.sleep(0.02)
            proc.send_signal(signal.SIGTERM)
            refused = False
            while not all(f.done() for f in futures) and not refused:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    time.sleep(0.02)
                except OSError:
                    refused = True
            answers = [f.result() for f in futures]
        assert refused, "the service still accepted connections while draining"
        for row, response in zip(rows, answers):
            assert response.status_code == 200, response.text
            _check_answer(response.json(), _expected(model, row, ("text",)), model, ("text",))
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0].decode()
    assert "API keys required (2 accepted)" in output and "https://" in output, output
    assert "POST /predict 200" in output and "POST /predict 401" in output
    assert "stopped after SIGTERM" in output
    for secret in (*KEYS, *(row["text"] for row in rows)):
        assert secret not in output


def test_cli_serve_refuses_bad_keys_and_certificates(service, tmp_path):
    from typer.testing import CliRunner

    from mmfuse.cli import app as cli

    _, _, _, path = service
    runner = CliRunner()
    (tmp_path / "keys.txt").write_text("\n# none\n")
    (tmp_path / "cert.pem").write_text("not a certificate")
    for options, message in [
        (["--api-key-file", str(tmp_path / "nope.txt")], "cannot read the API key file"),
        (["--api-key-file", str(tmp_path / "keys.txt")], "holds no key"),
        (["--ssl-certfile", str(tmp_path / "cert.pem")], "could not be loaded"),
        (["--ssl-keyfile", str(tmp_path / "cert.pem")], "without ssl_certfile"),
    ]:
        result = runner.invoke(cli, ["serve", str(path), "--port", str(free_port()), *options])
        assert result.exit_code == 2, (options, result.output)
        assert message in " ".join(result.output.split()), result.output
        assert "Traceback" not in result.output
