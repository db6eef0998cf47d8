"""Several files per cell: pooled embeddings, partly and wholly failing cells."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mmfuse import InputError, MultimodalClassifier
from mmfuse.encoders import create_encoder
from mmfuse.encoders.cells import pooled, split_paths


@pytest.fixture
def images(tmp_path):
    paths = []
    for i, value in enumerate((0, 128, 255)):
        p = tmp_path / f"im{i}.png"
        Image.new("L", (16, 16), value).save(p)
        paths.append(str(p))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    return paths, str(bad)


def encode_with(enc):
    from mmfuse.extract import extract_features

    return lambda items, on_error: extract_features(enc, items, on_error=on_error,
                                                    cache=False)


def test_mean_and_max_pooling_match_the_single_files(images):
    paths, _ = images
    enc = create_encoder("pixels", size=4)
    single = enc.transform(paths)
    view, present, errors = pooled(encode_with(enc), [paths[:2], paths[2], None])
    np.testing.assert_allclose(view[0], single[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(view[1], single[2])
    assert present.tolist() == [True, True, False] and errors == []
    view, _, _ = pooled(encode_with(enc), [paths, None], pooling="max")
    np.testing.assert_allclose(view[0], single.max(axis=0))
    with pytest.raises(InputError, match="pooling must be one of"):
        pooled(encode_with(enc), [paths], pooling="median")


def test_partly_failing_cells_are_pooled_over_the_rest_and_reported(images):
    paths, bad = images
    enc = create_encoder("pixels", size=4)
    single = enc.transform(paths)
    view, present, errors = pooled(encode_with(enc), [[paths[0], bad], [bad, bad]],
                                   on_error="skip", column="photo")
    np.testing.assert_allclose(view[0], single[0])
    assert present.tolist() == [True, False] and np.isnan(view[1]).all()
    assert [(e.row, e.column) for e in errors] == [(0, "photo"), (1, "photo")]
    assert "1 of 2 files failed (pooled over the other 1)" in errors[0].message
    assert "all 2 files failed" in errors[1].message
    with pytest.raises(InputError, match="row 0, column 'photo'"):
        pooled(encode_with(enc), [[paths[0], bad]], on_error="raise", column="photo")


def test_split_paths_uses_the_separator_unless_the_whole_path_exists(tmp_path):
    assert split_paths("a.png | b.png|c.png") == ["a.png", "b.png", "c.png"]
    odd = tmp_path / "x|y.png"
    odd.write_bytes(b"")
    assert split_paths(str(odd)) == str(odd)
    assert split_paths(np.array(["a", "b"], dtype=object)) == ["a", "b"]
    assert split_paths("one.png") == "one.png" and split_paths(None) is None


def test_the_classifier_pools_lists_of_files(images):
    paths, bad = images
    X = {"image": [[paths[0], paths[1]], [paths[2]], [paths[0]], [paths[2], paths[1]]] * 5}
    y = [0, 1, 0, 1] * 5
    clf = MultimodalClassifier(encoders={"image": "pixels"}, fusion="early",
                               random_state=0, on_error="skip").fit(X, y)
    report = clf.predict_report({"image": [[paths[0], bad], [bad]]})
    assert [e.row for e in report.errors] == [0, 1, 1]
    assert "1 of 2 files failed" in report.errors[0].message


def test_row_records_are_the_one_way_to_build_multi_column_items():
    import pandas as pd

    from mmfuse.encoders.cells import row_records
    from mmfuse.encoders.tabular import TabularEncoder, gather_fields, row_items

    df = pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", None, ""]})
    assert row_records(df, ("a", "b"), 3) == [{"a": 1.0, "b": "x"}, None,
                                              {"a": 3.0, "b": ""}]
    # a column the table lacks is empty in every row (the featurizer's missing columns)
    assert row_records({"a": [1, None]}, ("a", "c"), 2) == [{"a": 1, "c": None}, None]
    enc = TabularEncoder(numeric=["a"], categorical=["b"])
    assert row_items(df, enc) == row_records(df, ("a", "b"), 3)
    # a request: fields sent with no value make no item, as an all-empty table row
    assert gather_fields({"a": None, "b": ""}, {"tabular": enc}) == ({}, {})
    assert gather_fields({"b": "x"}, {"tabular": enc})[1] == {"tabular": {"a": None, "b": "x"}}


def test_pooled_takes_the_items_of_a_cell_from_the_caller(images):
    """The service pools prepared files: ``items_of`` says which cells hold several."""
    paths, _ = images
    enc = create_encoder("color-hist")
    plain, _, _ = pooled(encode_with(enc), [paths[:2], paths[2]], column="image")
    tagged = [("several", paths[:2]), paths[2]]
    view, present, errors = pooled(
        lambda items, oe: encode_with(enc)(items, oe), tagged, column="image",
        items_of=lambda c: c[1] if isinstance(c, tuple) else None)
    assert present.all() and errors == [] and np.array_equal(view, plain)
