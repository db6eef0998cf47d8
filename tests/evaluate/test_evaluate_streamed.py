"""Out-of-core cross-validation from a store (evaluate/streamed.py)."""

import numpy as np
import pytest

from mmfuse import InputError
from mmfuse.evaluate import evaluate
from mmfuse.evaluate.folds import make_splits
from mmfuse.evaluate.record import run_record, schema
from mmfuse.evaluate.streamed import auto_batch, auto_epochs, choose_path, evaluate_store
from mmfuse.features import load


STRATEGIES = ["early", "late", "weighted", "stacking"]


@pytest.fixture(scope="module")
def streamed(small_store):
    return evaluate_store(small_store, "label", "group", strategies=STRATEGIES,
                          weights="cv", cv=3, random_state=0)


@pytest.fixture(scope="module")
def in_memory(small_store):
    store = load(small_store)
    return evaluate(store.views, store.column("label"), groups=store.column("group"),
                    strategies=STRATEGIES + ["late[equal]"], weights="cv", cv=3,
                    random_state=0)


def test_rows_folds_and_record(streamed, small_store):
    r = streamed
    assert r.path == "out-of-core"
    assert [row.name for row in r.rows] == ["image", "text", "early", "late", "weighted",
                                            "stacking", "seed-baseline"]
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
    # learned out of core: late's cv weights and stacking's meta level (one per fold)
    for name in ("late", "weighted", "stacking"):
        assert r.row(name).weights_fallback == [None] * 3
        for w in r.row(name).fold_weights:
            assert sorted(w) == ["image", "text"] and sum(w.values()) == pytest.approx(1.0)
    assert len({tuple(w.values()) for w in r.row("late").fold_weights}) == 3
    assert r.row("early").weights_fallback == [None] * 3
    doc = run_record(r)
    assert doc["path"] == "out-of-core"
    import jsonschema

    jsonschema.validate(doc, schema())


def test_streamed_is_close_to_in_memory_on_the_same_folds(streamed, in_memory):
    mem = in_memory
    assert mem.path == "in-memory"
    for name in STRATEGIES + ["seed-baseline"]:
        diff = np.mean(streamed.row(name).fold_accuracy) - np.mean(mem.row(name).fold_accuracy)
        assert abs(diff) < 0.03, (name, diff)
    # the learned late weights follow the in-memory ones (text is a little stronger here)
    for ours, theirs in zip(streamed.row("late").fold_weights, mem.row("late").fold_weights):
        assert ours["text"] > 0.5 and theirs["text"] > 0.5
        assert abs(ours["text"] - theirs["text"]) < 0.06


def test_fixed_weights_and_refusals(small_store, monkeypatch):
    r = evaluate_store(small_store, "label", None, strategies=["late"], weights={"image": 3,
                       "text": 1}, cv=3, epochs=1)
    assert r.cv["kind"] == "stratified"
    assert r.row("late").fold_weights[0] == {"image": 0.75, "text": 0.25}
    assert r.row("late").weights_fallback == [None] * 3
    with pytest.raises(InputError, match="fusion auto cannot be fitted out of core"):
        evaluate_store(small_store, "label", "group", strategies=["auto"])
    with pytest.raises(InputError, match="inner_cv must be an int >= 2"):
        evaluate_store(small_store, "label", "group", inner_cv=1)
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


def test_early_fusion_keeps_equal_weights_and_says_so(small_store):
    r = evaluate_store(small_store, "label", "group", strategies=["early[cv]"], cv=3, epochs=1)
    assert r.row("early[cv]").weights_fallback == ["out-of-core: learned weights are not "
                                                   "fitted when streaming; equal weights"] * 3


def _meta_inputs(monkeypatch) -> list:
    """Records every ``(fold, out-of-fold probabilities)`` a streamed meta level is fitted on."""
    from mmfuse.evaluate import streamed_fit

    calls = []
    fit_meta = streamed_fit.StreamedFit._fit_meta

    def spy(self, f, oof):
        calls.append((f, {m: np.array(p) for m, p in oof.items()}))
        return fit_meta(self, f, oof)

    monkeypatch.setattr(streamed_fit.StreamedFit, "_fit_meta", spy)
    return calls


