"""Out-of-core cross-validation from a store (evaluate/streamed.py)."""

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.evaluate import evaluate
from mmfuse.evaluate.folds import make_splits
from mmfuse.evaluate.record import run_record, schema
from mmfuse.evaluate.streamed import auto_batch, auto_epochs, choose_path, evaluate_store
from mmfuse.features import load


@pytest.fixture(scope="module")
def streamed(small_store):
    return evaluate_store(small_store, "label", "group", strategies=["early", "late", "weighted"],
                          weights="cv", cv=3, random_state=0)


def test_rows_folds_and_record(streamed, small_store):
    r = streamed
    assert r.path == "out-of-core"
    assert [row.name for row in r.rows] == ["image", "text", "early", "late", "weighted",
                                            "seed-baseline"]
    store = load(small_store)
    classes, y = np.unique(store.column("label"), return_inverse=True)
    assert r.classes == classes.tolist() and np.array_equal(r.y, y)
    # the in-memory path's own grouped folds: every row predicted once, by its fold
    splits, cv = make_splits(y, store.column("group"), 3, 0)
    assert r.cv == cv
    for row in r.rows:
        for f, (_, test) in enumerate(splits):
            assert row.fold_accuracy[f] == pytest.approx(np.mean(r.predictions[row.name][test]
                                                                 == y[test]))
    acc = {row.name: row.accuracy for row in r.rows}
    # each view knows half the label (about 0.42 alone), together about 0.7
    assert acc["early"] > 0.6 and acc["late"] > 0.6 and acc["image"] < 0.5
    assert r.row("late").weights_fallback == ["out-of-core: learned weights are not fitted "
                                              "when streaming; equal weights"] * 3
    assert r.row("early").weights_fallback == [None] * 3
    doc = run_record(r)
    assert doc["path"] == "out-of-core"
    import jsonschema

    jsonschema.validate(doc, schema())


def test_streamed_is_close_to_in_memory_on_the_same_folds(streamed, small_store):
    store = load(small_store)
    mem = evaluate(store.views, store.column("label"), groups=store.column("group"),
                   strategies=["early", "late[equal]"], cv=3, random_state=0)
    assert mem.path == "in-memory"
    for ours, theirs in (("early", "early"), ("late", "late[equal]")):
        diff = np.mean(streamed.row(ours).fold_accuracy) - np.mean(mem.row(theirs).fold_accuracy)
        assert abs(diff) < 0.03, (ours, diff)


def test_fixed_weights_and_refusals(small_store, monkeypatch):
    r = evaluate_store(small_store, "label", None, strategies=["late"], weights={"image": 3,
                       "text": 1}, cv=3, epochs=1)
    assert r.cv["kind"] == "stratified"
    assert r.row("late").fold_weights[0] == {"image": 0.75, "text": 0.25}
    assert r.row("late").weights_fallback == [None] * 3
    with pytest.raises(InputError, match="fusion stacking cannot be fitted out of core"):
        evaluate_store(small_store, "label", "group", strategies=["stacking"])
    with pytest.raises(InputError, match="tests each row once"):
        evaluate_store(small_store, "label", None, cv={"kind": "repeated-stratified",
                                                       "n_splits": 3})
    with pytest.raises(InputError, match="has no column 'y'"):
        evaluate_store(small_store, "y")
    with pytest.raises(InputError, match="epochs must be an int >= 1"):
        evaluate_store(small_store, "label", epochs=0)
    monkeypatch.setenv("MMFUSE_OUT_OF_CORE_BYTES", "1000")
    assert choose_path(small_store, None) == "out-of-core"
    assert choose_path(small_store, False) == "in-memory"
    monkeypatch.delenv("MMFUSE_OUT_OF_CORE_BYTES")
    assert choose_path(small_store, None) == "in-memory"
    assert auto_epochs(800_000, auto_batch(800_000, None)) == 2
    assert auto_batch(800, None) == 32 and auto_epochs(800, 32) == 40
