"""The seed baseline (mmfuse.fusion.baseline): the seed's formula as written, each view made
dense once."""

from unittest import mock

import numpy as np
import pytest
from scipy import sparse
from sklearn.preprocessing import StandardScaler

from mmfuse.fusion import baseline
from mmfuse.fusion.baseline import SeedBaseline
from mmfuse.views import dense, is_sparse


def _views(n=90, seed=0, missing=False):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    image = rng.normal(size=(n, 6)).astype(np.float32)
    image[:, 0] += y
    text = sparse.random(n, 40, density=0.2, random_state=seed, format="csr",
                         dtype=np.float32)
    text = (text + sparse.csr_matrix((np.ones(n, np.float32), (np.arange(n), 3 * y)),
                                     shape=(n, 40))).tocsr()
    present = {"image": np.ones(n, bool), "text": np.ones(n, bool)}
    if missing:
        present["text"][::7] = False
        text = (sparse.diags(present["text"].astype(np.float32)) @ text).tocsr()
    return {"image": image, "text": text}, present, y


def _seed_sum(views, present, scalers):
    """The seed's 0.5·f1 + 0.5·f2 as it was written: each view standardised on its present
    rows (missing rows 0) and zero-padded to the widest."""
    views = {m: dense(v) for m, v in views.items()}
    total = np.zeros((len(next(iter(present.values()))), max(v.shape[1] for v in
                                                              views.values())), np.float32)
    for m in sorted(views):
        z = np.zeros_like(views[m])
        z[present[m]] = scalers[m].transform(views[m][present[m]])
        total[:, : z.shape[1]] += z / len(views)
    return total


@pytest.mark.parametrize("missing", [False, True])
def test_the_sum_and_scalers_are_the_seeds_to_the_bit(missing):
    views, present, y = _views(missing=missing)
    model = SeedBaseline().fit(views, y, present)
    for m in views:
        ref = StandardScaler().fit(dense(views[m][np.flatnonzero(present[m])]))
        assert np.array_equal(model.scalers_[m].mean_, ref.mean_)
        assert np.array_equal(model.scalers_[m].scale_, ref.scale_)
    assert np.array_equal(model._sum(views, present),
                          _seed_sum(views, present, model.scalers_))


def test_each_view_is_made_dense_once_per_fit():
    views, present, y = _views()
    expanded = []

    def counting(x):
        if is_sparse(x):
            expanded.append(x.shape)
        return dense(x)

    with mock.patch.object(baseline, "dense", counting):
        SeedBaseline().fit(views, y, present)
    assert expanded == [views["text"].shape]
