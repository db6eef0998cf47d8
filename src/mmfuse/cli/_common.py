"""What every command of the CLI shares: the typer ``app``, the consoles, the error
handler (a library error becomes one line and an exit code, never a traceback), option
types, parsers of option values, the progress bar, the results table and the input
loading. The commands live one group per module in this package."""

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

from .._errors import MissingDependencyError, MmfuseError

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
    from ..evaluate import DEFAULT_STRATEGIES
    from ..fusion import list_fusions

    if text == "all":  # the seed baseline (``reference``) is always its own row
        extra = [f["name"] for f in list_fusions()
                 if f["name"] not in DEFAULT_STRATEGIES and not f.get("reference")]
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
    from ..evaluate.record import reduce_paths

    return reduce_paths(["mmfuse", *sys.argv[1:]])


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
    from ..devices import head_params, place_encoders, resolve_device

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
PoolingOpt = Annotated[str, typer.Option("--pooling", help="A cell holding several image/audio files (a JSON list, or paths separated by ' | '): the mean or the max of their embeddings.")]
SchedulerOpt = Annotated[Optional[str], typer.Option("--scheduler", help="Run on Dask: 'local' or a scheduler address tcp://host:8786 (default: $MMFUSE_SCHEDULER, else this process).")]


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


def _no_privacy_on_features(features, scrub_pii, epsilon) -> None:
    """--scrub-pii and --epsilon act on raw input and its encoders, not on a store."""
    if features and (scrub_pii or epsilon is not None):
        from .._errors import InputError

        raise InputError("--scrub-pii and --epsilon need raw input (--manifest or --dataset): "
                         "a feature store's text is already encoded")
