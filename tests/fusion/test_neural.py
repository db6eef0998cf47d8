"""The learned fusion heads (gmu, attention, lowrank): API, masks, reproducibility, state."""

import pickle
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import clone

from conftest import make_views, spy_inner_splits
from mmfuse import InputError, MissingDependencyError
from mmfuse.devices import DeviceError
from mmfuse.fusion import create_fusion, list_fusions

torch = pytest.importorskip("torch")

from mmfuse.fusion.neural.modules import _drop_modalities, build_module  # noqa: E402

HEADS = ["gmu", "attention", "lowrank"]
FAST = {"max_epochs": 60, "patience": 8}


def split(views, y, n_train, present=None):
    tr = {k: v[:n_train] for k, v in views.items()}
    te = {k: v[n_train:] for k, v in views.items()}
    if present is None:
        return tr, y[:n_train], te, y[n_train:]
    ptr = {k: p[:n_train] for k, p in present.items()}
    pte = {k: p[n_train:] for k, p in present.items()}
    return tr, y[:n_train], ptr, te, y[n_train:], pte


def test_heads_are_registered_with_the_torch_extra():
    entries = {f["name"]: f for f in list_fusions()}
    for head in HEADS:
        assert entries[head]["extra"] == "torch"


@pytest.mark.parametrize("head", HEADS)
def test_head_fits_predicts_and_fuses(head):
    views, y = make_views(n=500)
    tr, ytr, te, yte = split(views, y, 350)
    labels = np.array(["cat", "dog", "eel", "fox"])
    f = create_fusion(head, random_state=0, **FAST).fit(tr, labels[ytr])
    proba = f.predict_proba(te)
    assert proba.shape == (150, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert f.classes_.tolist() == labels.tolist()
    # each view alone is at most ~0.5 accurate (it sees half the label)
    assert f.score(te, labels[yte]) > 0.65
    assert len(f.best_epoch_) == len(f.n_epochs_) == len(f.history_) == 3  # members
    for best, n, history in zip(f.best_epoch_, f.n_epochs_, f.history_):
        assert 1 <= best <= n <= FAST["max_epochs"]
        assert len(history["val_loss"]) == n
    if head == "lowrank":
        assert f.modality_weights_ is None
    else:
        assert set(f.modality_weights_) == {"a", "b"}
        assert sum(f.modality_weights_.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("head", HEADS)
def test_seeded_and_reproducible(head):
    views, y = make_views(n=200)
    a = create_fusion(head, random_state=3, **FAST).fit(views, y).predict_proba(views)
    b = create_fusion(head, random_state=3, **FAST).fit(views, y).predict_proba(views)
    c = create_fusion(head, random_state=4, **FAST).fit(views, y).predict_proba(views)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("head", HEADS)
def test_missing_rows_are_masked_not_read(head):
    views, y = make_views(n=300)
    rng = np.random.default_rng(0)
    present = {"a": rng.random(300) > 0.3, "b": rng.random(300) > 0.3}
    present["a"][~(present["a"] | present["b"])] = True
    f = create_fusion(head, random_state=0, **FAST).fit(views, y, present)
    # what a missing row holds must not matter: NaN or garbage give the same prediction
    nan_views = {m: np.where(present[m][:, None], v, np.nan) for m, v in views.items()}
    junk_views = {m: np.where(present[m][:, None], v, 1e6) for m, v in views.items()}
    np.testing.assert_allclose(f.predict_proba(nan_views, present),
                               f.predict_proba(junk_views, present), atol=1e-6)


def test_state_is_numpy_and_rebuilds_without_pickle():
    views, y = make_views(n=200)
    f = create_fusion("attention", random_state=0, **FAST).fit(views, y)
    assert all(isinstance(v, np.ndarray) for v in f.state_dict_.values())
    assert all(isinstance(v, np.ndarray) for v in f.input_mean_.values())
    arch = dict(f.architecture_)
    assert arch["head"] == "attention" and arch["modalities"] == ["a", "b"]
    assert arch["n_members"] == 3
    module = build_module(arch, f.state_dict_).eval()
    xs = f._standardise(views, {m: np.ones(200, bool) for m in views})
    with torch.no_grad():
        proba = module([torch.from_numpy(x) for x in xs], torch.ones(200, 2, dtype=torch.bool))
    np.testing.assert_allclose(proba.numpy(), f.predict_proba(views), atol=1e-5)
    # pickling leaves the torch module behind and rebuilds it on demand
    g = pickle.loads(pickle.dumps(f))
    assert "_module" not in g.__dict__
    np.testing.assert_allclose(g.predict_proba(views), f.predict_proba(views), atol=1e-6)


def test_clone_and_params():
    f = create_fusion("lowrank", rank=2, width=16)
    g = clone(f)
    assert g.get_params()["rank"] == 2 and g.get_params()["width"] == 16


def test_groups_make_grouped_validation_splits(monkeypatch):
    from mmfuse.fusion import neural

    seen = spy_inner_splits(monkeypatch, neural)
    views, y = make_views(n=240)
    groups = np.repeat(np.arange(8), 30)
    f = create_fusion("gmu", random_state=0, **FAST).fit(views, y, groups=groups)
    groups_seen, splits = seen[0]
    assert groups_seen is not None
    for train, val in splits[: len(f.n_epochs_)]:  # each member's validation rows
        assert not set(groups[train]) & set(groups[val])


def test_modality_dropout_keeps_one_present_and_adds_none():
    gen = torch.Generator().manual_seed(0)
    mask = torch.from_numpy(np.random.default_rng(0).random((500, 3)) > 0.3)
    mask[~mask.any(dim=1), 0] = True
    kept = _drop_modalities(torch, mask, 0.9, gen)
    assert bool(kept.any(dim=1).all())
    assert not bool((kept & ~mask).any())
    assert kept.sum() < mask.sum()


@pytest.mark.parametrize("params, match", [
    ({"width": 0}, "width must be an integer >= 1"),
    ({"modality_dropout": 1.0}, r"modality_dropout must be in \[0, 1\)"),
    ({"lr": 0}, "lr must be a finite number > 0"),
])
def test_bad_parameters(params, match):
    views, y = make_views(n=60)
    with pytest.raises(InputError, match=match):
        create_fusion("gmu", **params).fit(views, y)


def test_attention_heads_must_divide_width():
    views, y = make_views(n=60)
    with pytest.raises(InputError, match="n_heads must be a positive integer dividing width=10"):
        create_fusion("attention", width=10, n_heads=4).fit(views, y)


def test_a_bad_device_is_the_one_device_error():
    views, y = make_views(n=60)
    with pytest.raises(DeviceError, match=r"device must be one of \['auto', 'cpu', 'cuda'\]"):
        create_fusion("gmu", device="tpu").fit(views, y)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_cuda_without_a_device_is_a_clear_error():
    views, y = make_views(n=60)
    # the heads and the encoders resolve devices in one place (mmfuse.devices)
    for device in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match="no CUDA device is available"):
            create_fusion("gmu", device=device).fit(views, y)


def test_missing_torch_names_the_extra(monkeypatch):
    views, y = make_views(n=60)
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(MissingDependencyError, match=r'pip install "mmfuse\[torch\]"'):
        create_fusion("gmu").fit(views, y)


def test_registry_does_not_import_torch():
    code = ("import sys, mmfuse; from mmfuse.fusion import list_fusions; list_fusions(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_through_the_classifier():
    from mmfuse import MultimodalClassifier

    views, y = make_views(n=300)
    clf = MultimodalClassifier(fusion="gmu", random_state=0, fusion_params=FAST)
    clf.fit(views, y)
    assert clf.score(views, y) > 0.65


def test_a_model_file_round_trip(tmp_path):
    pytest.importorskip("mmfuse.persist")
    import mmfuse
    from mmfuse import MultimodalClassifier

    views, y = make_views(n=200)
    clf = MultimodalClassifier(fusion="lowrank", random_state=0, fusion_params=FAST)
    clf.fit(views, y)
    path = clf.save(tmp_path / "head.mmfuse")
    loaded = mmfuse.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(views), clf.predict_proba(views))


def test_training_restores_the_process_torch_threads():
    before = torch.get_num_threads()
    views, y = make_views(n=80)
    create_fusion("gmu", n_threads=1, max_epochs=3, random_state=0).fit(views, y)
    assert torch.get_num_threads() == before
