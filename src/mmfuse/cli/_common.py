"""The mmfuse command line (typer). The only module that prints or exits."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ._errors import MissingDependencyError, MmfuseError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multimodal fusion for image recognition: image, text and audio, "
                       "fused honestly.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable

MODALITY_OPTIONS = ("image", "text", "audio")


#: ``mmfuse --debug ...``: show Python tracebacks instead of one-line messages.
_DEBUG = False


@contextmanager
def _errors() -> Iterator[None]:
    """Library exceptions become a message and an exit code, never a traceback (unless
    ``--debug``). An unexpected exception is also one line (exit 2) that says how to get
    the traceback."""
    import click

    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
            typer.Exit, typer.Abort):  # typer's own classes are not click's in every version
        raise
    except MissingDependencyError as exc:
        if _DEBUG:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(3) from None
    except MmfuseError as exc:
        if _DEBUG:
            raise
        err_console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:  # noqa: BLE001 - no user sees a traceback by default
        if _DEBUG:
            raise
        err_console.print(f"[red]error:[/red] {escape(type(exc).__name__)}: "
                          f"{escape(str(exc) or '(no message)')} (run `mmfuse --debug ...` "
                          "for the traceback)", highlight=False)
        raise typer.Exit(2) from None


def _parse_encoders(text: Optional[str]) -> Any:
    """``--encoders``: ``auto``, or ``image=hog,text=tfidf/minilm/tfidf+minilm`` (a ``/``
    list, or ``auto``, makes the column choose its encoder by inner CV)."""
    if not text or text == "auto":
        return text
    pairs = _parse_pairs(text, "--encoders")
    return {k: [n.strip() for n in v.split("/") if n.strip()] if "/" in v else v
            for k, v in pairs.items()}


def _print_chosen_encoders(chosen: Any) -> None:
    """What ``--encoders auto`` (or a candidate list) chose: per column, per outer fold."""
    from collections import Counter

    folds = [chosen] if isinstance(chosen, dict) else list(chosen or [])
    if not folds:
        return
    parts = []
    for col in sorted(folds[0]):
        counts = Counter(f.get(col) for f in folds)
        if len(folds) == 1:
            parts.append(f"{col}={folds[0][col]}")
        else:
            parts.append(f"{col}=" + ", ".join(f"{n} ({k}/{len(folds)} folds)"
                                              for n, k in counts.most_common()))
    console.print("encoders chosen: " + "; ".join(parts), markup=False, highlight=False)


def _parse_pairs(text: Optional[str], what: str) -> dict[str, str]:
    """``"image=hog,text=tfidf"`` -> dict; a clear error for anything else."""
    if not text:
        return {}
    out = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise typer.BadParameter(f"expected NAME=VALUE pairs separated by commas; got {part!r}",
                                     param_hint=what)
        out[key.strip()] = value.strip()
    return out


def _parse_strategies(text: str) -> list[str]:
    from .evaluate import BASELINE, DEFAULT_STRATEGIES
    from .fusion import list_fusions

    if text == "all":
        extra = [f["name"] for f in list_fusions()
                 if f["name"] not in DEFAULT_STRATEGIES and f["name"] != BASELINE]
        return list(DEFAULT_STRATEGIES) + extra
    return [s.strip() for s in text.split(",") if s.strip()]


class _Progress:
    """A rich progress bar fed by the library's ``progress(stage, done, total)`` callback."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stderr.isatty()
        self._bar = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Callable[[str, int, int], None] | None:
        if not self.enabled:
            return None
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=err_console, transient=True)
        self._bar.__enter__()
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        if stage not in self._tasks:
            self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(self._tasks[stage], completed=done, total=total)

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def print_results(result: Any, title: str) -> None:
    mods = sorted({m for r in result.rows for m in r.modalities})
    table = Table(title=title, title_justify="left", caption_justify="left",
                  caption=f"acc: accuracy (mean over folds), F1: macro-F1, weights: {'/'.join(mods)}")
    right = {"justify": "right", "no_wrap": True}
    for col, kw in [("name", {"no_wrap": True}), ("kind", {"no_wrap": True}),
                    ("acc", right), ("95% CI", {"no_wrap": True}), ("F1", right),
                    ("weights", {"no_wrap": True}), ("secs", right)]:
        table.add_column(col, **kw)
    best = result.best.name
    for r in result.rows:
        weights = ""
        if r.modality_weights:
            weights = "/".join(f"{r.modality_weights.get(m, 0.0):.2f}" for m in mods)
        style = "bold green" if r.name == best else None
        table.add_row(r.name, r.kind, f"{r.accuracy:.3f}",
                      f"{r.accuracy_ci95[0]:.2f}-{r.accuracy_ci95[1]:.2f}", f"{r.macro_f1:.3f}",
                      weights, f"{r.seconds:.1f}", style=style)
    console.print(table)
    cv = result.cv
    console.print(f"{result.n_samples} samples, {result.n_classes} classes, "
                  f"cv: {cv['kind']} ({cv['n_splits']} folds"
                  + (f" x {cv['n_repeats']}" if "n_repeats" in cv else "") + f"); best: {best}")
    for r in result.rows:
        if r.chosen:  # fusion="auto": what it picked in each outer fold
            picks = {c: r.chosen.count(c) for c in dict.fromkeys(r.chosen)}
            console.print(f"{r.name} chose: " + ", ".join(
                f"{c}" + (f" x{n}" if n > 1 else "") for c, n in picks.items()),
                markup=False, highlight=False)
    if result.errors:
        err_console.print(f"[yellow]{len(result.errors)} item(s) skipped:[/yellow]")
        for e in result.errors[:20]:
            err_console.print(f"  {escape(str(e))}", highlight=False)
        if len(result.errors) > 20:
            err_console.print(f"  ... and {len(result.errors) - 20} more (see --json)")


