"""What every command of the CLI shares: the typer ``app``, the consoles, the error
handler (a library error becomes one line and an exit code, never a traceback), option
types, parsers of option values, the progress bar, the results table and the input
loading. The commands live one group per module in this package."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .._constants import ON_ERROR
from .._errors import MissingDependencyError, MmfuseError
from ..uncertainty.calibration import CALIBRATIONS
from ..uncertainty.conformal import SCORES
from ._progress import Progress
from ._usage import Abort, ClickException, MmfuseGroup

app = typer.Typer(cls=MmfuseGroup, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode="rich",
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Multimodal fusion for image recognition: image, text and audio, "
                       "fused honestly.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable

MODALITY_OPTIONS = ("image", "text", "audio")

# The panels of `mmfuse run --help` (and of the commands that share its options).
INPUT, ENCODERS, FUSION, EVALUATION, PRIVACY, OUTPUT = (
    "Input", "Encoders", "Fusion", "Evaluation", "Privacy", "Output")

#: ``mmfuse --debug ...``: show Python tracebacks instead of one-line messages.
_DEBUG = False


@contextmanager
def _errors() -> Iterator[None]:
    """Library exceptions become a message and an exit code, never a traceback (unless
    ``--debug``). An unexpected exception is also one line (exit 2) that says how to get
    the traceback."""
    try:
        yield
    except (ClickException, Abort, typer.Exit, typer.Abort):  # usage errors: the group prints them
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
    from ..evaluate import DEFAULT_STRATEGIES
    from ..fusion import list_fusions

    if text == "all":  # the seed baseline (``reference``) is always its own row
        extra = [f["name"] for f in list_fusions()
                 if f["name"] not in DEFAULT_STRATEGIES and not f.get("reference")]
        return list(DEFAULT_STRATEGIES) + extra
    return [s.strip() for s in text.split(",") if s.strip()]


def _Progress(quiet: bool) -> Progress:
    """The progress reporter of a command (``with _Progress(quiet) as progress:``)."""
    return Progress(quiet, err_console)


def print_results(result: Any, title: str) -> None:
    mods = sorted({m for r in result.rows for m in r.modalities})
    tied = getattr(result, "best_tied_with", None)
    caption = (f"acc: accuracy (mean over folds); 95% CI: t-interval of that mean over the "
               f"folds; F1: macro-F1; weights: {'/'.join(mods)}"
               + ("; (tied): best on the mean, but its interval overlaps the runner-up's"
                  if tied else ""))
    table = Table(title=title, title_justify="left", caption_justify="left", caption=caption)
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
        name = f"{r.name} (tied)" if tied and r.name in (best, tied) else r.name
        table.add_row(escape(name), r.kind, f"{r.accuracy:.3f}",
                      f"{r.accuracy_ci95[0]:.2f}-{r.accuracy_ci95[1]:.2f}", f"{r.macro_f1:.3f}",
                      weights, f"{r.seconds:.1f}", style=style)
    console.print(table)
    print_uncertainty(result, best)
    cv = result.cv
    verdict = (f"best: {best}, tied with {tied} (their 95% CIs overlap)" if tied
               else f"best: {best}")
    console.print(f"{result.n_samples} samples, {result.n_classes} classes, "
                  f"cv: {cv['kind']} ({cv['n_splits']} folds"
                  + (f" x {cv['n_repeats']}" if "n_repeats" in cv else "") + f"); {verdict}",
                  markup=False, highlight=False)
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
            err_console.print(f"  ... and {len(result.errors) - 20} more (see --json-out)")


def print_uncertainty(result: Any, best: str) -> None:
    """The second table: each row's log-loss, Brier score and ECE, and with a coverage its
    sets' coverage, mean size and share of singletons (fold mean and 95% interval)."""
    scores = _uncertainty_columns(result)
    if not scores:
        return
    spec = getattr(result, "uncertainty", None)
    calibration = getattr(spec, "calibration", None)
    table = Table(title="probabilities" + (f" ({calibration} calibration)" if calibration
                                           else "") + " and prediction sets",
                  title_justify="left", caption_justify="left",
                  caption="fold mean (95% CI); ECE: 15 equal-width bins of the top "
                          "probability; sets: conformal, learned in each training fold")
    table.add_column("name", no_wrap=True)
    for col, _ in scores:
        table.add_column(col)  # narrow terminals: the interval wraps under the mean
    for r in result.rows:
        table.add_row(escape(r.name), *[cell(r) for _, cell in scores],
                      style="bold green" if r.name == best else None)
    console.print(table)


