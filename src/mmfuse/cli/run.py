"""``mmfuse run`` / ``mmfuse evaluate``: cross-validate single modalities, fusion strategies
and the seed baseline (``--missing``: robustness to a missing modality)."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ._common import (EVALUATION, INPUT, AudioOpt, BooleanOpt, CalibrationOpt,
                      CategoricalOpt, CoverageOpt, CvOpt, MondrianOpt, ScoreOpt,
                      DatasetOpt, DatesOpt, DeltaOpt, DeviceOpt, EncodersOpt, EpsilonOpt,
                      FeaturesOpt, FusionOpt, ImageOpt, JobsOpt, JsonOpt, LabelOpt, LabelsOpt,
                      ManifestOpt, NumericOpt, OnErrorOpt, PoolingOpt, QuietOpt, ReportOpt,
                      SchedulerOpt, ScrubOpt, SeedOpt, TextOpt, ViewsOpt, WeightsOpt, app,
                      console, err_console, print_results, _Progress, _cv_spec, _encoder_spec,
                      _errors, _load_input,
                      _no_privacy_on_features, _parse_encoders, _parse_strategies, _placement,
                      _print_chosen_encoders, _tabular_encoder, _write_outputs)
from ._dp import _evaluate_dp_and_print, _dp_spec
from ._outofcore import (OutOfCoreOpt, StoreOpt, evaluate_streamed_and_print, extract_for_run,
                         streamed_path)


_FUSION_DEFAULT = "early,weighted,late,stacking"


@app.command()
def run(
    manifest: ManifestOpt = None,
    image: ImageOpt = None,
    text: TextOpt = None,
    audio: AudioOpt = None,
    label: LabelOpt = None,
    group: Annotated[Optional[str], typer.Option(help="Column with groups (speaker...) for grouped CV.", rich_help_panel=INPUT)] = None,
    views: ViewsOpt = None,
    labels: LabelsOpt = None,
    dataset: DatasetOpt = None,
    features: FeaturesOpt = None,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    boolean: BooleanOpt = None,
    dates: DatesOpt = None,
    on_error: OnErrorOpt = "raise",
    encoders: EncodersOpt = None,
    pooling: PoolingOpt = "mean",
    device: DeviceOpt = "auto",
    fusion: FusionOpt = _FUSION_DEFAULT,
    weights: WeightsOpt = "cv",
    cv: CvOpt = None,
    seed: SeedOpt = 0,
    jobs: JobsOpt = -1,
    scheduler: SchedulerOpt = None,
    out_of_core: OutOfCoreOpt = None,
    store: StoreOpt = None,
    missing: Annotated[Optional[str], typer.Option(help="Robustness: fractions of a modality dropped at test time, e.g. 0,0.1,0.3,0.5.", rich_help_panel=EVALUATION)] = None,
    missing_modality: Annotated[str, typer.Option(help="Robustness: the modality to drop ('best': the strongest single one).", rich_help_panel=EVALUATION)] = "best",
    train_missing: Annotated[bool, typer.Option("--train-missing/--no-train-missing", help="Robustness: drop the same fraction in training too.", rich_help_panel=EVALUATION)] = False,
    calibration: CalibrationOpt = None,
    coverage: CoverageOpt = None,
    conformal_score: ScoreOpt = "aps",
    mondrian: MondrianOpt = False,
    scrub_pii: ScrubOpt = False,
    epsilon: EpsilonOpt = None,
    delta: DeltaOpt = 1e-5,
    json_out: JsonOpt = None,
    report: ReportOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Compare every single modality, every fusion strategy and the seed baseline
    (with --missing, also how each holds up as a modality goes missing)."""
    with _errors(), ExitStack() as stack:
        sources = [s for s in (manifest, views, dataset, features) if s]
        if len(sources) != 1:
            raise typer.BadParameter("give exactly one of --manifest, --views or --dataset (or --features)")
        enc = _parse_encoders(encoders)
        extracted = extract_for_run(manifest, {"image": image, "text": text, "audio": audio},
                                    enc, scheduler, store, bool(numeric or categorical or boolean
                                                                or dates), stack, quiet,
                                    on_error)
        if extracted is not None:  # features extracted on the cluster: evaluate from them
            features, manifest = extracted, None
        if streamed_path(features, out_of_core, **{
                "--missing": missing, "--epsilon": epsilon is not None, "--scrub-pii": scrub_pii,
                "--numeric/--categorical/--boolean/--dates": numeric or categorical or boolean
                or dates}):
            evaluate_streamed_and_print(features, label, group, enc, _parse_strategies(fusion),
                                        fusion == _FUSION_DEFAULT, weights, _cv_spec(cv, 5), seed, json_out,
                                        report, quiet, scheduler)
            return
        _placement(None, None, [], device)  # a bad or missing device fails before any work
        from ..encoders.cells import check_pooling

        check_pooling(pooling)
        tab = _tabular_encoder(numeric, categorical, boolean, dates, dataset, features)
        X, y, groups, default_cv, title = _load_input(manifest, image, text, audio, label, group,
                                                      views, labels, dataset, features, enc,
                                                      tabular=tab)
        _no_privacy_on_features(features, scrub_pii, epsilon)
        strategies = _parse_strategies(fusion)
        encoder_spec = _encoder_spec(X, None, tab) if features else _dp_spec(
            _encoder_spec(X, enc, tab), enc, epsilon, scrub_pii, saving=False)
        encoder_spec, fusion_params = _placement(X, encoder_spec, strategies, device)
        cv_spec = _cv_spec(cv, default_cv)
        from ..uncertainty.evaluation import UncertaintySpec

        spec = UncertaintySpec(calibration, () if coverage is None else (coverage,),
                               (conformal_score,), mondrian)
        if epsilon is not None and spec.fits:
            raise typer.BadParameter("--calibration and --coverage learn outside the privacy "
                                     "budget; leave them out with --epsilon")
        if epsilon is not None:
            _evaluate_dp_and_print(X, y, groups, encoder_spec, fusion, weights, cv_spec,
                                        seed, on_error, json_out, report, quiet, title,
                                        epsilon, missing, delta, pooling=pooling)
            return
        from ..distributed import fold_backend

        with fold_backend(scheduler):
            _evaluate_and_print(X, y, groups, encoder_spec, strategies, weights,
                                cv_spec, seed, on_error, json_out, report, quiet, title, jobs,
                                missing, missing_modality, train_missing, fusion_params,
                                pooling=pooling, uncertainty=spec)


