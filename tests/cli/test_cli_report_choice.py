"""`mmfuse run --encoders <candidates> --report`: the report's held-out explanation reads the
chosen encoders' views (it used to fail after the whole run on the placeholder columns)."""

import numpy as np
from typer.testing import CliRunner

from conftest import number_frame
from mmfuse.cli import app

runner = CliRunner()


def test_run_with_encoder_candidates_writes_the_report(tmp_path):
    df, y = number_frame(n=96)
    df["label"] = y
    df["speaker"] = np.arange(len(df)) // 8
    df.to_csv(tmp_path / "m.csv", index=False)
    report = tmp_path / "r.html"
    result = runner.invoke(app, ["run", "--manifest", str(tmp_path / "m.csv"), "--text", "left",
                                 "--numeric", "right", "--label", "label", "--group", "speaker",
                                 "--cv", "3", "--encoders", "text=test-number/test-vocab",
                                 "--fusion", "late", "--report", str(report), "--quiet",
                                 "--jobs", "1"])
    assert result.exit_code == 0, result.output
    html = report.read_text()
    assert "<html" in html.lower() and "text" in html and "tabular" in html
