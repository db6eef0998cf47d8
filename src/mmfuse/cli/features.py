"""``mmfuse extract`` (feature stores) and ``mmfuse cache info|clear``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ._common import (BooleanOpt, CategoricalOpt, DatesOpt, NumericOpt, OnErrorOpt, QuietOpt,
                      SchedulerOpt, app, console, err_console, _Progress, _errors, _manifest_header,
                      _parse_pairs,
                      _tabular_encoder)


@app.command()
def extract(
    manifest: Annotated[Path, typer.Option(help="CSV, JSONL or Parquet, one row per sample.")],
    out: Annotated[Path, typer.Option(help="The feature store folder to write (every worker must see it).")],
    image: Annotated[Optional[str], typer.Option(help="Manifest column with image paths.")] = None,
    text: Annotated[Optional[str], typer.Option(help="Manifest column with text.")] = None,
    audio: Annotated[Optional[str], typer.Option(help="Manifest column with audio paths.")] = None,
    encoders: Annotated[Optional[str], typer.Option(help="Per modality: image=efficientnet-lite0,text=minilm,audio=mfcc (stateless encoders; default image=hog, audio=mfcc).")] = None,
    scheduler: SchedulerOpt = None,
    jobs: Annotated[int, typer.Option("--jobs", min=-1, help="Worker processes of --scheduler local (-1: one per core).")] = -1,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Items per model call.")] = 32,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Rows per task and per Parquet file.")] = 256,
    on_error: OnErrorOpt = "raise",
    record_paths: Annotated[bool, typer.Option("--record-paths/--no-record-paths", help="Also write the files of failed items into the store's header.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a store made with other arguments.")] = False,
    quiet: QuietOpt = False,
    numeric: NumericOpt = None,
    categorical: CategoricalOpt = None,
    boolean: BooleanOpt = None,
    dates: DatesOpt = None,
) -> None:
    """Extract features of every manifest row into a Parquet feature store (resumable; on
    Dask with --scheduler). Use it with `mmfuse run/train --features DIR`.

    Tabular columns (--numeric...) are learned per training fold, so they are checked and
    kept raw in the store (as every non-modality column is), not encoded here."""
    from ..features import SHARD_NAME, extract_store, read_header

    with _errors():
        columns = {m: c for m, c in (("image", image), ("text", text), ("audio", audio)) if c}
        tab = _tabular_encoder(numeric, categorical, boolean, dates)
        if tab is not None:
            _check_manifest_has(manifest, tab.columns, set(columns.values()))
        try:
            with _Progress(quiet) as bar:
                tick = None if bar is None else (lambda done, total: bar("shards", done, total))
                result = extract_store(manifest, columns, out,
                                       encoders=_parse_pairs(encoders, "--encoders"),
                                       scheduler=scheduler, n_workers=None if jobs in (-1, 0) else jobs,
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
    from .._errors import InputError

    have = _manifest_header(manifest)
    if have is None:
        return  # extract_store reports these
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
    from ..cache import cache_info

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
    from ..cache import clear_cache

    with _errors():
        removed = clear_cache(encoder=encoder, models=models)
        console.print(f"removed {removed['entries']} feature rows and {removed['models']} model(s)")
