"""The same rows give the same views on every path from raw columns (issue 28): a model's
``predict``, a feature store written by ``mmfuse extract`` and read back, ``explain`` and
the HTTP service, for a fixed configuration and for one that chooses its image encoder
among candidates, with cells of several image files (mean-pooled) and a missing cell."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from typer.testing import CliRunner  # noqa: E402

from mmfuse import MultimodalClassifier  # noqa: E402

N = 24


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """Rows of images (every fourth row: three files in one cell, one row: none) and text."""
    from PIL import Image

    root = tmp_path_factory.mktemp("paths")
    rng = np.random.default_rng(0)
    y = np.arange(N) % 2
    cells, texts = [], []
    for i, label in enumerate(y):
        files = []
        for j in range(3 if i % 4 == 0 else 1):
            pixels = rng.integers(0, 90, size=(24, 24, 3), dtype=np.uint8)
            pixels[..., 0 if label else 2] += 120  # red or blue
            path = root / f"img{i}_{j}.png"
            Image.fromarray(pixels).save(path)
            files.append(str(path))
        cells.append(None if i == 5 else files if len(files) > 1 else files[0])
        texts.append(None if i == 7 else ("warm red sun" if label else "cold blue sea")
                     + f" note {i}")
    df = pd.DataFrame({"image": cells, "text": texts})
    manifest = root / "manifest.csv"
    pd.DataFrame({"image": [" | ".join(c) if isinstance(c, list) else (c or "")
                            for c in cells],
                  "text": [t or "" for t in texts], "label": y}).to_csv(manifest, index=False)
    return root, df, y, manifest


def _predict_path(model, df, monkeypatch):
    """The views ``model.predict`` scores."""
    seen = {}
    original = model.fusion_.predict_proba

    def spy(views, present=None):
        seen.setdefault("views", (views, present))
        return original(views, present)

    monkeypatch.setattr(model.fusion_, "predict_proba", spy)
    model.predict(df)
    monkeypatch.undo()
    return seen["views"]


def _explain_path(model, df, monkeypatch):
    """The views ``model.explain`` explains."""
    import mmfuse.explain as explain

    seen = {}
    original = explain.explain_views

    def spy(fusion, views, present):
        seen["views"] = (views, present)
        return original(fusion, views, present)

    monkeypatch.setattr(explain, "explain_views", spy)
    model.explain(df)
    monkeypatch.undo()
    return seen["views"]


def _store_path(model, manifest, root):
    """The views of a feature store written by ``mmfuse extract`` with the model's encoders."""
    from mmfuse.cli import app
    from mmfuse.features import load

    encs = ",".join(f"{m}={model.encoders_[m].name}" for m in ("image", "text"))
    out = root / f"store-{model.encoders_['image'].name}"
    result = CliRunner().invoke(app, ["extract", "--manifest", str(manifest), "--image",
                                      "image", "--text", "text", "--encoders", encs,
                                      "--out", str(out), "--shard-size", "10",
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    store = load(out)
    return store.views, store.present


def _service_path(model, df, monkeypatch):
    """The views the HTTP service scores, one request per row (JSON, base64 files; a cell
    of several files is a list of them)."""
    from fastapi.testclient import TestClient

    from mmfuse.serving import create_app

    rows = []
    original = model.predict_views

    def spy(views, present):
        rows.append(({m: np.asarray(v) for m, v in views.items()}, present))
        return original(views, present)

    monkeypatch.setattr(model, "predict_views", spy)

    def b64(path):
        with open(path, "rb") as fh:
            return base64.b64encode(fh.read()).decode()

    with TestClient(create_app(model, batch_wait_ms=0)) as client:
        for image, text in zip(df["image"], df["text"]):
            body = {"text": text} if isinstance(text, str) else {}
            if isinstance(image, (list, str)):
                body["image"] = [b64(p) for p in image] if isinstance(image, list) \
                    else b64(image)
            r = client.post("/predict", json=body)
            assert r.status_code == 200, r.text
    monkeypatch.undo()
    assert len(rows) == len(df)  # one micro-batch of one request each
    views = {m: np.concatenate([v[m] for v, _ in rows]) for m in rows[0][0]}
    present = {m: np.concatenate([p[m] for _, p in rows]) for m in rows[0][1]}
    return views, present


def _assert_same(reference, other, what):
    ref_views, ref_present = reference
    views, present = other
    for m in ("image", "text"):
        a, b = np.asarray(ref_views[m], np.float32), np.asarray(views[m], np.float32)
        assert a.shape == b.shape, (what, m)
        np.testing.assert_array_equal(np.asarray(ref_present[m]), np.asarray(present[m]),
                                      err_msg=f"{what}: presence of {m}")
        keep = np.asarray(ref_present[m], bool)
        assert np.max(np.abs(a[keep] - b[keep])) == 0, (what, m)


@pytest.mark.parametrize("image_encoders", ["color-hist", ["color-hist", "hog"]],
                         ids=["fixed", "candidates"])
def test_every_path_gives_the_same_views(table, image_encoders, monkeypatch):
    root, df, y, manifest = table
    model = MultimodalClassifier(encoders={"image": image_encoders, "text": "hashing"},
                                 fusion="late", cv=3, random_state=0).fit(df, y)
    if isinstance(image_encoders, list):
        assert model.encoder_selection_["image"]["chosen"] in image_encoders
    reference = _predict_path(model, df, monkeypatch)
    present = np.asarray(reference[1]["image"])
    assert not present[5] and present[0] and present[4]  # a missing cell; pooled ones
    pooled = model.featurizer().transform(
        pd.DataFrame({"image": [df["image"][0][0]], "text": [None]})).views["image"]
    assert np.max(np.abs(pooled[0] - reference[0]["image"][0])) > 0  # pooling did something
    _assert_same(reference, _explain_path(model, df, monkeypatch), "explain")
    _assert_same(reference, _store_path(model, manifest, root), "feature store")
    _assert_same(reference, _service_path(model, df, monkeypatch), "service")


def test_candidates_are_encoded_as_the_chosen_encoder_is(table):
    """The candidate path (encoder choice) pools a cell of several files as the fitted
    model's featurizer does: the chosen part's view is the model's view."""
    from mmfuse.encoders.featurizer import encode_candidates

    _, df, y, _ = table
    parts, errors = encode_candidates(["color-hist"], df, "image", cache=None)
    model = MultimodalClassifier(encoders={"image": "color-hist", "text": "hashing"},
                                 fusion="early", random_state=0).fit(df, y)
    views = model.featurizer().transform(df, cache=None)
    assert errors == [] and np.array_equal(parts["color-hist"].present,
                                           views.present["image"])
    keep = views.present["image"]
    assert np.max(np.abs(parts["color-hist"].view[keep] - views.views["image"][keep])) == 0