def _evaluate_and_print(X, y, groups, encoder_spec, strategies, weights, cv_spec, seed, on_error,
                        json_out, report, quiet, title, jobs=-1, missing=None,
                        missing_modality="best", train_missing=False,
                        fusion_params=None, pooling="mean", uncertainty=None) -> Any:
    import warnings

    from ..evaluate import FeatureTable, evaluate
    from ..uncertainty.fit import FewCalibrationGroupsWarning, few_groups_note

    robustness = None
    with _Progress(quiet) as bar, warnings.catch_warnings():
        # said once per row below, in words, not as Python warning lines per fold
        warnings.simplefilter("ignore", FewCalibrationGroupsWarning)
        table = FeatureTable(X, encoder_spec, on_error, bar, pooling=pooling)
        result = evaluate(X, y, features=table, groups=groups, strategies=strategies,
                          weights=weights, cv=cv_spec, random_state=seed, on_error=on_error,
                          progress=bar, n_jobs=jobs, fusion_params=fusion_params,
                          uncertainty=uncertainty)
        if missing:
            from ..evaluate import evaluate_robustness

            robustness = evaluate_robustness(
                X, y, features=table, groups=groups, strategies=strategies, weights=weights,
                cv=cv_spec, random_state=seed, on_error=on_error, progress=bar,
                missing_levels=missing, missing_modality=missing_modality,
                train_missing=train_missing, fusion_params=fusion_params)
    print_results(result, title)
    for r in (r for r in result.rows if any(r.weights_fallback)):
        err_console.print(f"[yellow]warning:[/yellow] {escape(r.name)}: learned weights fell back "
                          f"to {escape(next(f for f in r.weights_fallback if f))} in "
                          f"{sum(map(bool, r.weights_fallback))} of {len(r.weights_fallback)} "
                          "folds", highlight=False)
    for r in result.rows:
        counts = ((r.uncertainty or {}).get("calibration_groups") or {}).get("folds", [])
        note = counts and few_groups_note(min(counts), (uncertainty.coverage or (None,))[0])
        if note:
            err_console.print(f"[yellow]warning:[/yellow] {escape(r.name)}: {escape(note)} "
                              f"(fewest of the outer folds)", highlight=False)
    _print_chosen_encoders(result.chosen_encoders)
    if robustness is not None:
        print_robustness(robustness)
    if table.not_cached:
        err_console.print(f"[yellow]warning:[/yellow] the feature cache could not store "
                          f"{table.not_cached} feature row(s); they will be recomputed next time")
    explanation = None
    fused = [r for r in result.rows if r.kind == "fused"]
    if report and fused and len(table.views) > 1:
        from ..explain import holdout_explanation

        best = result.best if result.best.kind == "fused" else max(fused, key=lambda r: r.accuracy)
        explanation = holdout_explanation(table, y, groups, cv_spec,
                                          best.fusion, weights=weights, random_state=seed,
                                          fusion_params=(fusion_params or {}).get(best.fusion))
    _write_outputs(result, json_out, report, title, robustness, not_cached=table.not_cached,
                   explanation=explanation)
    return result


def print_robustness(rob: Any) -> None:
    table = Table(title=f"robustness: {rob.missing_modality} missing at test time"
                        + (" (and in training)" if rob.train_missing else ""),
                  title_justify="left")
    table.add_column("name", no_wrap=True)
    for level in rob.levels:
        table.add_column(f"{level:.0%}", justify="right")
    for r in rob.rows:
        table.add_row(r.name, *[f"{a:.3f}" for a in r.accuracy])
    console.print(table)
    for note in rob.notes:
        console.print(f"note: {escape(str(note))}", highlight=False)


# `mmfuse evaluate` is `mmfuse run` under the name that reads best with --missing.
app.command("evaluate", help="Cross-validate every single modality, fusion strategy and the "
            "seed baseline; --missing adds the robustness curve.")(run)
