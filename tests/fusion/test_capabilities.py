"""Capabilities declared at registration (issue 28): what replaces name sets, ``hasattr``
duck-typing and ``isinstance`` switches on strategy classes."""

import numpy as np
import pytest

from conftest import make_views
from mmfuse.explain import LEAVE_ONE_OUT, LOG_SHARE, method_for
from mmfuse.fusion import FusionStrategy, create_fusion, register_fusion
from mmfuse.fusion.base import FUSIONS, capabilities, fusions_with
from mmfuse.fusion.candidates import fused_candidates
from mmfuse.privacy.dp import private_fusions


def test_what_the_strategies_declare():
    assert fusions_with(takes_weights=True) == ["early", "late", "weighted"]
    assert fusions_with(meta_level=True) == ["late", "stacking", "weighted"]
    assert fusions_with(explanation="log-share") == ["late", "weighted"]
    assert private_fusions() == ["early", "late"]
    assert set(fusions_with(cost="high")) == {"attention", "auto", "gmu", "lowrank"}
    assert capabilities("stacking")["cost"] == "medium"


def test_a_subclass_inherits_its_parents_declaration_and_an_unregistered_one_has_none():
    late = type(create_fusion("late"))
    sub = type("MyLate", (late,), {})
    assert capabilities(sub())["explanation"] == "log-share"
    assert capabilities(type("Bare", (FusionStrategy,), {})()) == {}


def test_a_bad_declaration_is_refused_at_registration():
    with pytest.raises(ValueError, match="explanation must be one of"):
        register_fusion("never-registered", explanation="shap")
    with pytest.raises(ValueError, match="cost must be one of"):
        register_fusion("never-registered", cost="cheap")
    assert "never-registered" not in FUSIONS


def test_the_meta_level_is_a_public_protocol():
    views, y = make_views(n=120)
    rng = np.random.default_rng(0)
    probas = {m: rng.dirichlet(np.ones(4), size=120) for m in views}
    present = {m: np.ones(120, bool) for m in views}
    late = create_fusion("late", weights="equal")
    assert late.has_meta_level()
    out = late.fit_meta(probas, y, present, n_classes=4).predict_meta(probas, present)
    assert out.shape == (120, 4) and np.allclose(out.sum(axis=1), 1)
    assert late.classes_.tolist() == [0, 1, 2, 3] and late.modalities_ == ["a", "b"]
    # weighted is a meta level only on class scores; early has none
    assert not create_fusion("weighted").has_meta_level()
    assert create_fusion("weighted", projection="class-scores").has_meta_level()
    with pytest.raises(TypeError, match="early has no meta level"):
        create_fusion("early").fit_meta(probas, y, present, n_classes=4)


def test_explain_asks_the_declaration_not_the_class():
    views, y = make_views(n=120)
    assert method_for(create_fusion("late", weights="equal").fit(views, y)) == LOG_SHARE
    assert method_for(create_fusion("stacking").fit(views, y)) == LEAVE_ONE_OUT


def test_fixed_weights_reach_only_the_strategies_that_take_weights():
    cands = fused_candidates(("a", "b"), ["late", "stacking"], False, "equal", None)
    assert [(c.name, dict(c.params)) for c in cands] == [
        ("late[equal]", {"weights": "equal"}), ("stacking", {})]
