"""Cross-validation under differential privacy (mmfuse.evaluate.dp)."""

import math

import pytest

from mmfuse.privacy.dp import import_diffprivlib  # noqa: E402

try:
    import_diffprivlib()
except ImportError:  # MissingDependencyError
    pytest.skip('needs pip install "mmfuse[privacy]"', allow_module_level=True)

from conftest import make_views  # noqa: E402
from mmfuse.evaluate.dp import evaluate_dp  # noqa: E402


def test_evaluate_dp_rows_and_cost():
    views, y = make_views(n=400)
    private = evaluate_dp(views, y, epsilon=0.05, cv=3, noise_seed=0)
    clear = evaluate_dp(views, y, epsilon=math.inf, cv=3)
    assert [r.name for r in clear.rows] == ["a", "b", "early", "late"]
    assert clear.row("early").accuracy > max(clear.row("a").accuracy, clear.row("b").accuracy)
    assert private.row("early").accuracy < clear.row("early").accuracy
    assert clear.cv["epsilon"] == "inf" and private.cv["epsilon"] == 0.05
