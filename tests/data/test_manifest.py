import json

import numpy as np
import pandas as pd
import pytest

from mmfuse import InputError
from mmfuse.data.manifest import load_arrays, read_manifest


@pytest.fixture
def frame():
    return pd.DataFrame({"img": ["a.png", "/abs/b.png", None], "caption": ["x", "", "z"],
                         "label": ["cat", "dog", "cat"]})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_formats_and_relative_paths(tmp_path, frame, suffix):
    path = tmp_path / f"m{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    else:
        pytest.importorskip("pyarrow")
        frame.to_parquet(path)
    df = read_manifest(path, label="label", columns=["img", "caption"], path_columns=["img"])
    assert df["img"][0] == str(tmp_path / "a.png")
    assert df["img"][1] == "/abs/b.png"
    assert pd.isna(df["img"][2])
    assert df["label"].tolist() == ["cat", "dog", "cat"]


@pytest.mark.parametrize("content, name, kwargs, match", [
    (None, "missing.csv", {}, "does not exist"),
    ("a,b\n1,2\n", "m.xlsx", {}, "unknown extension '.xlsx'"),
    ("a,b\n1,2\n", "m.csv", {"label": "label"}, "lacks column\\(s\\) \\['label'\\]"),
    ("a,label\n1,\n", "m.csv", {"label": "label"}, "column 'label' is empty in row 0"),
    ("a,b\n", "m.csv", {}, "has no rows"),
    ('{"a": 1}\n{"a": \n', "m.jsonl", {}, "could not be parsed as jsonl"),
])
def test_manifest_errors(tmp_path, content, name, kwargs, match):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=match):
        read_manifest(path, **kwargs)


def test_non_utf8_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"text,label\ncaf\xe9,1\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        read_manifest(path)


def test_load_arrays(tmp_path):
    np.save(tmp_path / "images.npy", np.zeros((4, 2, 3)))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    out = load_arrays({"image": tmp_path / "images.npy"})
    assert out["image"].shape == (4, 6)
    with pytest.raises(InputError, match="not a plain .npy array"):
        load_arrays({"x": tmp_path / "obj.npy"})
    with pytest.raises(InputError, match="does not exist"):
        load_arrays({"x": tmp_path / "nope.npy"})