def _uncertainty_columns(result: Any) -> list[tuple[str, Any]]:
    """The probability and set columns: (header, row -> "mean (low-high)")."""
    def cell(*path: str) -> Any:
        def text(row: Any) -> str:
            d = getattr(row, "uncertainty", None)
            for key in path:
                d = (d or {}).get(key)
            return "" if not d else f"{d['mean']:.3f} ({d['ci95'][0]:.2f}-{d['ci95'][1]:.2f})"

        return text

    if not any(getattr(r, "uncertainty", None) for r in result.rows):
        return []
    cols = [("log-loss", cell("log_loss")), ("Brier", cell("brier")), ("ECE", cell("ece")),
            ("ECE debiased", cell("ece_debiased"))]  # beside the ECE: its floor removed in part
    spec = getattr(result, "uncertainty", None)
    for target in getattr(spec, "coverage", ()):
        key = f"{spec.scores[0]}@{target:g}"
        cols += [(f"coverage {target:g}", cell("sets", key, "coverage")),
                 ("set size", cell("sets", key, "set_size")),
                 ("singletons", cell("sets", key, "singletons"))]
    return cols


def _write_outputs(result: Any, json_out: Optional[Path], report: Optional[Path],
                   title: str, robustness: Any = None, not_cached: int | None = None,
                   explanation: Any = None) -> None:
    from .._io import atomic_write_json

    if json_out:
        doc = result.to_dict(argv=_command_line())
        if not_cached is not None:
            doc["cache"] = {"features_not_cached": int(not_cached)}
        if robustness is not None:
            doc["robustness"] = robustness.to_dict()
        if result.errors:
            doc["skipped"] = [str(e) for e in result.errors]
        atomic_write_json(json_out, doc)
        console.print(f"wrote {json_out}")
    if report:
        from ..report import write_report

        write_report(result, report, title=title, robustness=robustness,
                     explanation=explanation)
        console.print(f"wrote {report}")


def _command_line() -> list[str]:
    """This process's command line for the JSON record, every file reduced to its name."""
    import sys

    from ..evaluate.record import reduce_paths

    return reduce_paths(["mmfuse", *sys.argv[1:]])


def _choices(values: Any) -> Any:
    """A choice type for an option: typer lists the values in --help and refuses others."""
    return Literal[tuple(values)]  # type: ignore[valid-type]


def _parse_cv(value: Optional[str]) -> Optional[str]:
    """``--cv``: an integer >= 2 or ``loso``, checked as the command line is parsed."""
    if value is None or value == "loso":
        return value
    try:
        folds = int(value)
    except ValueError:
        folds = None
    if folds is None or folds < 2:
        raise typer.BadParameter(f"expected an integer >= 2 or 'loso'; got {value!r}")
    return str(folds)


def _parse_coverage(value: Optional[float]) -> Optional[float]:
    """``--coverage``: a share strictly between 0 and 1, checked as the line is parsed."""
    if value is not None and not 0.0 < value < 1.0:
        raise typer.BadParameter(f"expected a share between 0 and 1 such as 0.9; got {value:g}")
    return value


def _cv_spec(cv: Optional[str], default: Any) -> Any:
    """The ``cv`` argument of the library for a checked ``--cv`` value."""
    return default if cv is None else (cv if cv == "loso" else int(cv))


WEIGHTS = ("cv", "relative", "equal")
POOLING = ("mean", "max")
DEVICES = ("auto", "cpu", "cuda")
DEVICE_CHOICE = _choices(DEVICES)

