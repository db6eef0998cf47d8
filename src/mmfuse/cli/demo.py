"""``mmfuse demo``: the main job on a bundled dataset."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from ._common import (FusionOpt, JobsOpt, JsonOpt, QuietOpt, ReportOpt, app, _encoder_spec,
                      _errors, _load_input, _parse_encoders, _parse_strategies)
from .run import _evaluate_and_print


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="Bundled dataset to run on.")] = "av-digits",
    json_out: JsonOpt = None,
    report: ReportOpt = None,
    fusion: FusionOpt = "early,weighted,late,stacking",
    quiet: QuietOpt = False,
    jobs: JobsOpt = -1,
    encoders: Annotated[Optional[str], typer.Option(help="As in `mmfuse run`, e.g. 'auto' (default: hog, tfidf, mfcc).")] = None,
) -> None:
    """The main job: single modalities vs every fusion strategy vs the seed baseline, on real data."""
    with _errors():
        enc = _parse_encoders(encoders)
        X, y, groups, default_cv, title = _load_input(None, None, None, None, None, None, None,
                                                      None, dataset)
        _evaluate_and_print(X, y, groups, _encoder_spec(X, enc), _parse_strategies(fusion), "cv",
                            default_cv, 0, "raise", json_out, report, quiet,
                            f"mmfuse demo: {title}", jobs)
