"""auto's choice rule (one SE on both sides, preference among equal-weight fusions) and the
exact Gram-factor fit of wide logistic regressions (early fusion, the seed baseline)."""

import numpy as np
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression

from mmfuse.fusion import create_fusion
from mmfuse.fusion import baseline as baseline_module
from mmfuse.fusion import early as early_module
from mmfuse.fusion.choice import choose, simple_labels, simple_order
from mmfuse.fusion.linear import fit_logistic_gram, gram_applicable


# -- choose -------------------------------------------------------------------------------

def test_simple_order_puts_the_seed_first_and_singles_last():
    names = ["single:b", "late[equal]", "stacking", "early[equal]", "seed-baseline", "single:a"]
    assert simple_order(names) == ["seed-baseline", "early[equal]", "late[equal]",
                                   "single:a", "single:b"]
    # declared at registration (simple_rank), not listed here
    assert simple_labels() == ["seed-baseline", "early[equal]", "late[equal]"]


def test_a_tie_the_inner_folds_cannot_resolve_keeps_the_seed_formula():
    # early ahead on the mean, but by less than one SE of the paired differences
    scores = {"early[equal]": [0.75, 0.76, 0.74, 0.77, 0.75],
              "late[equal]": [0.70, 0.69, 0.70, 0.70, 0.70],
              "seed-baseline": [0.76, 0.73, 0.75, 0.75, 0.74],
              "single:text": [0.70, 0.70, 0.71, 0.70, 0.70]}
    assert choose(scores) == "seed-baseline"


def test_a_clearly_better_equal_weight_fusion_replaces_the_seed():
    scores = {"early[equal]": [0.80, 0.81, 0.79, 0.82, 0.80],
              "seed-baseline": [0.74, 0.75, 0.73, 0.75, 0.74],
              "single:text": [0.70, 0.70, 0.71, 0.70, 0.70]}
    assert choose(scores) == "early[equal]"


def test_the_preferred_fusion_is_never_below_the_best_single_modality():
    # the seed is within one SE of early, but below text alone on the mean
    scores = {"early[equal]": [0.80, 0.70, 0.80, 0.70],
              "seed-baseline": [0.80, 0.62, 0.80, 0.62],
              "single:text": [0.72, 0.72, 0.72, 0.72]}
    assert choose(scores) == "early[equal]"


def test_a_learned_candidate_needs_more_than_one_se_over_the_best_simple_one():
    base = {"seed-baseline": [0.70, 0.72, 0.71, 0.69], "single:a": [0.6] * 4}
    noisy = {**base, "stacking": [0.80, 0.62, 0.81, 0.65]}
    assert choose(noisy) == "seed-baseline"
    clear = {**base, "stacking": [0.75, 0.78, 0.76, 0.74]}
    assert choose(clear) == "stacking"


def test_a_single_modality_is_chosen_only_when_it_is_best_outright():
    scores = {"seed-baseline": [0.60, 0.61, 0.62], "early[equal]": [0.61, 0.60, 0.62],
              "single:a": [0.70, 0.71, 0.72]}
    assert choose(scores) == "single:a"


# -- exact Gram-factor fit ----------------------------------------------------------------

def _wide_blocks(seed=0, n=60, k=3):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    dense_block = rng.normal(size=(n, 150)) + y[:, None] * 0.3
    text = sparse.random(n, 400, density=0.02, random_state=seed, format="csr")
    text = text + sparse.csr_matrix((np.ones(n), (np.arange(n), y)), shape=(n, 400))
    return [dense_block.astype(np.float32), text.tocsr().astype(np.float32)], y


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_gram_factor_fit_predicts_as_the_direct_fit(n_classes):
    blocks, y = _wide_blocks(n=60, k=n_classes)
    design = sparse.hstack([sparse.csr_matrix(blocks[0]), blocks[1]], format="csr",
                           dtype=np.float64)
    direct = LogisticRegression(max_iter=5000, tol=1e-10).fit(design, y)
    model = LogisticRegression(max_iter=5000, tol=1e-10)
    assert gram_applicable(model, *design.shape)
    via = fit_logistic_gram(model, blocks, y)
    assert via is model and via.coef_.shape == direct.coef_.shape
    np.testing.assert_allclose(via.predict_proba(design), direct.predict_proba(design),
                               atol=1e-5)
    np.testing.assert_allclose(via.coef_, direct.coef_, atol=1e-3)
    new = design[::3]
    np.testing.assert_array_equal(via.predict(new), direct.predict(new))


def test_gram_factor_only_where_it_is_exact_and_worth_it():
    assert gram_applicable(LogisticRegression(), 10, 20)
    assert not gram_applicable(LogisticRegression(), 10, 19)  # not twice as wide as tall
    # many rows: the n x n factorisation outweighs the passes it saves (measured with the
    # eigendecomposition; see GRAM_ROWS)
    assert not gram_applicable(LogisticRegression(), 1375, 3140)
    assert gram_applicable(LogisticRegression(), 1375, 20_000)
    assert gram_applicable(LogisticRegression(), 690, 2_400)
    assert not gram_applicable(LogisticRegression(solver="liblinear"), 10, 100)
    assert not gram_applicable(LogisticRegression(l1_ratio=1.0, solver="saga"), 10, 100)
    assert not gram_applicable(LogisticRegression(warm_start=True), 10, 100)

    class Sub(LogisticRegression):
        pass

    assert not gram_applicable(Sub(), 10, 100)


def _views(seed=0, n=70):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    a = (rng.normal(size=(n, 200)) + 0.4 * y[:, None]).astype(np.float32)
    text = sparse.random(n, 300, density=0.03, random_state=seed, format="csr")
    text = (text + sparse.csr_matrix((np.ones(n), (np.arange(n), y + 5)),
                                     shape=(n, 300))).tocsr().astype(np.float32)
    return {"a": a, "t": text}, y


@pytest.mark.parametrize("strategy,module", [("early", early_module),
                                             ("seed-baseline", baseline_module)])
def test_wide_early_and_seed_fits_match_the_direct_fit(monkeypatch, strategy, module):
    views, y = _views()
    via = create_fusion(strategy, random_state=0).fit(views, y)
    assert via.model_.coef_.shape[1] >= 2 * len(y)  # the Gram path was taken
    monkeypatch.setattr(module, "gram_applicable", lambda *a: False)
    direct = create_fusion(strategy, random_state=0).fit(views, y)
    np.testing.assert_allclose(via.predict_proba(views), direct.predict_proba(views),
                               atol=2e-3)
    np.testing.assert_array_equal(via.predict(views), direct.predict(views))
