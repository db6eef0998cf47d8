"""The HTML report: one self-contained file with the table and the plots embedded."""

from __future__ import annotations

import base64
import io
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from mmfuse import InputError  # noqa: E402
from mmfuse.evaluate import EvaluationResult, Row, evaluate  # noqa: E402
from mmfuse.report import render_report, write_report  # noqa: E402
from mmfuse.report.plots import robustness_table  # noqa: E402

IMG = re.compile(r'<img [^>]*src="([^"]*)"')


def synthetic_result(classes=("cat", "dog", "bird"), n=90, seed=0, errors=()) -> EvaluationResult:
    """An EvaluationResult as evaluate() returns it, without the cost of running one."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n)
    rows = [
        Row("image", "single", ["image"], None, None, 0.61, [0.52, 0.70], 0.60, 1.2,
            [0.6, 0.55, 0.68]),
        Row("text", "single", ["text"], None, None, 0.52, [0.41, 0.63], 0.50, 0.4,
            [0.5, 0.45, 0.6]),
        Row("late", "fused", ["image", "text"], "late", "cv", 0.77, [0.70, 0.84], 0.76, 2.0,
            [0.7, 0.8, 0.81], {"image": 0.62, "text": 0.38}),
        Row("stacking", "fused", ["image", "text"], "stacking", None, 0.74, [0.66, 0.82], 0.73,
            2.5, [0.7, 0.74, 0.78], {"image": 0.55, "text": 0.45}),
        Row("seed-baseline", "baseline", ["image", "text"], "seed-baseline", "equal", 0.58,
            [0.47, 0.69], 0.55, 0.9, [0.5, 0.6, 0.64], {"image": 0.5, "text": 0.5}),
    ]
    predictions = {r.name: np.where(rng.random(n) < r.accuracy, y, rng.integers(0, len(classes), n))
                   for r in rows}
    return EvaluationResult(n, len(classes), list(classes), {"kind": "stratified", "n_splits": 3},
                            rows, predictions, y, list(errors))


def embedded_pngs(page: str) -> list[bytes]:
    from PIL import Image

    images = []
    for src in IMG.findall(page):
        assert src.startswith("data:image/png;base64,"), src[:60]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
        with Image.open(io.BytesIO(data)) as img:
            assert img.size[0] >= 300 and img.size[1] >= 200
        images.append(data)
    return images


def test_report_is_self_contained(tmp_path):
    path = write_report(synthetic_result(), tmp_path / "out" / "report.html", title="Demo run")
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # nothing is fetched: no scripts, no stylesheets, no remote images, fonts or CSS urls
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)\s*=\s*"(?!data:)', page)
    assert not re.search(r"url\(", page)
    assert not re.search(r"https?://", page)
    # results table, accuracy chart, confusion matrix and weights chart
    assert "<table>" in page and "late" in page and "0.770" in page and "0.700&ndash;0.840" in page
    assert len(embedded_pngs(page)) == 3
    assert "Confusion matrix of the best configuration" in page
    assert "Learned modality weights" in page and "0.620" in page
    assert "Robustness" not in page
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.html"]


def test_all_text_is_escaped(tmp_path):
    hostile = "<script>alert(1)</script>"
    result = synthetic_result(classes=(hostile, "b&b", '"quoted"'),
                              errors=[f"row 3, column 'text': {hostile}"])
    result.rows[2].name = hostile
    result.predictions[hostile] = result.predictions.pop("late")
    page = render_report(result, title=f"Title {hostile}")
    assert hostile not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "b&amp;b" in page and "&quot;quoted&quot;" in page
    assert "Skipped items (1)" in page


@pytest.mark.parametrize("robustness", [
    pd.DataFrame({"name": ["late"] * 3 + ["image"] * 3, "missing_rate": [0, 0.5, 1.0] * 2,
                  "accuracy": [0.77, 0.7, 0.52, 0.61, 0.45, 0.33]}),
    {"late": {0.0: 0.77, 0.5: 0.70, 1.0: 0.52}, "image": [(0.0, 0.61), (1.0, 0.33)]},
    pd.DataFrame({"strategy": ["late"] * 2, "modality": ["text"] * 2, "noise": [0.0, 0.3],
                  "accuracy": [0.77, 0.6], "accuracy_ci95": [[0.7, 0.84], [0.5, 0.7]]}),
])
def test_robustness_curve_when_present(robustness):
    page = render_report(synthetic_result(), title="r", robustness=robustness)
    assert "<h2>Robustness</h2>" in page
    assert len(embedded_pngs(page)) == 4


def test_robustness_from_the_result_and_objects_with_to_frame():
    class Curves:
        def to_frame(self):
            return pd.DataFrame({"drop_rate": [0, 0.5], "accuracy": [0.8, 0.6]})

    result = synthetic_result()
    result.robustness = Curves()
    assert len(embedded_pngs(render_report(result))) == 4
    frame, level = robustness_table(Curves())
    assert level == "drop_rate" and frame["series"].tolist() == ["accuracy", "accuracy"]


def test_bad_robustness_input_says_what_it_needs():
    with pytest.raises(InputError, match="level column"):
        render_report(synthetic_result(), robustness=pd.DataFrame({"accuracy": [0.5]}))
    with pytest.raises(InputError, match="robustness must be"):
        render_report(synthetic_result(), robustness=42)


def test_many_errors_are_truncated():
    result = synthetic_result(errors=[f"row {i}: broken" for i in range(250)])
    page = render_report(result)
    assert "Skipped items (250)" in page and "row 99: broken" in page
    assert "row 100: broken" not in page and "150 more" in page


def test_report_of_a_real_evaluation(tmp_path):
    from conftest import make_views

    views, y = make_views(n=60)
    result = evaluate(views, y, strategies=("late",), cv=2, inner_cv=2)
    page = write_report(result, tmp_path / "r.html", title="real").read_text()
    # accuracy, confusion, weights, and the reliability diagram (every row has log-loss...)
    assert len(embedded_pngs(page)) == 4
    for row in result.rows:
        assert f"<td>{row.name}</td>" in page
    assert "Calibration and prediction sets" in page and "coverage" not in page


def test_report_shows_reliability_and_coverage_against_set_size(tmp_path):
    from conftest import make_views

    from mmfuse.uncertainty.evaluation import UncertaintySpec

    views, y = make_views(n=150)
    result = evaluate(views, y, strategies=("late",), cv=2, inner_cv=2, n_jobs=1,
                      uncertainty=UncertaintySpec("temperature", (0.9,)))
    page = write_report(result, tmp_path / "r.html", title="sets").read_text()
    assert len(embedded_pngs(page)) == 5
    assert "temperature-calibrated" in page and "<th>coverage aps@0.9</th>" in page
    assert "<th>ECE</th><th>ECE debiased</th>" in page
    assert 'alt="Reliability diagram"' in page and 'alt="Coverage against set size"' in page


def test_importing_the_report_package_does_not_import_matplotlib():
    code = "import sys, mmfuse.report; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_robustness_result_objects_and_wide_tables():
    from types import SimpleNamespace

    rows = [SimpleNamespace(name="late", accuracy=[0.8, 0.7, 0.5],
                            accuracy_ci95=[[0.7, 0.9], [0.6, 0.8], [0.4, 0.6]]),
            SimpleNamespace(name="image", accuracy=[0.6, 0.6, 0.6], accuracy_ci95=[])]
    result = SimpleNamespace(missing_modality="text", levels=[0.0, 0.3, 0.5], rows=rows)
    frame, level = robustness_table(result)
    assert level == "share of samples missing text"
    assert frame.loc[frame["series"] == "late", "low"].tolist() == [0.7, 0.6, 0.4]
    page = render_report(synthetic_result(), robustness=result)
    assert len(embedded_pngs(page)) == 4 and "share of samples missing text" in page
    assert '<td class="num">0.700</td>' in page
    # the wide layout of RobustnessResult.to_frame(): one column per level
    wide = pd.DataFrame({"name": ["late", "image"], "kind": ["fused", "single"],
                         "0": [0.8, 0.6], "0.5": [0.5, 0.6]}).set_index("name")
    frame, _ = robustness_table(wide)
    assert sorted(frame["series"].unique()) == ["image", "late"]
    assert frame["level"].tolist() == [0.0, 0.5, 0.0, 0.5]