JsonOpt = Annotated[Optional[Path], typer.Option("--json-out", help="Write the results as JSON to this file.", rich_help_panel=OUTPUT)]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Write an HTML report.", rich_help_panel=OUTPUT)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress (bars on a terminal, else timestamped lines on stderr).", rich_help_panel=OUTPUT)]
FusionOpt = Annotated[str, typer.Option(help="Strategies, comma-separated, or 'all'.", rich_help_panel=FUSION)]
CalibrationOpt = Annotated[Optional[_choices(CALIBRATIONS)], typer.Option("--calibration", help="Calibrate the fused probabilities on grouped inner folds of the training rows (temperature keeps the labels).", rich_help_panel=FUSION)]
CoverageOpt = Annotated[Optional[float], typer.Option("--coverage", callback=_parse_coverage, help="Conformal prediction sets that hold the true label with this probability, e.g. 0.9.", rich_help_panel=FUSION)]
ScoreOpt = Annotated[_choices(SCORES), typer.Option("--conformal-score", help="Sets: adaptive (aps, raps) or smallest on average (lac).", rich_help_panel=FUSION)]
MondrianOpt = Annotated[bool, typer.Option("--mondrian/--no-mondrian", help="Sets: coverage per class (one threshold per class).", rich_help_panel=FUSION)]
WeightsOpt = Annotated[_choices(WEIGHTS), typer.Option(help="Modality weights: learned by inner CV, relative to each modality's accuracy, or equal.", rich_help_panel=FUSION)]
OnErrorOpt = Annotated[_choices(ON_ERROR), typer.Option("--on-error", help="Raise or skip unreadable items.", rich_help_panel=INPUT)]
ModelOnErrorOpt = Annotated[Optional[_choices(ON_ERROR)], typer.Option("--on-error", help="Raise or skip unreadable items (default: the model's).")]
JobsOpt = Annotated[int, typer.Option("--jobs", help="Worker processes for the folds (-1: one per core).", rich_help_panel=EVALUATION)]
DeviceOpt = Annotated[DEVICE_CHOICE, typer.Option("--device", help="Where the pretrained image/audio encoders and learned heads run (auto: CUDA when present).", rich_help_panel=ENCODERS)]
CvOpt = Annotated[Optional[str], typer.Option(callback=_parse_cv, help="Folds (an integer >= 2) or 'loso'. Default: the dataset's, else 5.", rich_help_panel=EVALUATION)]


def _placement(X: Any, encoder_spec: Any, strategies: list[str], device: str) -> tuple[Any, Any]:
    """(encoder spec, per-strategy params) with the models on ``device`` (cpu/cuda/auto).
    CUDA asked for on a machine without it is a DeviceError (exit 2)."""
    from ..devices import resolve_device
    from ..placement import head_params, place_encoders

    resolved = resolve_device(device)
    if resolved != "cpu":  # encoder names already mean the CPU
        encoder_spec = place_encoders(encoder_spec, X, resolved)
    params = head_params(strategies, resolved) if device != "auto" or resolved != "cpu" else None
    return encoder_spec, params


ScrubOpt = Annotated[bool, typer.Option("--scrub-pii/--no-scrub-pii", help="Replace e-mails, URLs, phone/card/IBAN numbers... in text by placeholders before encoding.", rich_help_panel=PRIVACY)]
EpsilonOpt = Annotated[Optional[float], typer.Option("--epsilon", help="Differential privacy budget (needs mmfuse\\[privacy]): early/late fusion with fixed weights, data-independent encoders.", rich_help_panel=PRIVACY)]
DeltaOpt = Annotated[float, typer.Option("--delta", help="The delta of the DP budget (0: pure epsilon-DP).", rich_help_panel=PRIVACY)]
FeaturesOpt = Annotated[Optional[Path], typer.Option("--features", help="A feature store written by `mmfuse extract` (no encoder runs).", rich_help_panel=INPUT)]
NumericOpt = Annotated[Optional[str], typer.Option("--numeric", help="Tabular modality: numeric manifest columns, a,b,c (median-imputed, missing flags, robust scaling).", rich_help_panel=INPUT)]
CategoricalOpt = Annotated[Optional[str], typer.Option("--categorical", help="Tabular modality: categorical columns, d,e (one-hot of frequent levels + other/unseen).", rich_help_panel=INPUT)]
BooleanOpt = Annotated[Optional[str], typer.Option("--boolean", help="Tabular modality: boolean columns (true/false, yes/no, 1/0).", rich_help_panel=INPUT)]
DatesOpt = Annotated[Optional[str], typer.Option("--dates", help="Tabular modality: date columns (ISO 8601).", rich_help_panel=INPUT)]
PoolingOpt = Annotated[_choices(POOLING), typer.Option("--pooling", help="A cell holding several image/audio files (a JSON list, or paths separated by ' | '): the mean or the max of their embeddings.", rich_help_panel=ENCODERS)]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Run on Dask: 'local' or a scheduler address tcp://host:8786 (default: $MMFUSE_SCHEDULER, else this process).", rich_help_panel=EVALUATION)]
EncodersOpt = Annotated[Optional[str], typer.Option(help="Per modality: image=hog,text=tfidf,audio=mfcc; 'auto' (or text=auto, or text=tfidf/minilm/tfidf+minilm) chooses by inner CV.", rich_help_panel=ENCODERS)]
ManifestOpt = Annotated[Optional[Path], typer.Option(help="CSV, JSONL or Parquet, one row per sample.", rich_help_panel=INPUT)]
ImageOpt = Annotated[Optional[str], typer.Option(help="Manifest column with image paths.", rich_help_panel=INPUT)]
TextOpt = Annotated[Optional[str], typer.Option(help="Manifest column with text.", rich_help_panel=INPUT)]
AudioOpt = Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.", rich_help_panel=INPUT)]
LabelOpt = Annotated[Optional[str], typer.Option(help="Manifest column with the label.", rich_help_panel=INPUT)]
ViewsOpt = Annotated[Optional[str], typer.Option(help="Pre-extracted arrays: image=images.npy,text=texts.npy", rich_help_panel=INPUT)]
LabelsOpt = Annotated[Optional[Path], typer.Option(help="labels.npy for --views.", rich_help_panel=INPUT)]
DatasetOpt = Annotated[Optional[str], typer.Option(help="A bundled dataset (see `mmfuse datasets`).", rich_help_panel=INPUT)]
SeedOpt = Annotated[int, typer.Option(help="Random seed.", rich_help_panel=EVALUATION)]


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
        from ..encoders.featurizer import resolve_encoders

        spec = resolve_encoders("auto", X) if any(m in X.columns for m in MODALITY_OPTIONS) else {}
    else:
        from ..encoders.registry import default_encoder

        spec = {m: default_encoder(m) for m in MODALITY_OPTIONS if m in X.columns}
        spec.update(enc or {})
    if tabular is not None:
        spec["tabular"] = tabular
    return spec


