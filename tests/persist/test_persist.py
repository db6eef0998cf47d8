"""Saved models: bit-for-bit predictions after loading, and clean failures for bad files."""

from __future__ import annotations

import io
import json
import os
import zipfile

import numpy as np
import pytest
from conftest import NumberEncoder, make_views, number_frame
from sklearn.linear_model import LogisticRegression

import mmfuse
from mmfuse import InputError, MultimodalClassifier
from mmfuse.encoders.registry import ENCODERS, register_encoder
from mmfuse.persist import (
    HEADER_NAME,
    PAYLOAD_NAME,
    SCHEMA_VERSION,
    FingerprintMismatchError,
    ModelFileError,
    load,
    read_header,
    save,
)

# -- helpers -----------------------------------------------------------------------------------


def _with_missing(views: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Copies of the views where some rows lack one modality (NaN rows)."""
    out = {k: v.copy() for k, v in views.items()}
    out["b"][::7] = np.nan
    out["a"][3::11] = np.nan
    return out


def _rewrite(path, *, header=None, payload=None, drop=()):
    """Rewrite a model file with a new header and/or payload (recomputing nothing)."""
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    if header is not None:
        members[HEADER_NAME] = json.dumps(header).encode()
    if payload is not None:
        members[PAYLOAD_NAME] = payload
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            if name not in drop:
                archive.writestr(name, data)
    path.write_bytes(buffer.getvalue())


def _edit_state(path, edit=None, arrays=None):
    """Change the payload's state document and/or arrays, then fix the header's size and
    hash, as an attacker who knows the format would."""
    import hashlib

    with zipfile.ZipFile(path) as archive:
        payload = archive.read(PAYLOAD_NAME)
    with zipfile.ZipFile(io.BytesIO(payload)) as inner:
        members = {n: inner.read(n) for n in inner.namelist()}
    if edit is not None:
        members["state.json"] = json.dumps(edit(json.loads(members["state.json"]))).encode()
    members.update(arrays or {})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as inner:
        for name, data in members.items():
            inner.writestr(name, data)
    payload = buffer.getvalue()
    header = read_header(path)
    header["payload"] = {"name": PAYLOAD_NAME, "size": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}
    _rewrite(path, header=header, payload=payload)


@pytest.fixture(scope="module")
def views_model():
    views, y = make_views(n=100, noise_view=True)
    model = MultimodalClassifier(fusion="late", cv=3, random_state=0).fit(views, y)
    return model, views, y


# -- round trips -------------------------------------------------------------------------------


# Cheap weight learning where the default searches a grid: the round trip is what is tested.
@pytest.mark.parametrize("fusion, weights", [("early", "equal"), ("weighted", "relative"),
                                             ("late", "cv"), ("stacking", "cv"),
                                             ("seed-baseline", "cv"), ("auto", "cv")])
def test_loaded_model_predicts_bit_for_bit(tmp_path, fusion, weights):
    views, y = make_views(n=100, noise_view=True)
    params = {"neural": False} if fusion == "auto" else None  # (heads: test_neural.py)
    model = MultimodalClassifier(fusion=fusion, weights=weights, cv=3, fusion_params=params,
                                 random_state=0).fit(views, y)
    path = model.save(tmp_path / "m.mmfuse")
    loaded = mmfuse.load(path)
    for X in (views, _with_missing(views)):
        before, after = model.predict_proba(X), loaded.predict_proba(X)
        assert before.dtype == after.dtype and before.tobytes() == after.tobytes()
    assert np.array_equal(loaded.classes_, model.classes_)
    assert loaded.modality_weights_ == model.modality_weights_
    assert loaded.get_params()["fusion"] == fusion
    assert type(loaded.fusion_) is type(model.fusion_)


@pytest.mark.parametrize("calibration, score, mondrian", [("temperature", "aps", False),
                                                         ("isotonic", "lac", True)])
def test_loaded_model_keeps_calibration_and_conformal_sets(tmp_path, calibration, score,
                                                           mondrian):
    views, y = make_views(n=240)
    model = MultimodalClassifier(fusion="late", cv=3, calibration=calibration, coverage=0.9,
                                 conformal_score=score, mondrian=mondrian,
                                 random_state=0).fit(views, y)
    loaded = mmfuse.load(model.save(tmp_path / "m.mmfuse"))
    assert loaded.uncertainty_.conformal.thresholds.keys() == {"a", "b", "a+b"}
    half = dict(views, a=np.where(np.arange(len(y))[:, None] % 2 == 0, np.nan, views["a"]))
    for X in (views, half):
        assert model.predict_proba(X).tobytes() == loaded.predict_proba(X).tobytes()
        assert np.array_equal(model.predict_set(X), loaded.predict_set(X))
    assert loaded.get_params()["coverage"] == 0.9


def test_stateful_encoders_keep_their_fitted_state(tmp_path):
    df, y = number_frame(n=80)
    model = MultimodalClassifier(encoders={"left": "test-vocab", "right": "test-number"},
                                 fusion="stacking", cv=2, random_state=0).fit(df, y)
    loaded = load(model.save(tmp_path / "m.mmfuse"))
    assert loaded.encoders_["left"].vocab_ == model.encoders_["left"].vocab_
    assert loaded.encoders_["left"].fingerprint == model.encoders_["left"].fingerprint
    assert loaded.predict_proba(df).tobytes() == model.predict_proba(df).tobytes()
    # the loaded model is a normal estimator: it can be refit
    assert loaded.set_params(fusion="late", weights="equal").fit(df, y).predict(df).shape == (80,)


def test_encoder_instances_in_params_are_rebuilt(tmp_path):
    df, y = number_frame(n=100)
    model = MultimodalClassifier(encoders={"left": NumberEncoder(), "right": "test-number"},
                                 fusion="early", weights="equal", random_state=0).fit(df, y)
    loaded = load(model.save(tmp_path / "m.mmfuse"))
    assert isinstance(loaded.get_params()["encoders"]["left"], NumberEncoder)
    assert loaded.predict_proba(df).tobytes() == model.predict_proba(df).tobytes()


def test_real_encoders_round_trip(tmp_path, data_root):
    from mmfuse.data.datasets import load_dataset

    X, y, _ = load_dataset("tuxpaint", root=data_root)
    keep = np.flatnonzero(np.isin(y, ["animals", "food", "vehicles"]))[::9][:21]
    X = X.iloc[keep][["image", "text", "audio"]].reset_index(drop=True)
    y = y[keep]
    model = MultimodalClassifier(encoders={"image": "hog", "text": "tfidf", "audio": "mfcc"},
                                 fusion="late", cv=2, random_state=0).fit(X, y)
    # tfidf keeps a vocabulary of the training texts: saved only on request
    loaded = load(model.save(tmp_path / "tux.mmfuse", allow_training_text=True))
    assert loaded.predict_proba(X).tobytes() == model.predict_proba(X).tobytes()
    header = read_header(tmp_path / "tux.mmfuse")
    assert {c: e["name"] for c, e in header["encoders"].items()} == {
        "image": "hog", "text": "tfidf", "audio": "mfcc"}
    assert header["encoders"]["text"]["fingerprint"] == model.encoders_["text"].fingerprint


def test_header_describes_the_model(tmp_path, views_model):
    model, _, _ = views_model
    path = save(model, tmp_path / "m.mmfuse")
    header = read_header(path)
    assert header["format"] == "mmfuse-model"
    assert header["schema_version"] == SCHEMA_VERSION
    assert header["mmfuse_version"] == mmfuse.__version__
    assert header["classes"] == model.classes_.tolist()
    assert header["modalities"] == ["a", "b", "noise"]
    assert header["fusion"] == "late"
    assert "mmfuse.fusion.late.LateFusion" in header["types"]
    assert {"numpy", "scikit-learn", "python"} <= set(header["versions"])
    assert load(path).model_file_["payload"]["sha256"] == header["payload"]["sha256"]


def test_save_is_atomic_and_overwrites(tmp_path, views_model):
    model, views, _ = views_model
    path = tmp_path / "sub" / "m.mmfuse"
    model.save(path)
    model.save(path)
    assert sorted(os.listdir(path.parent)) == ["m.mmfuse"]


def test_unfitted_model_cannot_be_saved(tmp_path):
    with pytest.raises(InputError, match="fitted MultimodalClassifier"):
        save(MultimodalClassifier(), tmp_path / "m.mmfuse")


# -- bad files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_file_fails_cleanly(tmp_path, views_model, keep):
    path = views_model[0].save(tmp_path / "m.mmfuse")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match="not an mmfuse model|truncated|damaged"):
        load(path)


def test_flipped_bytes_fail_cleanly(tmp_path, views_model):
    """Every flipped byte either makes load() refuse the file with ModelFileError, or (a
    flip in zip padding or an unused header byte) loads a model that predicts exactly as
    the original: never another exception, never a silently different model."""
    model, views, _ = views_model
    path = model.save(tmp_path / "m.mmfuse")
    expected = model.predict_proba(views)
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    refused = 0
    for offset in rng.integers(0, len(data), 20):
        damaged = bytearray(data)
        damaged[offset] ^= 0xFF
        path.write_bytes(bytes(damaged))
        try:
            loaded = load(path)
        except ModelFileError:
            refused += 1
            continue
        np.testing.assert_array_equal(loaded.predict_proba(views), expected)
    assert refused >= 10  # most bytes of a model file matter (payload, integrity hash)


def test_tampered_payload_fails_the_integrity_check(tmp_path, views_model):
    model, _, _ = views_model
    path = model.save(tmp_path / "m.mmfuse")
    other = MultimodalClassifier(fusion="early", weights="equal").fit(*make_views(n=80, seed=3))
    with zipfile.ZipFile(other.save(tmp_path / "other.mmfuse")) as archive:
        foreign = archive.read(PAYLOAD_NAME)
    _rewrite(path, payload=foreign)
    with pytest.raises(ModelFileError, match="integrity check"):
        load(path)


def test_header_that_disagrees_with_the_payload_is_refused(tmp_path, views_model):
    path = views_model[0].save(tmp_path / "m.mmfuse")
    header = read_header(path)
    header["classes"] = [9, 8, 7, 6]
    _rewrite(path, header=header)
    with pytest.raises(ModelFileError, match="classes do not match"):
        load(path)


@pytest.mark.parametrize("schema, match", [(SCHEMA_VERSION + 1, "upgrade mmfuse"),
                                           (0, "no longer reads"),
                                           ("1", "no valid schema_version")])
def test_wrong_schema_version(tmp_path, views_model, schema, match):
    path = views_model[0].save(tmp_path / "m.mmfuse")
    header = read_header(path)
    header["schema_version"] = schema
    header["mmfuse_version"] = "99.0"
    _rewrite(path, header=header)
    with pytest.raises(ModelFileError, match=match):
        load(path)


def test_other_mmfuse_version_with_same_schema_loads(tmp_path, views_model):
    model, views, _ = views_model
    path = model.save(tmp_path / "m.mmfuse")
    header = read_header(path)
    header["mmfuse_version"] = "0.0.1"
    _rewrite(path, header=header)
    assert load(path).predict_proba(views).tobytes() == model.predict_proba(views).tobytes()


def test_files_that_are_not_models(tmp_path, views_model):
    (tmp_path / "random.mmfuse").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "json.mmfuse").write_text('{"format": "mmfuse-model"}')
    cases = {
        tmp_path / "random.mmfuse": "not an mmfuse model",
        tmp_path / "json.mmfuse": "not an mmfuse model",
        tmp_path / "missing.mmfuse": "not found",
        tmp_path: "directory",
    }
    for path, match in cases.items():
        with pytest.raises(ModelFileError, match=match):
            load(path)
    path = views_model[0].save(tmp_path / "m.mmfuse")
    _rewrite(path, drop=(HEADER_NAME,))
    with pytest.raises(ModelFileError, match="no 'mmfuse-model.json' member"):
        load(path)
    path = views_model[0].save(tmp_path / "m2.mmfuse")
    header = read_header(path)
    header["format"] = "something-else"
    _rewrite(path, header=header)
    with pytest.raises(ModelFileError, match="not an mmfuse model"):
        load(path)


class Gadget:
    """A type no model holds: stands for anything an attacker might smuggle in."""

    def __init__(self):
        self.armed = True


GADGET = f"{Gadget.__module__}.{Gadget.__qualname__}"


@pytest.mark.parametrize("smuggled, match", [
    ({"__object__": "posix.system", "state": {"__map__": {}}}, "not allowed: \\['posix.system"),
    ({"__object__": "builtins.eval", "state": {"__map__": {}}}, "not allowed: \\['builtins.eval"),
    ({"__object__": "subprocess.Popen", "state": {"__map__": {"args": "id"}}},
     "not allowed: \\['subprocess.Popen"),
    ({"__object__": GADGET, "state": {"__map__": {"armed": True}}}, "not allowed: .*Gadget"),
    # an sklearn name is allowed only for estimator classes
    ({"__object__": "sklearn.utils._joblib.Parallel", "state": {"__map__": {}}}, "not allowed"),
    ({"__object__": "sklearn.base.clone", "state": {"__map__": {}}}, "not allowed"),
    # an mmfuse name is allowed only for strategies, their helpers and dataclasses
    ({"__object__": "mmfuse._registry.Registry", "state": {"__map__": {}}}, "not allowed"),
    ({"__object__": "mmfuse.serving.errors.ApiError", "state": {"__map__": {}}}, "not allowed"),
    ({"__type__": "os.system"}, "type value 'os.system' is not allowed"),
    ({"__npscalar__": "|O", "hex": "00"}, "not allowed"),
    ({"__whatever__": 1}, "unknown node type"),
])
def test_unknown_types_are_refused_before_anything_is_built(tmp_path, views_model, smuggled,
                                                            match):
    path = views_model[0].save(tmp_path / "m.mmfuse")

    def smuggle(document):
        document["__map__"]["extra"] = smuggled
        return document

    _edit_state(path, smuggle)
    with pytest.raises(ModelFileError, match=match):
        load(path)


def test_files_naming_the_helpers_old_module_still_load(tmp_path, views_model):
    """Model files saved before the fusion helpers left ``mmfuse.fusion._common``."""
    model, views, _ = views_model
    path = model.save(tmp_path / "m.mmfuse")
    renamed = []

    def to_old_names(document):
        text = json.dumps(document)
        for module in ("experts", "scaling", "imputer"):
            renamed.append(text.count(f'"mmfuse.fusion.{module}.'))
            text = text.replace(f'"mmfuse.fusion.{module}.', '"mmfuse.fusion._common.')
        return json.loads(text)

    _edit_state(path, to_old_names)
    assert renamed[0] > 0 and renamed[1] > 0  # (experts and their scalers were renamed)
    assert load(path).predict_proba(views).tobytes() == model.predict_proba(views).tobytes()


def test_pickled_arrays_are_refused(tmp_path, views_model):
    path = views_model[0].save(tmp_path / "m.mmfuse")
    evil = io.BytesIO()
    np.save(evil, np.array([Gadget()], dtype=object), allow_pickle=True)
    _edit_state(path, arrays={"arrays/0.npy": evil.getvalue()})
    with pytest.raises(ModelFileError, match="damaged payload: an array holds Python objects"):
        load(path)


def test_trusted_lets_a_named_type_in(tmp_path, views_model):
    path = views_model[0].save(tmp_path / "m.mmfuse")

    def smuggle(document):
        document["__map__"]["extra"] = {"__object__": GADGET,
                                        "state": {"__map__": {"armed": False}}}
        return document

    _edit_state(path, smuggle)
    assert load(path, trusted=[GADGET]).predict_proba is not None


def test_custom_types_need_trusted_on_save_and_load(tmp_path):
    class_name = f"{MyLogisticRegression.__module__}.{MyLogisticRegression.__qualname__}"
    views, y = make_views(n=100)
    model = MultimodalClassifier(fusion="early", weights="equal",
                                 classifier=MyLogisticRegression()).fit(views, y)
    with pytest.raises(InputError, match="trusted="):
        model.save(tmp_path / "m.mmfuse")
    path = model.save(tmp_path / "m.mmfuse", trusted=[class_name])
    with pytest.raises(ModelFileError, match="not allowed"):
        load(path)
    loaded = load(path, trusted=[class_name])
    assert loaded.predict_proba(views).tobytes() == model.predict_proba(views).tobytes()


class MyLogisticRegression(LogisticRegression):
    pass


def test_what_cannot_be_saved_is_named(tmp_path):
    from sklearn.ensemble import RandomForestClassifier

    views, y = make_views(n=60)
    forest = MultimodalClassifier(fusion="early", weights="equal", random_state=0,
                                  classifier=RandomForestClassifier(n_estimators=2)).fit(views, y)
    with pytest.raises(InputError, match="Tree at model\\['fusion'\\].model_.estimators_\\[0\\]"
                                         ".tree_: it is a compiled type"):
        forest.save(tmp_path / "forest.mmfuse")
    model = MultimodalClassifier(fusion="early", weights="equal").fit(views, y)
    model.fusion_.callback_ = print
    with pytest.raises(InputError, match="callables"):
        model.save(tmp_path / "m.mmfuse")
    assert not (tmp_path / "m.mmfuse").exists()


# -- encoder fingerprints ----------------------------------------------------------------------

WEIGHTS = {"version": "v1"}


class WeightedNumberEncoder(NumberEncoder):
    """A 'pretrained' encoder whose weights are whatever WEIGHTS says."""

    name = "test-weighted-number"

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def weights_hash(self) -> str:
        return WEIGHTS["version"]


if "test-weighted-number" not in ENCODERS:
    register_encoder("test-weighted-number", modality="text", dim=2)(WeightedNumberEncoder)


def test_changed_encoder_weights_are_an_error(tmp_path):
    df, y = number_frame(n=100)
    model = MultimodalClassifier(encoders={"left": "test-weighted-number",
                                           "right": "test-number"}, fusion="late",
                                 cv=3).fit(df, y)
    path = model.save(tmp_path / "m.mmfuse")
    try:
        WEIGHTS["version"] = "v2"
        with pytest.raises(FingerprintMismatchError, match="'test-weighted-number' of column "
                                                           "'left'.*weights or configuration"):
            load(path)
    finally:
        WEIGHTS["version"] = "v1"
    assert load(path).predict_proba(df).tobytes() == model.predict_proba(df).tobytes()


def test_changed_encoder_configuration_is_an_error(tmp_path):
    df, y = number_frame(n=100)
    enc = WeightedNumberEncoder(scale=2.0)
    model = MultimodalClassifier(encoders={"left": enc, "right": "test-number"},
                                 fusion="early", weights="equal").fit(df, y)
    path = model.save(tmp_path / "m.mmfuse")
    # an option that is part of the configuration changes the fingerprint: refused
    with pytest.raises(FingerprintMismatchError):
        load(path, encoder_options={"scale": 3.0})
    # options an encoder does not have are ignored
    assert load(path, encoder_options={"device": "cpu"}).encoders_["left"].scale == 2.0


def test_table_predictions_survive_save(tmp_path):
    df, y = number_frame(n=100)
    model = MultimodalClassifier(encoders={"left": "test-number", "right": "test-number"},
                                 fusion="weighted", weights="relative", cv=3,
                                 random_state=1).fit(df, y)
    loaded = load(model.save(tmp_path / "m.mmfuse"))
    gappy = df.copy()
    gappy.loc[::5, "left"] = None
    gappy.loc[1::5, "right"] = ""
    assert (loaded.predict(gappy) == model.predict(gappy)).all()
    assert loaded.predict_proba(gappy).tobytes() == model.predict_proba(gappy).tobytes()


def test_decompression_bombs_are_refused(tmp_path, views_model):
    path = views_model[0].save(tmp_path / "m.mmfuse")
    bomb = io.BytesIO()
    np.save(bomb, np.zeros(100 << 20, dtype=np.uint8))  # 100 MB of zeros deflate to ~100 kB
    _edit_state(path, arrays={"arrays/0.npy": bomb.getvalue()})
    with pytest.raises(ModelFileError, match="inflates to"):
        load(path)


def test_the_same_model_saved_twice_is_the_same_bytes(tmp_path):
    """No timestamp or memory address in a model file: the same fit, saved at two times,
    is byte-identical (TF-IDF included: scikit-learn caches id(stop_words) on it)."""
    import time

    texts = [f"{w} stamp number {i % 7}" for i, w in
             enumerate(["red apple", "blue car", "green tree", "yellow sun"] * 15)]
    X = {"text": texts, "num": np.arange(60.0)[:, None]}
    y = np.arange(60) % 4
    model = MultimodalClassifier(encoders={"text": "tfidf", "num": "passthrough"},
                                 fusion="late", random_state=0).fit(X, y)
    first, second = tmp_path / "a.mmfuse", tmp_path / "b.mmfuse"
    model.save(first, allow_training_text=True)
    time.sleep(2.1)  # zip stores times to 2 s: a later save would show it
    model.save(second, allow_training_text=True)
    assert first.read_bytes() == second.read_bytes()
    with zipfile.ZipFile(first) as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    again = mmfuse.load(first)
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