def _plan_and_fit(store, strategies, epochs):
    """The plan ``evaluate_store`` makes (3 grouped folds, cv weights), and a function that
    fits some of its folds."""
    from mmfuse.evaluate.streamed import _plan
    from mmfuse.evaluate.streamed_fit import StreamedFit

    plan = _plan({"path": str(store), "label": "label", "group": "group", "cv": 3,
                  "random_state": 0, "modalities": None, "strategies": strategies,
                  "weights": "cv", "epochs": epochs, "batch_size": None})

    def fit(folds):
        return StreamedFit(plan["stream"], plan["classes"], plan["y"], plan["groups"],
                           plan["fold_of_row"], plan["n_folds"], plan["configs"],
                           batch_size=plan["batch_size"], epochs=epochs,
                           learning_rate=0.002, random_state=0).fit(folds)

    return plan, fit


def test_the_meta_level_sees_out_of_fold_probabilities(small_store, monkeypatch):
    """What stacking's meta level is fitted on is, row by row, the prediction of the inner
    expert that did not train on the row; weighted's grid scores each training row once."""
    from mmfuse.fusion.weighted import grid_choice

    calls = _meta_inputs(monkeypatch)
    plan, fit_folds = _plan_and_fit(small_store, ["stacking", "weighted"], epochs=2)
    fit = fit_folds([0, 1])
    seen = dict(calls)
    assert sorted(seen) == [0, 1] and fit.n_inner[0] == 3
    train = np.flatnonzero(plan["fold_of_row"] != 0)
    shard = plan["stream"].shard(1)
    rows = shard.rows[plan["fold_of_row"][shard.rows] != 0]
    local = np.searchsorted(shard.rows, rows)
    for j in range(3):
        pick = fit.inner[0][rows] == j
        views = {m: fit.scalers.transform(m, 0, shard.views[m][local[pick]])
                 for m in fit.mods}
        present = {m: shard.present[m][local[pick]] for m in fit.mods}
        want = fit._inner_probas(0, j, views, present)
        for m in fit.mods:
            got = seen[0][m][np.searchsorted(train, rows[pick])]
            np.testing.assert_allclose(got, want[m], rtol=1e-5)
        # the other inner folds' experts trained on these rows: they predict differently
        other = fit._inner_probas(0, (j + 1) % 3, views, present)
        assert not np.allclose(other["image"], want["image"])
    counts = fit.grids[0]["weighted"]
    assert counts[..., 1].sum(axis=1).tolist() == [len(train)] * len(counts)
    i = grid_choice(counts[..., 0] / counts[..., 1], fit.grid[1])
    assert fit.weights[0]["weighted"] == dict(zip(fit.mods, fit.grid[0][i]))
    assert "weighted" in fit.stage2[0] and "stacking" in fit.metas[0]



def test_the_meta_level_learns_from_a_bounded_sample_of_out_of_fold_rows(small_store,
                                                                         monkeypatch):
    """Above META_MAX_ROWS training rows, the meta level and the learned weights see a
    seeded uniform sample of that many rows, each with the out-of-fold probabilities it
    has without the bound (so memory stays bounded whatever the store's size)."""
    from mmfuse.evaluate import streamed_fit

    calls = _meta_inputs(monkeypatch)
    plan, fit_folds = _plan_and_fit(small_store, ["stacking", "late"], epochs=1)
    fits, seen = {}, {}
    for bound in (10**6, 300):
        monkeypatch.setattr(streamed_fit, "META_MAX_ROWS", bound)
        fits[bound] = fit_folds([0])
        seen[bound] = dict(calls[-1:])
    train = np.flatnonzero(plan["fold_of_row"] != 0)
    sample = fits[300].meta_rows[0]
    assert len(train) > 700 and len(sample) == 300 and np.isin(sample, train).all()
    assert len(np.unique(sample)) == 300
    for m in ("image", "text"):
        assert seen[300][0][m].shape == (300, 4)
        np.testing.assert_allclose(seen[300][0][m],
                                   seen[10**6][0][m][np.searchsorted(train, sample)])
    assert "stacking" in fits[300].metas[0] and "late" in fits[300].metas[0]


