"""``mmfuse train``, ``predict`` and ``serve``: fit and save one model, use a saved one."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ._common import (DEVICE_CHOICE, FUSION, INPUT, MODALITY_OPTIONS, OUTPUT, PRIVACY, AudioOpt,
                      BooleanOpt, CalibrationOpt, CategoricalOpt, CoverageOpt, MondrianOpt,
                      ScoreOpt, DatasetOpt, DatesOpt, DeltaOpt, DeviceOpt,
                      EncodersOpt, EpsilonOpt, FeaturesOpt, ImageOpt, LabelOpt, LabelsOpt,
                      ManifestOpt, ModelOnErrorOpt, NumericOpt, OnErrorOpt, PoolingOpt,
                      QuietOpt, ScrubOpt, SeedOpt, TextOpt, ViewsOpt, WeightsOpt, app, console,
                      err_console, _Progress, _encoder_spec, _errors, _load_input,
                      _manifest_header, _no_privacy_on_features, _parse_encoders, _placement,
                      _print_chosen_encoders, _tabular_encoder)
from ._dp import _dp_spec
from ._outofcore import OutOfCoreOpt, streamed_path, train_streamed_and_save


@app.command()
def train(
    out: Annotated[Path, typer.Option("--out", help="Where to write the fitted model (.mmfuse).", rich_help_panel=OUTPUT)],
    manifest: ManifestOpt = None,
    image: ImageOpt = None,
    text: TextOpt = None,
    audio: AudioOpt = None,
    label: LabelOpt = None,
    group: Annotated[Optional[str], typer.Option(help="Column with groups, for grouped inner splits.", rich_help_panel=INPUT)] = None,
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
    fusion: Annotated[str, typer.Option(help="One strategy (see `mmfuse strategies`).", rich_help_panel=FUSION)] = "late",
    weights: WeightsOpt = "cv",
    seed: SeedOpt = 0,
    calibration: CalibrationOpt = None,
    coverage: CoverageOpt = None,
    conformal_score: ScoreOpt = "aps",
    mondrian: MondrianOpt = False,
    scrub_pii: ScrubOpt = False,
    epsilon: EpsilonOpt = None,
    delta: DeltaOpt = 1e-5,
    allow_training_text: Annotated[bool, typer.Option("--allow-training-text", help="Allow encoders that store training text (the tfidf vocabulary) in the saved model.", rich_help_panel=PRIVACY)] = False,
    out_of_core: OutOfCoreOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Fit one fusion model on all the data and save it (for `mmfuse predict` and `serve`).

    Text is encoded with tfidf-hashed by default (hashing under --epsilon): the saved model
    holds no vocabulary, text, path or sample id."""
    from ..encoders.cells import check_pooling
    from ..estimator import MultimodalClassifier

    with _errors():
        check_pooling(pooling)
        sources = [s for s in (manifest, views, dataset, features) if s]
        if len(sources) != 1:
            raise typer.BadParameter("give exactly one of --manifest, --views or --dataset (or --features)")
        enc = _parse_encoders(encoders)
        if streamed_path(features, out_of_core, **{
                "--epsilon": epsilon is not None, "--scrub-pii": scrub_pii,
                "--numeric/--categorical/--boolean/--dates": numeric or categorical or boolean
                or dates}):
            train_streamed_and_save(features, label, enc, fusion, weights, seed, out, quiet,
                                    group)
            return
        _placement(None, None, [], device)  # a bad or missing device fails before any work
        tab = _tabular_encoder(numeric, categorical, boolean, dates, dataset, features)
        X, y, groups, _, title = _load_input(manifest, image, text, audio, label, group, views,
                                             labels, dataset, features, enc, tabular=tab)
        _no_privacy_on_features(features, scrub_pii, epsilon)
        if epsilon is not None and weights == "cv":
            weights = "equal"  # DP: fixed weights (learning them would spend budget)
            console.print("differential privacy: fixed equal modality weights", markup=False)
        encoder_spec = _encoder_spec(X, None, tab) if features else _dp_spec(
            _encoder_spec(X, enc, tab), enc, epsilon, False, saving=True)
        if not allow_training_text:
            encoder_spec = _no_training_text_candidates(encoder_spec, X)
        encoder_spec, fusion_params = _placement(X, encoder_spec, [fusion], device)
        model = MultimodalClassifier(encoders=encoder_spec, fusion=fusion, weights=weights,
                                     random_state=seed, on_error=on_error,
                                     fusion_params=(fusion_params or {}).get(fusion),
                                     scrub_pii=scrub_pii, epsilon=epsilon, delta=delta,
                                     pooling=pooling, calibration=calibration,
                                     coverage=coverage, conformal_score=conformal_score,
                                     mondrian=mondrian)
        renamed = {m: c for m, c in (("image", image), ("text", text), ("audio", audio))
                   if c and manifest is not None and m in X.columns}
        from ..fusion.base import WeightsFallbackWarning
        from ..uncertainty.fit import FewCalibrationGroupsWarning, few_groups_note

        with _Progress(quiet) as bar, warnings.catch_warnings():
            # said once below, in words (weights_fallback_...), not as Python warning lines
            warnings.simplefilter("ignore", WeightsFallbackWarning)
            warnings.simplefilter("ignore", FewCalibrationGroupsWarning)
            model.fit(X, y, groups=groups, source_columns=renamed, progress=bar)
        if model.weights_fallback_:
            err_console.print(f"[yellow]warning:[/yellow] learned weights fell back: "
                              f"{escape(model.weights_fallback_)}", highlight=False)
        unc = model.uncertainty_
        note = unc and unc.calibration_groups and few_groups_note(unc.calibration_groups,
                                                                  coverage)
        if note:
            err_console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False)
        if features:
            from ..features import attach_encoders

            attach_encoders(model, features)  # the saved model predicts from raw files
        model.save(out, allow_training_text=allow_training_text)
        if epsilon is not None:
            console.print(f"differential privacy: spent epsilon={model.epsilon_spent_:g}, "
                          f"delta={model.delta_spent_:g} (budget {epsilon:g}, {delta:g})",
                          markup=False, highlight=False)
        if getattr(model, "encoder_selection_", None):
            _print_chosen_encoders({c: model.encoders_chosen_[c]
                                    for c in model.encoder_selection_})
        weights_text = ", ".join(f"{m}={w:.2f}" for m, w in (model.modality_weights_ or {}).items())
        chosen = getattr(model.fusion_, "chosen_name_", None)  # fusion="auto"
        console.print(f"trained {fusion}" + (f" (chose {chosen})" if chosen else "")
                      + f" on {len(y)} samples of {title}"
                      + (f" (weights: {weights_text})" if weights_text else ""),
                      markup=False, highlight=False)
        unc = model.uncertainty_
        if unc is not None:  # learned on grouped inner folds of the training rows
            console.print(("" if unc.calibration is None else f"calibration: {unc.calibration}")
                          + ("" if unc.conformal is None else
                             ("; " if unc.calibration else "") + f"prediction sets: coverage "
                             f"{unc.conformal.coverage:g} ({unc.conformal.score}"
                             + (", per class" if unc.conformal.mondrian else "") + ")"),
                          markup=False, highlight=False)
        for e in model.errors_[:20]:
            err_console.print(f"  skipped {escape(str(e))}", highlight=False)
        console.print(f"wrote {out}")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A model file written by `mmfuse train`.")],
    manifest: Annotated[Path, typer.Option(help="CSV, JSONL or Parquet, one row per sample.")],
    out: Annotated[Optional[Path], typer.Option(help="Write predictions (.csv, .tsv or .jsonl), at full precision.")] = None,
    image: Annotated[Optional[str], typer.Option(help="Manifest column for the model's image column (default: the column it was trained on).")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column for the model's text column (default: the column it was trained on).")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column for the model's audio column (default: the column it was trained on).")] = None,
    keep: Annotated[Optional[str], typer.Option(help="Manifest columns to copy into the output, e.g. id,label.")] = None,
    on_error: ModelOnErrorOpt = None,
    device: Annotated[DEVICE_CHOICE, typer.Option("--device", help="Where the pretrained encoders and learned heads run (auto: CUDA when present).")] = "auto",
    explain: Annotated[bool, typer.Option("--explain", help="Add share_<modality> columns: how much each modality moved each prediction.")] = False,
    sets: Annotated[bool, typer.Option("--sets", help="Add a set column: the conformal prediction set, labels joined by | (a model trained with --coverage).")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Predict labels and per-class probabilities for every row of a manifest (by default
    from the columns the model was trained on)."""
    from ..predict import display_table, predict_manifest, write_predictions

    with _errors():
        from ..devices import resolve_device
        from ..persist import load

        _placement(None, None, [], device)  # a bad or missing device fails before loading
        fitted = load(model).to(resolve_device(device))
        columns = {m: c for m, c in (("image", image), ("text", text), ("audio", audio)) if c}
        _check_model_columns(fitted, manifest, columns)
        with _Progress(quiet) as bar:
            table = predict_manifest(fitted, manifest, columns=columns,
                                     keep=[k.strip() for k in (keep or "").split(",")
                                           if k.strip()],
                                     on_error=on_error, explain=explain, progress=bar,
                                     sets=sets)
        if out:
            write_predictions(table, out)
            console.print(f"wrote {len(table)} predictions to {out}")
        else:
            shown_table = display_table(table)
            view = Table(title=f"predictions ({len(table)} rows)", title_justify="left")
            shown = [c for c in table.columns if not c.startswith("proba_")]
            for col in shown:
                view.add_column(col)
            for _, row in shown_table.head(50).iterrows():
                view.add_row(*[escape(str(row[c])) for c in shown])
            console.print(view)
            if len(table) > 50:
                console.print(f"... {len(table) - 50} more rows (use --out)")


def _check_model_columns(model: Any, manifest: Path, flags: dict[str, str]) -> None:
    """Before any encoding: every column the model reads is in the manifest, under the
    name given by a flag, else the one it was trained on, else its own; a missing one is an
    error that says which flag names it."""
    from .._errors import InputError
    from ..predict import model_columns, source_columns

    have = _manifest_header(manifest)
    if have is None:
        return  # predict_manifest reports an unreadable manifest
    remembered = source_columns(model)
    for col in model_columns(model):
        if col not in model.featurizer().views or getattr(model.encoders_.get(col),
                                                          "multi_column", False):
            continue  # a tabular view's columns keep their names
        wanted = flags.get(col) or remembered.get(col, col)
        if wanted in have:
            continue
        hint = (f"; name it with --{col} COLUMN" if col in MODALITY_OPTIONS else "")
        origin = ("" if col in flags else " (the column it was trained on)"
                  if col in remembered else "")
        raise InputError(f"manifest {str(manifest)!r} lacks column {wanted!r}{origin} for "
                         f"the model's {col} column; it has {have}{hint}")


@app.command()
def serve(
    model: Annotated[Path, typer.Argument(help="A model file written by `mmfuse train`.")],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload per file, MiB.")] = 10.0,
    max_text_chars: Annotated[int, typer.Option(help="Longest accepted text field.")] = 10_000,
    batch_max: Annotated[int, typer.Option(help="Most requests fused into one model batch.")] = 16,
    batch_wait_ms: Annotated[float, typer.Option(help="How long a request waits for others to batch with.")] = 5.0,
    api_key_file: Annotated[Optional[Path], typer.Option(help="Require an API key (Bearer or X-API-Key) on every path but /health; one key a line. $MMFUSE_API_KEYS adds keys.")] = None,
    ssl_certfile: Annotated[Optional[Path], typer.Option(help="PEM certificate: serve HTTPS.")] = None,
    ssl_keyfile: Annotated[Optional[Path], typer.Option(help="PEM private key of --ssl-certfile.")] = None,
    max_queue: Annotated[int, typer.Option(min=0, help="Most /predict requests held at once; above it 503 + Retry-After at once (0: no bound).")] = 64,
    request_timeout: Annotated[float, typer.Option(min=0, help="Seconds a /predict request may take before a 503 (0: no limit).")] = 30.0,
    drain_timeout: Annotated[float, typer.Option(min=0, help="On SIGTERM/Ctrl-C: seconds in-flight requests get to finish.")] = 30.0,
    access_log: Annotated[bool, typer.Option(help="Log method, path, status, latency and size of each request.")] = True,
    device: Annotated[DEVICE_CHOICE, typer.Option("--device", help="Where the pretrained encoders and learned heads run (auto: CUDA when present).")] = "auto",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, /model, /metrics, /docs."""
    from ..serving import run_server

    with _errors():
        _placement(None, None, [], device)  # a bad or missing device fails before loading
        run_server(model, host, port, max_upload_bytes=int(max_upload_mb * 2**20),
                   max_text_chars=max_text_chars, batch_max=batch_max,
                   batch_wait_ms=batch_wait_ms, api_key_file=api_key_file,
                   ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
                   max_queue=max_queue or None, request_timeout=request_timeout or None,
                   drain_timeout=drain_timeout, access_log=access_log,
                   device=device)


def _no_training_text_candidates(spec: Any, X: Any) -> Any:
    """For a saved model: candidate encoders that would store training text (the tfidf
    vocabulary) are left out of ``auto`` and candidate lists (``tfidf-hashed`` stays)."""
    from ..encoders.registry import create_encoder
    from ..encoders.candidates import is_choice

    if spec is None or not (spec == "auto" or (isinstance(spec, dict) and any(
            is_choice(v) for v in spec.values()))):
        return spec
    from ..estimator import resolve_encoders

    out = {}
    for col, value in resolve_encoders(spec, X).items():
        if not hasattr(value, "names"):
            out[col] = value
            continue
        keep = [n for n in value.names if not create_encoder(n).stores_training_text]
        if "tfidf" in value.names and "tfidf-hashed" not in keep:
            keep.append("tfidf-hashed")  # tfidf's variant without a vocabulary
        out[col] = keep if len(keep) > 1 else (keep[0] if keep else list(value.names))
    return out
