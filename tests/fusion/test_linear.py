"""Separate experts on a view's column blocks (SplitExperts) and per-view classifiers
(classifier_for) in mmfuse.fusion.linear."""

import numpy as np
import pytest
from scipy import sparse
from scipy.special import softmax
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

from mmfuse import InputError
from mmfuse.fusion.linear import (ANY_VIEW, SplitExperts, classifier_for, make_classifier,
                                  with_view_classifiers)


def _blocks(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    a = rng.normal(size=(n, 5))
    a[:, 0] += 2.0 * (y % 2)
    b = rng.normal(size=(n, 3))
    b[:, 0] += 2.0 * (y // 2)
    return a, b, y


def _product(models, blocks):
    logs = sum(np.log(np.clip(m.predict_proba(x), 1e-9, 1.0)) for m, x in zip(models, blocks))
    return softmax(logs / len(models), axis=1)


def test_split_experts_is_the_equal_weight_product_of_per_block_classifiers():
    a, b, y = _blocks()
    x = np.hstack([a, b])
    model = SplitExperts(widths=(5, 3)).fit(x, y)
    manual = [LogisticRegression(max_iter=2000).fit(a, y), LogisticRegression(max_iter=2000).fit(b, y)]
    np.testing.assert_allclose(model.predict_proba(x), _product(manual, [a, b]), atol=1e-6)
    assert model.predict(x).tolist() == model.classes_[
        np.argmax(model.predict_proba(x), axis=1)].tolist()
    # both blocks help: the product beats either block alone
    acc = np.mean(model.predict(x) == y)
    assert acc > max(np.mean(m.predict(v) == y) for m, v in zip(manual, [a, b])) + 0.1
    # the estimator of each block is cloned, and given the random state when it has none
    est = SplitExperts((5, 3), LogisticRegression(C=0.5, max_iter=500), random_state=3).fit(x, y)
    assert [e.C for e in est.estimators_] == [0.5, 0.5]
    assert all(e.random_state == 3 for e in est.estimators_)


def test_split_experts_rescales_each_sparse_block_as_a_sparse_view_alone():
    a, b, y = _blocks()
    a, b = np.abs(a), np.abs(b)
    # a sparse concatenation as concat_views builds it: every part's rows unit-norm
    x = sparse.hstack([normalize(sparse.csr_matrix(a)), normalize(sparse.csr_matrix(b))],
                      format="csr")
    model = SplitExperts(widths=[5, 3]).fit(x, y)
    # each block alone, scaled as ViewScaler scales a sparse view: rows of norm sqrt(width)
    ba = normalize(sparse.csr_matrix(a)) * np.sqrt(5)
    bb = normalize(sparse.csr_matrix(b)) * np.sqrt(3)
    manual = [make_classifier(None, None, ba).fit(ba, y), make_classifier(None, None, bb).fit(bb, y)]
    np.testing.assert_allclose(model.predict_proba(x), _product(manual, [ba, bb]), atol=1e-6)


def test_split_experts_aligns_classes_and_checks_widths():
    a, b, y = _blocks()
    labels = np.array(["cat", "dog", "eel", "fox"])[y]
    model = SplitExperts((5, 3)).fit(np.hstack([a, b]), labels)
    assert model.classes_.tolist() == ["cat", "dog", "eel", "fox"]
    assert model.predict_proba(np.hstack([a, b])).shape == (len(y), 4)
    for widths in [(5, 4), (8,), (), (0, 8), "53"]:
        with pytest.raises(InputError, match="block widths summing to the view's 8 columns"):
            SplitExperts(widths).fit(np.hstack([a, b]), y)
    # scikit-learn conventions: __init__ stores, clone keeps the parameters
    c = clone(SplitExperts((5, 3), LogisticRegression(C=2.0)))
    assert c.get_params()["widths"] == (5, 3) and c.get_params()["estimator"].C == 2.0
    assert "SplitExperts(widths=(5, 3))" == repr(SplitExperts((5, 3)))


def test_classifier_for_reads_a_per_view_dict():
    lr = LogisticRegression(C=0.3)
    split = SplitExperts((2, 2))
    assert classifier_for(None, "image") is None and classifier_for(lr, None) is lr
    per_view = {ANY_VIEW: lr, "image": split}
    assert classifier_for(per_view, "image") is split
    assert classifier_for(per_view, "text") is lr and classifier_for(per_view, None) is lr
    assert classifier_for({"image": split}, "text") is None  # no base: the default
    # models over all views together use the base classifier
    assert make_classifier(per_view).C == 0.3
    assert isinstance(make_classifier({"image": split}), LogisticRegression)
    # with_view_classifiers adds only what differs from the base
    assert with_view_classifiers(lr, {"text": lr}) is lr
    assert with_view_classifiers(None, {"image": split}) == {ANY_VIEW: None, "image": split}
    assert with_view_classifiers(per_view, {"text": split})["text"] is split


def test_block_gram_splits_dense_columns_of_a_sparse_block_exactly():
    from scipy import sparse

    from mmfuse.fusion.linear import _block_gram

    rng = np.random.default_rng(0)
    tfidf = sparse.random(80, 300, density=0.02, random_state=0, format="csr")
    emb = rng.normal(size=(80, 12))  # a dense embedding concatenated to TF-IDF
    b = sparse.hstack([tfidf, sparse.csr_matrix(emb)]).tocsr()
    full = (b @ b.T).toarray()
    assert np.allclose(_block_gram(b), full, atol=1e-12)
    assert np.allclose(_block_gram(tfidf), (tfidf @ tfidf.T).toarray(), atol=1e-12)
    assert np.allclose(_block_gram(sparse.csr_matrix(emb)), emb @ emb.T, atol=1e-12)
    assert np.allclose(_block_gram(emb), emb @ emb.T)


def _eigen_factor(gram):
    """The Gram fit's factor before Cholesky: V Λ^{1/2}, directions below 1e-10 dropped."""
    vals, vecs = np.linalg.eigh(gram)
    keep = vals > vals.max() * 1e-10
    root = np.sqrt(vals[keep])
    return vecs[:, keep] * root, lambda coef: (np.asarray(coef) / root) @ vecs[:, keep].T


def test_gram_factor_is_a_pivoted_cholesky_factor():
    from mmfuse.fusion.linear import gram_factor

    rng = np.random.default_rng(0)
    d = rng.normal(size=(40, 120))
    gram = d @ d.T
    factor, back = gram_factor(gram)
    # a triangle in some row order (Cholesky with pivoting), not the dense V Λ^{1/2}
    assert np.count_nonzero(factor) == 40 * 41 // 2
    np.testing.assert_allclose(factor @ factor.T, gram, rtol=1e-10, atol=1e-9)
    beta = rng.normal(size=(3, 40))
    np.testing.assert_allclose(back(beta) @ factor, beta, atol=1e-9)  # back(β) F = β


def test_gram_factor_drops_the_null_directions_of_a_singular_gram():
    from mmfuse.fusion.linear import gram_factor

    rng = np.random.default_rng(1)
    d = rng.normal(size=(30, 100))
    d[1] = d[0]  # a duplicate row: the Gram matrix is singular
    d -= d.mean(axis=0)  # centred columns (the seed's sum): the constant direction is null
    gram = d @ d.T
    factor, back = gram_factor(gram)
    assert factor.shape == (30, 28)  # both null directions dropped
    np.testing.assert_allclose(factor @ factor.T, gram, rtol=1e-9, atol=1e-8)
    beta = rng.normal(size=(2, 28))
    np.testing.assert_allclose(back(beta) @ factor, beta, atol=1e-9)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_cholesky_gram_fit_is_the_eigen_factor_fit(monkeypatch, n_classes, centred):
    # both factors give the same model: solved tightly, the same coefficients and
    # probabilities to numerical precision (at the default tolerance they can stop a few
    # iterations apart)
    from mmfuse.fusion import linear

    rng = np.random.default_rng(2)
    n = 90
    y = np.arange(n) % n_classes
    dense_block = (rng.normal(size=(n, 160)) + 0.3 * y[:, None]).astype(np.float32)
    text = sparse.random(n, 500, density=0.03, random_state=2, format="csr")
    text = (text + sparse.csr_matrix((np.ones(n), (np.arange(n), y)), shape=(n, 500)))
    blocks = [dense_block, text.tocsr().astype(np.float32)]
    if centred:  # a singular Gram matrix, as the seed baseline's standardised sum gives
        blocks = [b - b.mean(axis=0) for b in (dense_block, text.toarray())]
    design = sparse.hstack([sparse.csr_matrix(b) for b in blocks], format="csr")
    new = linear.fit_logistic_gram(LogisticRegression(max_iter=5000, tol=1e-10), blocks, y)
    monkeypatch.setattr(linear, "gram_factor", _eigen_factor)
    old = linear.fit_logistic_gram(LogisticRegression(max_iter=5000, tol=1e-10), blocks, y)
    np.testing.assert_allclose(new.predict_proba(design), old.predict_proba(design),
                               atol=1e-7)
    np.testing.assert_allclose(new.coef_, old.coef_, atol=1e-5)