def _tabular_encoder(numeric, categorical, boolean, dates, dataset=None, features=None) -> Any:
    """The ``tabular`` encoder of --numeric/--categorical/--boolean/--dates (None without
    them); a dataset with table columns (``tuxpaint-tabular``) uses its own by default."""
    from ..encoders.tabular import TabularEncoder

    given = {k: [c.strip() for c in v.split(",") if c.strip()]
             for k, v in (("numeric", numeric), ("categorical", categorical),
                          ("boolean", boolean), ("dates", dates)) if v}
    if not given and dataset:
        from ..data.datasets import dataset_info

        given = dataset_info(dataset).get("tabular") or {}
    return TabularEncoder(**given) if given else None


def _load_input(manifest, image, text, audio, label, group, views, labels, dataset,
                features=None, encoders=None, tabular=None):
    from ..data.inputs import load_input

    return load_input(manifest=manifest, columns={"image": image, "text": text, "audio": audio},
                      label=label, group=group,
                      views=_parse_pairs(views, "--views") if views else None, labels=labels,
                      dataset=dataset, features=features, encoders=encoders, tabular=tabular)


def _manifest_header(manifest: Path) -> Optional[list[str]]:
    """The column names of a manifest, read from its first line (None when it is not a
    readable manifest file: the library reports that, with the reason)."""
    from ..data.manifest import READERS

    kind = READERS.get(Path(manifest).suffix.lower())
    if kind is None or not Path(manifest).is_file():
        return None
    try:
        if kind in ("csv", "tsv"):
            import pandas as pd

            return [str(c) for c in pd.read_csv(manifest, sep="," if kind == "csv" else "\t",
                                                nrows=0).columns]
        if kind == "jsonl":
            import json

            with open(manifest, encoding="utf-8") as fh:
                first = json.loads(next((line for line in fh if line.strip()), "{}"))
            return [str(c) for c in first] if isinstance(first, dict) else None
        import pyarrow.parquet as pq

        return list(pq.read_schema(manifest).names)
    except Exception:  # noqa: BLE001 - read_manifest gives the precise message
        return None


def _no_privacy_on_features(features, scrub_pii, epsilon) -> None:
    """--scrub-pii and --epsilon act on raw input and its encoders, not on a store."""
    if features and (scrub_pii or epsilon is not None):
        from .._errors import InputError

        raise InputError("--scrub-pii and --epsilon need raw input (--manifest or --dataset): "
                         "a feature store's text is already encoded")
