"""The report's modality-contributions section: averages per predicted class and three
example rows (the most confident, the median and the least confident prediction)."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mmfuse.explain import LOG_SHARE, Explanation  # noqa: E402
from mmfuse.report import render_report  # noqa: E402
from test_report import synthetic_result  # noqa: E402


def section(page: str) -> str:
    start = page.index("<h2>Modality contributions per prediction</h2>")
    end = page.find("<h2>", start + 5)
    return page[start:end if end > 0 else len(page)]


def cells(table_row: str) -> list[str]:
    return re.findall(r"<td[^>]*>(.*?)</td>", table_row)


def test_class_means_and_three_example_rows_are_the_explanations_numbers():
    shares = np.array([[0.9, 0.1], [0.7, -0.3], [0.2, 0.8], [-0.4, 0.6], [0.5, 0.5]])
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.8, 0.2]])
    labels = np.array(["cat", "cat", "dog", "dog", "cat"])
    exp = Explanation(labels=labels, proba=proba, modalities=["image", "text"],
                      contributions=shares * 2.0, shares=shares, method=LOG_SHARE,
                      true_labels=np.array(["cat", "dog", "dog", "cat", "cat"]),
                      strategy="late")
    html = section(render_report(synthetic_result(), explanation=exp))
    tables = re.findall(r"<table>(.*?)</table>", html, flags=re.S)
    assert len(tables) == 2
    means = {cells(r)[0]: cells(r)[1:] for r in re.findall(r"<tr>(.*?)</tr>", tables[0])
             if cells(r)}
    # rows predicted "cat": 0, 1, 4 -> image (0.9+0.7+0.5)/3, text (0.1-0.3+0.5)/3
    assert means["cat"] == ["3", "+0.70", "+0.10"]
    assert means["dog"] == ["2", "-0.10", "+0.70"]
    examples = [cells(r) for r in re.findall(r"<tr>(.*?)</tr>", tables[1]) if cells(r)]
    # most confident: row 0 (0.9); median of the confidence order: row 4 (0.8, 0.7, 0.6,
    # 0.55 -> index 2 of [0, 4, 2, 1, 3] is row 2, 0.7); least confident: row 3 (0.55)
    assert examples[0] == ["most confident", "cat", "cat", "0.90", "+0.90", "+0.10"]
    assert examples[1] == ["median confidence", "dog", "dog", "0.70", "+0.20", "+0.80"]
    assert examples[2] == ["least confident", "dog", "cat", "0.55", "-0.40", "+0.60"]
    assert "weighted log-probability share" in html


def test_no_explanation_no_section():
    assert "Modality contributions" not in render_report(synthetic_result())