def test_out_of_fold_probabilities_on_disk_change_nothing(small_store, monkeypatch):
    from mmfuse.evaluate import streamed_fit

    kwargs = dict(strategies=["late", "stacking"], weights="relative", cv=2, random_state=0,
                  epochs=2)
    memory = evaluate_store(small_store, "label", "group", **kwargs)
    made = []
    real = np.lib.format.open_memmap

    def recording(path, *args, **kw):
        made.append(path)
        return real(path, *args, **kw)

    monkeypatch.setattr(streamed_fit, "OOF_MEMORY_BYTES", 0)
    monkeypatch.setattr(np.lib.format, "open_memmap", recording)
    disk = evaluate_store(small_store, "label", "group", **kwargs)
    assert len(made) == 4  # 2 folds x 2 modalities
    for name, pred in memory.predictions.items():
        np.testing.assert_array_equal(pred, disk.predictions[name])


def test_without_inner_folds_learned_weights_fall_back_to_equal(tmp_path):
    """Two groups, leave-one-group-out: a fold's training rows are one group, too few for
    inner folds; as in memory, learned weights and stacking fall back to equal weights."""
    import pandas as pd

    from mmfuse.features.arrays import write_array_store

    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, n)
    views = {"a": (rng.normal(size=(n, 3)) + y[:, None]).astype(np.float32),
             "b": (rng.normal(size=(n, 2)) + y[:, None]).astype(np.float32)}
    frame = pd.DataFrame({"label": y, "group": np.arange(n) % 2})
    store = tmp_path / "store"
    write_array_store(store, [(frame, views)], encoders={"a": "x", "b": "y"},
                      dims={"a": 3, "b": 2}, n_rows=n, rows_per_shard=n)
    r = evaluate_store(store, "label", "group", strategies=["late", "weighted", "stacking"],
                       weights="cv", cv=2, epochs=2)
    for name in ("late", "weighted", "stacking"):
        notes = r.row(name).weights_fallback
        assert len(notes) == 2 and all(n.startswith("equal weights: too few") for n in notes)
        assert r.row(name).fold_weights == [{"a": 0.5, "b": 0.5}] * 2
    assert r.row("late").fold_accuracy == r.row("stacking").fold_accuracy


@pytest.mark.parametrize("fallback", ["equal", "single:text"])
def test_stacking_that_falls_back_predicts_from_experts_fitted_on_every_row(
        small_store, monkeypatch, fallback):
    """As in memory: stacking that falls back to the equal-weight mean predicts exactly as
    late fusion with equal weights, and one that falls back to a modality as that
    modality's own model (experts fitted on every training row, not the inner ones)."""
    from mmfuse.fusion.stacking import StackingFusion

    monkeypatch.setattr(StackingFusion, "_simple_fallback", lambda self, *a: fallback)
    r = evaluate_store(small_store, "label", "group", strategies=["late[equal]", "stacking"],
                       cv=3, epochs=1, random_state=0)
    if fallback == "equal":
        assert np.array_equal(r.predictions["stacking"], r.predictions["late[equal]"])
        assert r.row("stacking").fold_accuracy == r.row("late[equal]").fold_accuracy
    else:  # rows without text get the others' mean, as in memory
        has = load(small_store).present["text"]
        assert 0 < has.mean() < 1
        assert np.array_equal(r.predictions["stacking"][has], r.predictions["text"][has])


def test_inner_fold_models_are_standardised_by_their_own_training_rows(small_store,
                                                                        monkeypatch):
    """As in memory, an inner fold's experts see their inner training rows standardised by
    those rows' own statistics (mean 0, deviation 1 over one pass), not by the outer
    fold's."""
    from mmfuse.fusion.streamed import StreamedSoftmax

    seen: dict = {}
    partial_fit = StreamedSoftmax.partial_fit

    def spy(self, x, y, *args, **kw):
        seen.setdefault(tuple(np.ravel(self.random_state)), []).append(np.array(x))
        return partial_fit(self, x, y, *args, **kw)

    monkeypatch.setattr(StreamedSoftmax, "partial_fit", spy)
    evaluate_store(small_store, "label", "group", strategies=["late"], weights="cv", cv=3,
                   epochs=1, random_state=0)
    inner = [k for k in seen if len(k) == 4 and 100 <= k[2] < 200]
    assert len(inner) == 3 * 3 * 2  # outer folds x inner folds x modalities
    for key in inner:
        x = np.concatenate(seen[key])
        assert np.allclose(x.mean(axis=0), 0, atol=1e-4), key
        assert np.allclose(x.std(axis=0), 1, atol=1e-3), key