def _write_outputs(result: Any, json_out: Optional[Path], report: Optional[Path],
                   title: str, robustness: Any = None, not_cached: int | None = None,
                   explanation: Any = None) -> None:
    from ._io import atomic_write_json

    if json_out:
        doc = result.to_dict()
        if not_cached is not None:
            doc["cache"] = {"features_not_cached": int(not_cached)}
        if robustness is not None:
            doc["robustness"] = robustness.to_dict()
        if result.errors:
            doc["skipped"] = [str(e) for e in result.errors]
        atomic_write_json(json_out, doc)
        console.print(f"wrote {json_out}")
    if report:
        from .report import write_report

        write_report(result, report, title=title, robustness=robustness,
                     explanation=explanation)
        console.print(f"wrote {report}")


JsonOpt = Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report.")]
FusionOpt = Annotated[str, typer.Option(help="Strategies, comma-separated, or 'all'.")]
WeightsOpt = Annotated[str, typer.Option(help="Modality weights: cv, relative or equal.")]
OnErrorOpt = Annotated[str, typer.Option("--on-error", help="raise or skip unreadable items.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bar.")]
JobsOpt = Annotated[int, typer.Option("--jobs", help="Worker processes for the folds (-1: one per core).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="Where the pretrained image/audio encoders and learned heads run: cpu, cuda, or auto (CUDA when present).")]


def _placement(X: Any, encoder_spec: Any, strategies: list[str], device: str) -> tuple[Any, Any]:
    """(encoder spec, per-strategy params) with the models on ``device`` (cpu/cuda/auto).
    CUDA asked for on a machine without it is a DeviceError (exit 2)."""
    from .devices import head_params, place_encoders, resolve_device

    if device not in ("cpu", "cuda", "auto"):
        raise typer.BadParameter(f"expected cpu, cuda or auto; got {device!r}",
                                 param_hint="--device")
    resolved = resolve_device(device)
    if resolved != "cpu":  # encoder names already mean the CPU
        encoder_spec = place_encoders(encoder_spec, X, resolved)
    params = head_params(strategies, resolved) if device != "auto" or resolved != "cpu" else None
    return encoder_spec, params


ScrubOpt = Annotated[bool, typer.Option("--scrub-pii/--no-scrub-pii", help="Replace e-mails, URLs, phone/card/IBAN numbers... in text by placeholders before encoding.")]
EpsilonOpt = Annotated[Optional[float], typer.Option("--epsilon", help="Differential privacy budget (needs mmfuse[privacy]): early/late fusion with fixed weights, data-independent encoders.")]
DeltaOpt = Annotated[float, typer.Option("--delta", help="The delta of the DP budget (0: pure epsilon-DP).")]
FeaturesOpt = Annotated[Optional[Path], typer.Option("--features", help="A feature store written by `mmfuse extract` (no encoder runs).")]
NumericOpt = Annotated[Optional[str], typer.Option("--numeric", help="Tabular modality: numeric manifest columns, a,b,c (median-imputed, missing flags, robust scaling).")]
CategoricalOpt = Annotated[Optional[str], typer.Option("--categorical", help="Tabular modality: categorical columns, d,e (one-hot of frequent levels + other/unseen).")]
BooleanOpt = Annotated[Optional[str], typer.Option("--boolean", help="Tabular modality: boolean columns (true/false, yes/no, 1/0).")]
DatesOpt = Annotated[Optional[str], typer.Option("--dates", help="Tabular modality: date columns (ISO 8601).")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Run on Dask: 'local' or a scheduler address tcp://host:8786 (default: $MMFUSE_SCHEDULER, else this process).")]


@app.command()
def run(
    manifest: Annotated[Optional[Path], typer.Option(help="CSV, JSONL or Parquet, one row per sample.")] = None,
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[Optional[str], typer.Option(help="Manifest column with the label.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Column with groups (speaker...) for grouped CV.")] = None,
    views: Annotated[Optional[str], typer.Option(help="Pre-extracted arrays: image=images.npy,text=texts.npy")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="labels.npy for --views.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="A bundled dataset (see `mmfuse datasets`).")] = None,
    encoders: Annotated[Optional[str], typer.Option(help="Per modality: image=hog,text=tfidf,audio=mfcc; 'auto' (or text=auto, or text=tfidf/minilm/tfidf+minilm) chooses by inner CV.")] = None,
    fusion: FusionOpt = "early,weighted,late,stacking",
    weights: WeightsOpt = "cv",
    cv: Annotated[Optional[str], typer.Option(help="Folds (int) or 'loso'. Default: the dataset's, else 5.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    on_error: OnErrorOpt = "raise",
    json_out: JsonOpt = None,
    report: ReportOpt = None,
    progress: ProgressOpt = True,
    jobs: JobsOpt = -1,
    missing: Annotated[Optional[str], typer.Option(help="Robustness: fractions of a modality dropped at test time, e.g. 0,0.1,0.3,0.5.")] = None,
    missing_modality: Annotated[str, typer.Option(help="Robustness: the modality to drop ('best': the strongest single one).")] = "best",
    train_missing: Annotated[bool, typer.Option("--train-missing/--no-train-missing", help="Robustness: drop the same fraction in training too.")] = False,
    device: DeviceOpt = "auto",
    scrub_pii: ScrubOpt = False,
    epsilon: EpsilonOpt = None,
    delta: DeltaOpt = 1e-5,
    features: FeaturesOpt = None,
    scheduler: SchedulerOpt = None,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    boolean: BooleanOpt = None,
    dates: DatesOpt = None,
) -> None:
    """Compare every single modality, every fusion strategy and the seed baseline
    (with --missing, also how each holds up as a modality goes missing)."""
    with _errors():
        sources = [s for s in (manifest, views, dataset, features) if s]
        if len(sources) != 1:
            raise typer.BadParameter("give exactly one of --manifest, --views or --dataset (or --features)")
        enc = _parse_encoders(encoders)
        _placement(None, None, [], device)  # a bad or missing device fails before any work
        tab = _tabular_encoder(numeric, categorical, boolean, dates, dataset, features)
        X, y, groups, default_cv, title = _load_input(manifest, image, text, audio, label, group,
                                                      views, labels, dataset, features, enc,
                                                      tabular=tab)
        _no_privacy_on_features(features, scrub_pii, epsilon)
        strategies = _parse_strategies(fusion)
        encoder_spec = _encoder_spec(X, None, tab) if features else _private_spec(
            _encoder_spec(X, enc, tab), enc, epsilon, scrub_pii, saving=False)
        encoder_spec, fusion_params = _placement(X, encoder_spec, strategies, device)
        cv_spec: Any = default_cv if cv is None else (cv if cv == "loso" else int(cv))
        if epsilon is not None:
            _evaluate_private_and_print(X, y, groups, encoder_spec, fusion, weights, cv_spec,
                                        seed, on_error, json_out, report, progress, title,
                                        epsilon, missing, delta)
            return
        from .distributed import fold_backend

        with fold_backend(scheduler):
            _evaluate_and_print(X, y, groups, encoder_spec, strategies, weights,
                                cv_spec, seed, on_error, json_out, report, progress, title, jobs,
                                missing, missing_modality, train_missing, fusion_params)


def _evaluate_and_print(X, y, groups, encoder_spec, strategies, weights, cv_spec, seed, on_error,
                        json_out, report, progress, title, jobs=-1, missing=None,
                        missing_modality="best", train_missing=False,
                        fusion_params=None) -> Any:
    from .evaluate import FeatureTable, evaluate

    robustness = None
    with _Progress(progress) as bar:
        table = FeatureTable(X, encoder_spec, on_error, bar)
        result = evaluate(X, y, features=table, groups=groups, strategies=strategies,
                          weights=weights, cv=cv_spec, random_state=seed, on_error=on_error,
                          progress=bar, n_jobs=jobs, fusion_params=fusion_params)
        if missing:
            from .evaluate import evaluate_robustness

            robustness = evaluate_robustness(
                X, y, features=table, groups=groups, strategies=strategies, weights=weights,
                cv=cv_spec, random_state=seed, on_error=on_error, progress=bar,
                missing_levels=missing, missing_modality=missing_modality,
                train_missing=train_missing, fusion_params=fusion_params)
    print_results(result, title)
    _print_chosen_encoders(result.chosen_encoders)
    if robustness is not None:
        print_robustness(robustness)
    if table.not_cached:
        err_console.print(f"[yellow]warning:[/yellow] the feature cache could not store "
                          f"{table.not_cached} feature row(s); they will be recomputed next time")
    explanation = None
    fused = [r for r in result.rows if r.kind == "fused"]
    if report and fused and len(table.views) > 1:
        from .explain import holdout_explanation

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


def _encoder_spec(X: Any, enc: Any, tabular: Any = None) -> Any:
    import pandas as pd

    if not isinstance(X, pd.DataFrame):
        if tabular is None:
            return None  # pre-extracted arrays: passthrough
        # a feature store's views, and its raw tabular columns learned per fold
        return {**{k: "passthrough" for k in X if k not in tabular.columns},
                "tabular": tabular}
    if enc == "auto":
        if tabular is None:
            return "auto"
        from .encoders.featurizer import resolve_encoders

        spec = resolve_encoders("auto", X) if any(m in X.columns for m in MODALITY_OPTIONS) else {}
    else:
        from .encoders.registry import default_encoder

        spec = {m: default_encoder(m) for m in MODALITY_OPTIONS if m in X.columns}
        spec.update(enc or {})
    if tabular is not None:
        spec["tabular"] = tabular
    return spec


def _tabular_encoder(numeric, categorical, boolean, dates, dataset=None, features=None) -> Any:
    """The ``tabular`` encoder of --numeric/--categorical/--boolean/--dates (None without
    them); a dataset with table columns (``tuxpaint-tabular``) uses its own by default."""
    from .encoders.tabular import TabularEncoder

    given = {k: [c.strip() for c in v.split(",") if c.strip()]
             for k, v in (("numeric", numeric), ("categorical", categorical),
                          ("boolean", boolean), ("dates", dates)) if v}
    if not given and dataset:
        from .data.datasets import dataset_info

        given = dataset_info(dataset).get("tabular") or {}
    return TabularEncoder(**given) if given else None


def _load_input(manifest, image, text, audio, label, group, views, labels, dataset,
                features=None, encoders=None, tabular=None):
    from .data.inputs import load_input

    return load_input(manifest=manifest, columns={"image": image, "text": text, "audio": audio},
                      label=label, group=group,
                      views=_parse_pairs(views, "--views") if views else None, labels=labels,
                      dataset=dataset, features=features, encoders=encoders, tabular=tabular)


def _no_privacy_on_features(features, scrub_pii, epsilon) -> None:
    """--scrub-pii and --epsilon act on raw input and its encoders, not on a store."""
    if features and (scrub_pii or epsilon is not None):
        from ._errors import InputError

        raise InputError("--scrub-pii and --epsilon need raw input (--manifest or --dataset): "
                         "a feature store's text is already encoded")


# `mmfuse evaluate` is `mmfuse run` under the name that reads best with --missing.
app.command("evaluate", help="Cross-validate every single modality, fusion strategy and the "
            "seed baseline; --missing adds the robustness curve.")(run)


@app.command()
def train(
    save_model: Annotated[Path, typer.Option("--save-model", help="Where to write the fitted model (.mmfuse).")],
    manifest: Annotated[Optional[Path], typer.Option(help="CSV, JSONL or Parquet, one row per sample.")] = None,
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[Optional[str], typer.Option(help="Manifest column with the label.")] = None,
    group: Annotated[Optional[str], typer.Option(help="Column with groups, for grouped inner splits.")] = None,
    views: Annotated[Optional[str], typer.Option(help="Pre-extracted arrays: image=images.npy,text=texts.npy")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="labels.npy for --views.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="A bundled dataset (see `mmfuse datasets`).")] = None,
    encoders: Annotated[Optional[str], typer.Option(help="Per modality: image=hog,text=tfidf,audio=mfcc; 'auto' (or text=auto, or text=tfidf/minilm/tfidf+minilm) chooses by inner CV.")] = None,
    fusion: Annotated[str, typer.Option(help="One strategy (see `mmfuse strategies`).")] = "late",
    weights: WeightsOpt = "cv",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    on_error: OnErrorOpt = "raise",
    device: DeviceOpt = "auto",
    scrub_pii: ScrubOpt = False,
    epsilon: EpsilonOpt = None,
    delta: DeltaOpt = 1e-5,
    allow_training_text: Annotated[bool, typer.Option("--allow-training-text", help="Allow encoders that store training text (the tfidf vocabulary) in the saved model.")] = False,
    features: FeaturesOpt = None,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    boolean: BooleanOpt = None,
    dates: DatesOpt = None,
) -> None:
    """Fit one fusion model on all the data and save it (for `mmfuse predict` and `serve`).

    Text is encoded with tfidf-hashed by default (hashing under --epsilon): the saved model
    holds no vocabulary, text, path or sample id."""
    from .estimator import MultimodalClassifier

    with _errors():
        sources = [s for s in (manifest, views, dataset, features) if s]
        if len(sources) != 1:
            raise typer.BadParameter("give exactly one of --manifest, --views or --dataset (or --features)")
        enc = _parse_encoders(encoders)
        _placement(None, None, [], device)  # a bad or missing device fails before any work
        tab = _tabular_encoder(numeric, categorical, boolean, dates, dataset, features)
        X, y, groups, _, title = _load_input(manifest, image, text, audio, label, group, views,
                                             labels, dataset, features, enc, tabular=tab)
        _no_privacy_on_features(features, scrub_pii, epsilon)
        if epsilon is not None and weights == "cv":
            weights = "equal"  # DP: fixed weights (learning them would spend budget)
            console.print("differential privacy: fixed equal modality weights", markup=False)
        encoder_spec = _encoder_spec(X, None, tab) if features else _private_spec(
            _encoder_spec(X, enc, tab), enc, epsilon, False, saving=True)
        if not allow_training_text:
            encoder_spec = _no_training_text_candidates(encoder_spec, X)
        encoder_spec, fusion_params = _placement(X, encoder_spec, [fusion], device)
        model = MultimodalClassifier(encoders=encoder_spec, fusion=fusion, weights=weights,
                                     random_state=seed, on_error=on_error,
                                     fusion_params=(fusion_params or {}).get(fusion),
                                     scrub_pii=scrub_pii, epsilon=epsilon, delta=delta)
        model.fit(X, y, groups=groups)
        if features:
            from .features import attach_encoders

            attach_encoders(model, features)  # the saved model predicts from raw files
        model.save(save_model, allow_training_text=allow_training_text)
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
        for e in model.errors_[:20]:
            err_console.print(f"  skipped {escape(str(e))}", highlight=False)
        console.print(f"wrote {save_model}")


@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="A model file written by `mmfuse train`.")],
    manifest: Annotated[Path, typer.Option(help="CSV, JSONL or Parquet, one row per sample.")],
    out: Annotated[Optional[Path], typer.Option(help="Write predictions (.csv, .tsv or .jsonl).")] = None,
    image: Annotated[Optional[str], typer.Option(help="Manifest column for the model's image column, if named otherwise.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column for the model's text column, if named otherwise.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column for the model's audio column, if named otherwise.")] = None,
    keep: Annotated[Optional[str], typer.Option(help="Manifest columns to copy into the output, e.g. id,label.")] = None,
    on_error: Annotated[Optional[str], typer.Option("--on-error", help="raise or skip unreadable items (default: the model's).")] = None,
    device: DeviceOpt = "auto",
    explain: Annotated[bool, typer.Option("--explain", help="Add share_<modality> columns: how much each modality moved each prediction.")] = False,
) -> None:
    """Predict labels and per-class probabilities for every row of a manifest."""
    from .predict import predict_manifest, write_predictions

    with _errors():
        from .devices import resolve_device, to_device
        from .persist import load

        _placement(None, None, [], device)  # a bad or missing device fails before loading
        fitted = to_device(load(model), resolve_device(device))
        columns = {m: c for m, c in (("image", image), ("text", text), ("audio", audio)) if c}
        table = predict_manifest(fitted, manifest, columns=columns,
                                 keep=[k.strip() for k in (keep or "").split(",") if k.strip()],
                                 on_error=on_error, explain=explain)
        if out:
            write_predictions(table, out)
            console.print(f"wrote {len(table)} predictions to {out}")
        else:
            view = Table(title=f"predictions ({len(table)} rows)", title_justify="left")
            shown = [c for c in table.columns if not c.startswith("proba_")]
            for col in shown:
                view.add_column(col)
            for _, row in table.head(50).iterrows():
                view.add_row(*[str(row[c]) for c in shown])
            console.print(view)
            if len(table) > 50:
                console.print(f"... {len(table) - 50} more rows (use --out)")


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
    device: DeviceOpt = "auto",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, /model, /metrics, /docs."""
    from .serving import run_server

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
    from .encoders.registry import create_encoder
    from .encoders.selection import is_choice

    if spec is None or not (spec == "auto" or (isinstance(spec, dict) and any(
            is_choice(v) for v in spec.values()))):
        return spec
    from .estimator import resolve_encoders

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


def _private_spec(spec: Any, explicit: Any, epsilon: Optional[float], scrub_pii: bool,
                  saving: bool) -> Any:
    """The encoder spec with the privacy defaults: text is encoded with ``hashing`` under
    --epsilon and with ``tfidf-hashed`` when a model is saved (unless --encoders names one);
    with ``scrub_pii`` the text encoders become instances that scrub PII."""
    if not isinstance(spec, dict):
        if scrub_pii and not saving:
            from ._errors import InputError

            raise InputError("--scrub-pii needs raw text and named encoders: not with --views "
                             "or --encoders auto (name them, e.g. --encoders text=minilm)")
        return spec
    spec = dict(spec)
    if "text" in spec and not (isinstance(explicit, dict) and "text" in explicit):
        if epsilon is not None:
            spec["text"] = "hashing"
        elif saving:
            spec["text"] = "tfidf-hashed"
    if scrub_pii:
        from ._errors import InputError
        from .encoders import create_encoder

        for col, name in spec.items():
            if name == "passthrough":
                continue
            if not isinstance(name, str) or "/" in name or name == "auto" or isinstance(
                    name, list):
                raise InputError("--scrub-pii with `mmfuse run` needs one named encoder per "
                                 "column (not a candidate list or auto)")
            enc = create_encoder(name)
            if enc.modality == "text":
                if not enc.scrubs_pii:
                    raise InputError(f"--scrub-pii: encoder {enc.name!r} of column {col!r} "
                                     f"does not support scrubbing")
                enc.scrub_pii = True
                spec[col] = enc
    return spec


def _evaluate_private_and_print(X, y, groups, encoder_spec, fusion, weights, cv_spec, seed,
                                on_error, json_out, report, progress, title, epsilon,
                                missing, delta=1e-5) -> Any:
    from ._errors import InputError
    from .evaluate import FeatureTable
    from .privacy.dp import PRIVATE_FUSIONS, evaluate_private

    if missing:
        raise InputError("--missing is not available with --epsilon")
    strategies = _parse_strategies(fusion)
    if fusion == "early,weighted,late,stacking":  # the default: the DP-capable ones
        strategies = list(PRIVATE_FUSIONS)
    if weights == "cv":
        weights = "equal"
    with _Progress(progress) as bar:
        table = FeatureTable(X, encoder_spec, on_error, bar)
        result = evaluate_private(X, y, epsilon=epsilon, delta=delta, features=table,
                                  groups=groups,
                                  strategies=strategies, weights=weights, cv=cv_spec,
                                  random_state=seed, on_error=on_error)
    print_results(result, f"{title}, differential privacy epsilon={epsilon:g}, delta={delta:g}")
    console.print("DP: data-independent encoders, unit-norm rows, fixed weights, noisy class "
                  "directions (diffprivlib mechanisms); one model per training fold, each "
                  "with the whole budget", markup=False, highlight=False)
    _write_outputs(result, json_out, report, f"{title} (epsilon={epsilon:g})")
    return result


@app.command()
def audit(
    model: Annotated[Path, typer.Argument(help="A model file written by `mmfuse train`.")],
    members: Annotated[Path, typer.Option(help="Manifest of rows the model was trained on.")],
    non_members: Annotated[Path, typer.Option("--non-members", help="Manifest of rows from the same distribution it never saw.")],
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    label: Annotated[str, typer.Option(help="Manifest column with the label.")] = "label",
    on_error: Annotated[Optional[str], typer.Option("--on-error", help="raise or skip unreadable items (default: the model's).")] = None,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the AUC's 95% CI.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed of the bootstrap.")] = 0,
    json_out: JsonOpt = None,
) -> None:
    """Membership-inference audit: can the loss or confidence of the model tell its training
    rows from unseen ones? Prints each attack's AUC with a bootstrap 95% CI."""
    from .persist import load
    from .privacy.audit import audit_model

    with _errors():
        fitted = load(model)
        if on_error is not None:
            fitted.on_error = on_error
        if not (image or text or audio):  # the model's own column names
            cols = set(fitted.encoders_)
            image, text, audio = (m if m in cols else None for m in MODALITY_OPTIONS)
        X_m, y_m, _, _, _ = _load_input(members, image, text, audio, label, None, None, None, None)
        X_n, y_n, _, _, _ = _load_input(non_members, image, text, audio, label, None, None,
                                        None, None)
        result = audit_model(fitted, X_m, y_m, X_n, y_n, n_bootstrap=bootstrap,
                             random_state=seed)
        table = Table(title=f"membership audit: {len(y_m)} members, {len(y_n)} non-members",
                      title_justify="left")
        for col in ("attack", "AUC", "95% CI", "advantage"):
            table.add_column(col)
        for a in result.attacks:
            table.add_row(a.name, f"{a.auc:.3f}", f"{a.auc_ci95[0]:.3f}-{a.auc_ci95[1]:.3f}",
                          f"{a.advantage:.3f}")
        console.print(table)
        console.print(f"accuracy: members {result.accuracy_members:.3f}, non-members "
                      f"{result.accuracy_non_members:.3f}", markup=False, highlight=False)
        worst = result.worst
        verdict = ("members are distinguishable (the CI lies above 0.5): the model leaks "
                   "membership" if worst.auc_ci95[0] > 0.5 else
                   "no membership leak detected at this sample size (the CI includes 0.5)")
        console.print(f"worst attack: {worst.name}, AUC {worst.auc:.3f}; {verdict}",
                      markup=False, highlight=False)
        if json_out:
            from ._io import atomic_write_json

            atomic_write_json(json_out, {"model": model.name, **result.to_dict()})
            console.print(f"wrote {json_out}")


@app.command()
def extract(
    manifest: Annotated[Path, typer.Option(help="CSV, JSONL or Parquet, one row per sample.")],
    out: Annotated[Path, typer.Option(help="The feature store folder to write (every worker must see it).")],
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    encoders: Annotated[Optional[str], typer.Option(help="Per modality: image=efficientnet-lite0,text=minilm,audio=mfcc (stateless encoders; default image=hog, audio=mfcc).")] = None,
    scheduler: SchedulerOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Worker processes of --scheduler local (default: one per core).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Items per model call.")] = 32,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Rows per task and per Parquet file.")] = 256,
    on_error: OnErrorOpt = "raise",
    record_paths: Annotated[bool, typer.Option("--record-paths/--no-record-paths", help="Also write the files of failed items into the store's header.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a store made with other arguments.")] = False,
    progress: ProgressOpt = True,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    boolean: BooleanOpt = None,
    dates: DatesOpt = None,
) -> None:
    """Extract features of every manifest row into a Parquet feature store (resumable; on
    Dask with --scheduler). Use it with `mmfuse run/train --features DIR`.

    Tabular columns (--numeric...) are learned per training fold, so they are checked and
    kept raw in the store (as every non-modality column is), not encoded here."""
    from .features import SHARD_NAME, extract_store, read_header

    with _errors():
        columns = {m: c for m, c in (("image", image), ("text", text), ("audio", audio)) if c}
        tab = _tabular_encoder(numeric, categorical, boolean, dates)
        if tab is not None:
            _check_manifest_has(manifest, tab.columns, set(columns.values()))
        try:
            with _Progress(progress) as bar:
                tick = None if bar is None else (lambda done, total: bar("shards", done, total))
                result = extract_store(manifest, columns, out,
                                       encoders=_parse_pairs(encoders, "--encoders"),
                                       scheduler=scheduler, n_workers=workers,
                                       rows_per_shard=shard_size, batch_size=batch_size,
                                       on_error=on_error, record_paths=record_paths,
                                       overwrite=overwrite, progress=tick)
        except KeyboardInterrupt:
            try:
                total = read_header(out)["n_shards"]
                done = sum((out / SHARD_NAME.format(i)).is_file() for i in range(total))
                state = f"{done} of {total} shards are written"
            except Exception:  # noqa: BLE001 - nothing written yet
                state = "nothing was written"
            err_console.print(f"[yellow]interrupted:[/yellow] {state}; run the same command "
                              f"again to compute the rest", highlight=False)
            raise typer.Exit(130) from None
        encs = ", ".join(f"{m}={e['name']}" for m, e in result.header["encoders"].items())
        console.print(f"wrote {result.n_rows} rows ({encs}) in {result.n_shards} shards to "
                      f"{out}: {result.computed} computed, {result.reused} reused, "
                      f"{result.seconds:.1f} s", markup=False, highlight=False)
        if tab is not None:
            console.print(f"tabular columns kept raw (learned per training fold): "
                          f"{', '.join(tab.columns)}; use them with `mmfuse run --features "
                          f"{out} --numeric ...`", markup=False, highlight=False)
        if result.failed:
            err_console.print(f"[yellow]{len(result.failed)} item(s) failed[/yellow] "
                              f"(absent in the store):")
            for f in result.failed[:20]:
                where = f" {f['file']!r}" if "file" in f else ""
                err_console.print(f"  row {f['row']}, {f['modality']}{escape(where)}: "
                                  f"{escape(f['cause'])}", highlight=False)
            if len(result.failed) > 20:
                err_console.print(f"  ... and {len(result.failed) - 20} more (see {out}/"
                                  f"_mmfuse_features.json)")


def _check_manifest_has(manifest: Path, wanted: list[str], modality_columns: set[str]) -> None:
    """Fail before a long extraction when a tabular column is not in the manifest."""
    from ._errors import InputError
    from .data.manifest import READERS

    kind = READERS.get(Path(manifest).suffix.lower())
    if kind is None or not Path(manifest).is_file():
        return  # extract_store reports these
    if kind in ("csv", "tsv"):
        import pandas as pd

        have = list(pd.read_csv(manifest, sep="," if kind == "csv" else "\t", nrows=0).columns)
    elif kind == "jsonl":
        import json

        with open(manifest, encoding="utf-8") as fh:
            first = next((line for line in fh if line.strip()), "{}")
        have = list(json.loads(first))
    else:
        import pyarrow.parquet as pq

        have = pq.read_schema(manifest).names
    absent = [c for c in wanted if c not in have]
    clash = [c for c in wanted if c in modality_columns]
    if absent or clash:
        raise InputError(f"manifest {str(manifest)!r}: tabular column(s) "
                         f"{absent or clash} " + ("are not in it" if absent else
                                                  "are also modality columns")
                         + f"; it has {have}")


cache_app = typer.Typer(help="The on-disk feature cache ($MMFUSE_CACHE, else the user cache dir).",
                        no_args_is_help=True)
app.add_typer(cache_app, name="cache")


@cache_app.command("info")
def cache_info_cmd() -> None:
    """Where the cache is and what it holds, per encoder."""
    from .cache import cache_info

    with _errors():
        info = cache_info()
        console.print(f"cache: {info['root']}")
        console.print(f"{info['entries']} feature rows, {info['bytes'] / 2**20:.1f} MiB; "
                      f"{len(info['models'])} exported model(s); total "
                      f"{info['total_bytes'] / 2**20:.1f} MiB")
        if info["encoders"]:
            table = Table(title="features by encoder", title_justify="left")
            for col in ("encoder fingerprint", "rows", "dim", "MiB"):
                table.add_column(col)
            for fp, e in sorted(info["encoders"].items()):
                table.add_row(fp, str(e["entries"]), str(e["dim"]), f"{e['bytes'] / 2**20:.1f}")
            console.print(table)


@cache_app.command("clear")
def cache_clear_cmd(
    encoder: Annotated[Optional[str], typer.Option(help="Only this encoder's rows (name or fingerprint).")] = None,
    models: Annotated[bool, typer.Option("--models/--no-models", help="Also delete exported ONNX models.")] = False,
) -> None:
    """Delete cached features (they are recomputed on next use)."""
    from .cache import clear_cache

    with _errors():
        removed = clear_cache(encoder=encoder, models=models)
        console.print(f"removed {removed['entries']} feature rows and {removed['models']} model(s)")


ListJsonOpt = Annotated[bool, typer.Option("--json", help="Print the listing as JSON.")]


def _print_listing(title: str, columns: list[str], rows: list[list[str]], records: list[Any],
                   as_json: bool, **table_kw: Any) -> None:
    """A listing: JSON (``--json``), a rich table on a terminal, else plain tab-separated
    rows (header first), never truncated or wrapped, so ``| grep`` and ``| cut`` work."""
    import json

    if as_json:
        sys.stdout.write(json.dumps(records, indent=2, default=str) + "\n")
    elif console.is_terminal:
        table = Table(title=title, title_justify="left", **table_kw)
        for col in columns:
            table.add_column(col, overflow="fold")
        for row in rows:
            table.add_row(*[escape(cell) for cell in row])  # "mmfuse[image]" is not markup
        console.print(table)
    else:
        for row in [columns, *rows]:
            sys.stdout.write("\t".join(" ".join(cell.split()) for cell in row) + "\n")


@app.command("encoders")
def encoders_cmd(
    modality: Annotated[Optional[str], typer.Option(help="Only this modality.")] = None,
    as_json: ListJsonOpt = False,
) -> None:
    """List the registered encoders with their modality and output dimension."""
    from .encoders import list_encoders

    with _errors():
        records = list_encoders(modality)
        rows = []
        for e in records:
            needs = f'pip install "mmfuse[{e["extra"]}]"' if e.get("extra") else ""
            rows.append([e["name"], e["modality"], "data" if e["dim"] is None else str(e["dim"]),
                         needs, e.get("description", "")])
        _print_listing("encoders", ["name", "modality", "dim", "needs", "description"], rows,
                       records, as_json)


@app.command("strategies")
def strategies_cmd(as_json: ListJsonOpt = False) -> None:
    """List the registered fusion strategies."""
    from .fusion import list_fusions

    with _errors():
        records = list_fusions()
        rows = [[f["name"], f.get("description", ""),
                 f'pip install "mmfuse[{f["extra"]}]"' if f.get("extra") else ""]
                for f in records]
        _print_listing("fusion strategies", ["name", "description", "needs"], rows, records,
                       as_json)


@app.command("datasets")
def datasets_cmd(
    name: Annotated[Optional[str], typer.Argument(help="Show this dataset in full (citation, source...).")] = None,
    as_json: ListJsonOpt = False,
) -> None:
    """List the bundled real datasets (modalities, size, cv, licence); with NAME, one
    dataset in full, with its citation and source."""
    import json

    from .data.datasets import dataset_info, list_datasets

    with _errors():
        if name is not None:
            info = dataset_info(name)
            if as_json:
                sys.stdout.write(json.dumps(info, indent=2, default=str) + "\n")
                return
            for key, value in info.items():
                if isinstance(value, (dict, list)):
                    value = json.dumps(value, default=str)
                console.print(f"{key}: {value}", markup=False, highlight=False,
                              soft_wrap=not console.is_terminal)
            return
        records = list_datasets()
        rows = []
        for d in records:
            cv = d.get("cv", {})
            cv_text = cv.get("kind", "") if isinstance(cv, dict) else str(cv)
            if isinstance(cv, dict) and cv.get("n_splits"):
                cv_text += f" ({cv['n_splits']} folds)"
            rows.append([d["name"], ", ".join(d["modalities"]), str(d.get("n_samples", "")),
                         str(d.get("n_classes", "")), cv_text, d.get("licence", "")])
        _print_listing("datasets (`mmfuse datasets NAME`: one in full, with its citation)",
                       ["name", "modalities", "samples", "classes", "cv", "licence"], rows,
                       records, as_json)


@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="Bundled dataset to run on.")] = "av-digits",
    json_out: JsonOpt = None,
    report: ReportOpt = None,
    fusion: FusionOpt = "early,weighted,late,stacking",
    progress: ProgressOpt = True,
    jobs: JobsOpt = -1,
    encoders: Annotated[Optional[str], typer.Option(help="As in `mmfuse run`, e.g. 'auto' (default: hog, tfidf, mfcc).")] = None,
) -> None:
    """The main job: single modalities vs every fusion strategy vs the seed baseline, on real data."""
    with _errors():
        enc = _parse_encoders(encoders)
        X, y, groups, default_cv, title = _load_input(None, None, None, None, None, None, None,
                                                      None, dataset)
        _evaluate_and_print(X, y, groups, _encoder_spec(X, enc), _parse_strategies(fusion), "cv",
                            default_cv, 0, "raise", json_out, report, progress,
                            f"mmfuse demo: {title}", jobs)


@app.callback(invoke_without_command=True)
def _main(version: Annotated[bool, typer.Option("--version", help="Show the version.")] = False,
          debug: Annotated[bool, typer.Option("--debug", help="Show Python tracebacks of errors.")] = False) -> None:
    global _DEBUG
    _DEBUG = debug
    if version:
        from . import __version__

        console.print(f"mmfuse {__version__}")
        raise typer.Exit()


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
