"""Hostile model files (a model a stranger hands over): each is refused at load, never in
predict, with a message that says in words what is wrong: no exception class names, no
traceback. Files are re-signed (the header's payload size and sha256 redone) so that the
integrity check passes and the checks behind it are what refuses them."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile

import numpy as np
import pytest

from conftest import make_views
from mmfuse import MultimodalClassifier, load
from mmfuse.persist import HEADER_NAME, PAYLOAD_NAME, ModelFileError

CLASS_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception|Warning)\b|Traceback")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    views, y = make_views(n=100, noise_view=True)
    model = MultimodalClassifier(fusion="late", cv=3, random_state=0).fit(views, y)
    path = tmp_path_factory.mktemp("hostile") / "good.mmfuse"
    model.save(path)
    return path.read_bytes()


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {n: archive.read(n) for n in archive.namelist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _resign(good: bytes, payload: bytes, header_edit=None) -> bytes:
    """A model file with this payload and a header whose signature matches it."""
    outer = _members(good)
    header = json.loads(outer[HEADER_NAME])
    header["payload"] = {"name": PAYLOAD_NAME, "size": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}
    if header_edit:
        header_edit(header)
    outer[HEADER_NAME] = json.dumps(header).encode()
    outer[PAYLOAD_NAME] = payload
    return _zip(outer)


def _state(good: bytes) -> tuple[dict, dict[str, bytes]]:
    inner = _members(_members(good)[PAYLOAD_NAME])
    return json.loads(inner["state.json"]), inner


def _array_refs(node, path=""):
    """(attribute path, array member) of every stored array."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(value, dict) and "__ndarray__" in value:
                yield f"{path}.{key}", value["__ndarray__"]
            yield from _array_refs(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _array_refs(value, f"{path}[{i}]")


def _npy(arr: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, arr, allow_pickle=arr.dtype.hasobject)
    return out.getvalue()


def _with_array(good: bytes, attribute: str, make) -> bytes:
    """Replace the first array stored under ``attribute`` by ``make(old array)``."""
    doc, inner = _state(good)
    member = next(m for p, m in _array_refs(doc) if p.endswith(f".{attribute}"))
    old = np.load(io.BytesIO(inner[member]))
    inner[member] = _npy(make(old))
    return _resign(good, _zip(inner))


def _with_state(good: bytes, text: str | None = None, edit=None) -> bytes:
    doc, inner = _state(good)
    inner["state.json"] = (text if text is not None else json.dumps(edit(doc))).encode()
    return _resign(good, _zip(inner))


def _fitted(doc):
    return doc["__map__"]["fitted"]["__map__"]


def _set_view_dim(doc, width):
    """View a's width changed, and the total input width with it (a consistent lie)."""
    fitted = _fitted(doc)
    if isinstance(width, int):
        fitted["n_features_in_"] += width - fitted["view_dims_"]["__map__"]["a"]
    fitted["view_dims_"]["__map__"]["a"] = width
    return doc


def _lying_npy_header(good: bytes) -> bytes:
    """coef_'s .npy with its header claiming ten times the rows its data holds."""
    doc, inner = _state(good)
    member = next(m for p, m in _array_refs(doc) if p.endswith(".coef_"))
    raw = inner[member]
    shape = str(np.load(io.BytesIO(raw)).shape).encode()
    lying = shape.replace(b"(4,", b"(40,")
    inner[member] = raw.replace(shape, lying.ljust(len(shape)), 1)
    return _resign(good, _zip(inner))


def _set_in_fusion(attr, value):
    """Set the first ``attr`` found in the fusion strategy's state (a classifier's)."""
    def edit(doc):
        def walk(node):
            if isinstance(node, dict):
                for key in list(node):
                    if key == attr:
                        node[key] = value
                        return True
                    if walk(node[key]):
                        return True
            elif isinstance(node, list):
                return any(walk(v) for v in node)
            return False
        assert walk(doc["__map__"]["fusion"])
        return doc
    return edit


HOSTILE = {
    "deep nesting": (lambda g: _with_state(g, text="[" * 100_000 + "]" * 100_000),
                     "damaged payload: its state nests too deeply"),
    "huge integer literal": (lambda g: _with_state(g, text='{"x": 1' + "0" * 50_000 + "}"),
                             "damaged payload: its state holds a number with too many digits"),
    "object array": (lambda g: _with_array(g, "coef_", lambda a: a.astype(object)),
                     "damaged payload: an array holds Python objects"),
    "coef_ one column too wide": (
        lambda g: _with_array(g, "coef_", lambda a: np.hstack([a, a[:, :1]])),
        r"coef_ of shape \(4, 13\) but was fitted on 12 features"),
    "coef_ one class short": (lambda g: _with_array(g, "coef_", lambda a: a[:3]),
                              r"coef_ of shape \(3, 12\) for 4 classes: expected 4 rows"),
    "intercept_ wrong length": (lambda g: _with_array(g, "intercept_", lambda a: a[:2]),
                                r"intercept_ of shape \(2,\), expected \(4,\)"),
    "coef_ as integers": (lambda g: _with_array(g, "coef_", lambda a: a.astype(np.int64)),
                          "coef_ holds int64 values where numbers with a fraction"),
    "coef_ as text": (lambda g: _with_array(g, "coef_", lambda a: a.astype("U8")),
                      "coef_ holds <U8 values where numbers with a fraction"),
    "complex scaler": (lambda g: _with_array(g, "scale_", lambda a: a.astype(np.complex128)),
                       "scale_ is an array of complex128, not of numbers or text"),
    "scaler mean_ too short": (lambda g: _with_array(g, "mean_", lambda a: a[:5]),
                               "its arrays do not fit together"),
    "NaN coefficients": (lambda g: _with_array(g, "coef_", lambda a: np.full_like(a, np.nan)),
                         "coef_ holds values that are not finite numbers"),
    "view width changed": (lambda g: _with_state(g, edit=lambda d: _set_view_dim(d, 40)),
                           "its arrays do not fit together"),
    "view width not a number": (lambda g: _with_state(g, edit=lambda d: _set_view_dim(d, "12")),
                                "the width of view 'a' is '12', expected a positive number"),
    "view width of a billion": (lambda g: _with_state(g, edit=lambda d: _set_view_dim(d, 10**9)),
                                "the width of view 'a' is 1000000000, expected a positive "
                                "number up to"),
    "classes_ of the strategy with a fifth class": (
        lambda g: _with_array(_resign(g, _members(g)[PAYLOAD_NAME],
                                      lambda h: h.update(classes=[0, 1, 2, 3, 4])),
                              "classes_", lambda a: np.arange(5)),
        "the header's classes do not match|probabilities per row for 5 classes"),
    "input width changed": (
        lambda g: _with_state(g, edit=lambda d: _fitted(d).update(n_features_in_=99) or d),
        "it declares 99 input features but its views are 25 wide in all"),
    "a classifier's input width as text": (
        lambda g: _with_state(g, edit=_set_in_fusion("n_features_in_", "12")),
        "has n_features_in_ = '12', expected a positive whole number"),
    "an npy header lying about its shape": (_lying_npy_header,
                                            "damaged payload: EOF: reading array data"),
    "file truncated": (lambda g: g[: len(g) // 2], "not an mmfuse model file, or it is "
                                                    "truncated or damaged"),
    "header nested deeply": (lambda g: _zip({**_members(g), HEADER_NAME: b"[" * 300_000}),
                             "damaged header: it nests too deeply"),
    "header with a huge number": (
        lambda g: _zip({**_members(g), HEADER_NAME: b'{"format": 1' + b"0" * 50_000 + b"}"}),
        "damaged header: it holds a number with too many digits"),
    "payload truncated (re-signed)": (
        lambda g: _resign(g, _members(g)[PAYLOAD_NAME][:-300]),
        "damaged payload"),
    "state that is not JSON": (lambda g: _with_state(g, text="{not json"),
                               "damaged payload: Expecting property name"),
    "state that is not UTF-8": (lambda g: _with_state(g, text="\udcff"),
                                "damaged payload"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_model_files_are_refused_at_load_with_a_clean_message(tmp_path, saved, name):
    make, match = HOSTILE[name]
    path = tmp_path / "hostile.mmfuse"
    try:
        path.write_bytes(make(saved))
    except UnicodeEncodeError:  # (the non-UTF-8 state is written as raw bytes)
        doc, inner = _state(saved)
        inner["state.json"] = b"\xff\xfe{"
        path.write_bytes(_resign(saved, _zip(inner)))
    with pytest.raises(ModelFileError, match=match) as info:
        load(path)
    message = str(info.value)
    assert not CLASS_NAME.search(message), message
    assert "\n" not in message and len(message) < 600


def test_the_good_file_still_loads(tmp_path, saved):
    path = tmp_path / "good.mmfuse"
    path.write_bytes(_resign(saved, _members(saved)[PAYLOAD_NAME]))  # re-signed, unchanged
    model = load(path)
    views, _ = make_views(n=10, noise_view=True)
    assert model.predict_proba(views).shape == (10, 4)


@pytest.mark.parametrize("key, value, match", [
    ("versions", "x", "its 'versions' is text, expected an object"),
    ("encoders", [], "its 'encoders' is a list, expected an object"),
    ("classes", None, "its 'classes' is null, expected a list"),
    ("estimator", 5, "its 'estimator' is a number, expected text"),
    ("privacy", 1, "its 'privacy' is a number, expected an object"),
])
def test_a_header_entry_of_the_wrong_kind_is_refused(tmp_path, saved, key, value, match):
    path = tmp_path / "hostile.mmfuse"
    path.write_bytes(_resign(saved, _members(saved)[PAYLOAD_NAME],
                             lambda header: header.update({key: value})))
    with pytest.raises(ModelFileError, match=f"damaged header: {match}") as info:
        load(path)
    assert not CLASS_NAME.search(str(info.value))
