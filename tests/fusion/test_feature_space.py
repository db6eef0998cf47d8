"""Early fusion's block scaling: every view the same total variance, whatever its width."""

import numpy as np
from scipy import sparse

from conftest import make_views
from mmfuse.fusion import create_fusion


def _design(f, views):
    present = {m: np.ones(len(next(iter(views.values()))), bool) for m in views}
    blocks = f._blocks(views, present, f.modality_weights_)
    return [b.toarray() if sparse.issparse(b) else np.asarray(b) for b in blocks]


def test_block_scaling_gives_every_view_the_total_variance_d_over_m():
    rng = np.random.RandomState(0)
    n = 200
    y = rng.randint(0, 2, n)
    views = {"narrow": rng.randn(n, 4) + y[:, None],
             "wide": rng.randn(n, 60),
             "text": sparse.random(n, 100, density=0.05, format="csr", random_state=0)}
    f = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    blocks = _design(f, views)
    total = 4 + 60 + 100
    for b in blocks:
        # mean squared row norm = the block's total variance (second moment for sparse)
        np.testing.assert_allclose(np.mean(np.sum(b ** 2, axis=1)), total / 3, rtol=1e-4)
    plain = _design(create_fusion("early", random_state=0).fit(views, y), views)
    assert [round(float(np.mean(np.sum(b ** 2, axis=1)))) for b in plain] == [4, 100, 60]  # (sorted: narrow, text, wide)


def test_block_scaling_changes_nothing_for_views_of_one_width():
    views, y = make_views(n=200)
    views["a"] = views["a"][:, :8]
    on = create_fusion("early", block_scaling=True, random_state=0).fit(views, y)
    off = create_fusion("early", random_state=0).fit(views, y)
    np.testing.assert_allclose(on.predict_proba(views), off.predict_proba(views), atol=1e-6)


def test_block_scaling_keeps_a_narrow_informative_view_beside_a_wide_noise_view():
    rng = np.random.RandomState(0)
    n = 400
    y = rng.randint(0, 2, n)
    views = {"narrow": rng.randn(n, 3) + 1.5 * y[:, None], "wide": rng.randn(n, 400)}
    train, test = np.arange(300), np.arange(300, n)
    acc = {}
    for scaling in (False, True):
        f = create_fusion("early", block_scaling=scaling, random_state=0).fit(
            {m: v[train] for m, v in views.items()}, y[train])
        acc[scaling] = np.mean(f.predict({m: v[test] for m, v in views.items()}) == y[test])
    alone = create_fusion("early", random_state=0).fit({"narrow": views["narrow"][train]},
                                                       y[train])
    acc_alone = np.mean(alone.predict({"narrow": views["narrow"][test]}) == y[test])
    assert acc[True] >= acc_alone - 0.05      # not drowned
    assert acc[True] > acc[False] + 0.05       # while the width-weighted design is
