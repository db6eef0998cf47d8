"""The HTTP service, started for real on loopback and spoken to over HTTP."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import subprocess
import sys
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
from mmfuse.serve import ServerThread, create_app  # noqa: E402

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_server_serves_a_model_file(service):
    _, model, X, path = service
    port = _free_port()
    code = ("import sys; from mmfuse.serve import run_server; "
            f"run_server(sys.argv[1], '127.0.0.1', {port}, log_level='warning')")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        row = X.iloc[3]
        response = httpx.post(url + "/predict", data={"text": row["text"]}, timeout=30)
        assert response.status_code == 200
        _check_answer(response.json(), _expected(model, row, ("text",)), model, ("text",))
    finally:
        proc.terminate()
        proc.wait(20)


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
