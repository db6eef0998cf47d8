"""``--out-of-core`` / ``--in-memory``: which path ``run`` and ``train`` take on a feature
store (``--features STORE``), and the streamed evaluation's printing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ._common import EVALUATION, _Progress, _write_outputs, console, print_results

OutOfCoreOpt = Annotated[Optional[bool], typer.Option(
    "--out-of-core/--in-memory",
    help="With --features: stream the store shard by shard (early, late, weighted, stacking, "
         "seed baseline), or load it whole. Default: stream above "
         "$MMFUSE_OUT_OF_CORE_BYTES (2 GiB of features).", rich_help_panel=EVALUATION)]

def streamed_path(features: Optional[Path], out_of_core: Optional[bool], **refused: Any) -> bool:
    """True when this command streams the store. ``refused``: option name -> value of the
    options the streamed path cannot honour (an error names the first one given)."""
    from .._errors import InputError

    if not features:
        if out_of_core:
            raise InputError("--out-of-core needs a feature store: --features DIR (write one "
                             "with `mmfuse extract`)")
        return False
    from ..evaluate.streamed import OUT_OF_CORE, choose_path

    if choose_path(features, out_of_core) != OUT_OF_CORE:
        return False
    for name, value in refused.items():
        if value:
            raise InputError(f"{name} is not available out of core (the store is streamed); "
                             f"drop it, or add --in-memory on a store that fits in memory")
    return True


def evaluate_streamed_and_print(features: Path, label: Optional[str], group: Optional[str],
                                encoders: Any, strategies: list[str], fusion_default: bool,
                                weights: Any, cv_spec: Any, seed: int, json_out: Any,
                                report: Any, quiet: bool, scheduler: Optional[str] = None
                                ) -> Any:
    from ..data.inputs import check_store_options
    from ..evaluate.streamed import evaluate_store
    from ..features import check_encoders, read_header
    from ..fusion.streamed import STREAMABLE

    check_store_options(label, encoders)
    if encoders:
        check_encoders(read_header(features), encoders, where=str(features))
    if fusion_default:
        strategies = [s for s in strategies if s.partition("[")[0] in STREAMABLE]
    title = f"features {Path(features).name} (out of core)"
    with _Progress(quiet) as bar:
        result = evaluate_store(features, label, group, strategies=strategies, weights=weights,
                                cv=cv_spec, random_state=seed,
                                modalities=sorted(encoders) if encoders else None,
                                progress=bar, scheduler=scheduler)
    print_results(result, title)
    console.print("path: out-of-core (the store was streamed shard by shard; learned weights "
                  "and stacking's meta level fitted on streamed inner folds)", markup=False,
                  highlight=False)
    _write_outputs(result, json_out, report, title)
    return result


def train_streamed_and_save(features: Path, label: Optional[str], encoders: Any, fusion: str,
                            weights: Any, seed: int, out: Path, quiet: bool,
                            group: Optional[str] = None) -> Any:
    """``train --features STORE --out-of-core``: fit on the streamed store, save."""
    from .._errors import InputError
    from ..features import attach_encoders, check_encoders, read_header
    from ..features.train import train_store

    if not label:
        raise InputError("--label COL is required with --features (a manifest column kept in "
                         "the store)")
    header = read_header(features)
    if encoders and encoders != "auto":
        check_encoders(header, encoders, where=str(features))
    with _Progress(quiet) as bar:
        model = train_store(features, label, fusion=fusion, weights=weights, group=group,
                            random_state=seed, progress=bar)
    raw = header.get("manifest_sha256") is not None  # written by `mmfuse extract`
    if raw:
        attach_encoders(model, features)  # the saved model predicts from raw files
    model.save(out)
    if model.weights_fallback_:
        console.print(f"note: {model.weights_fallback_}", markup=False, highlight=False)
    console.print(f"trained {fusion} out of core on {model.n_train_rows_} samples of features "
                  f"{Path(features).name} (path: out-of-core; "
                  + ("it predicts from raw files)" if raw else
                     "the store was written from arrays: it predicts from feature vectors)"),
                  markup=False, highlight=False)
    console.print(f"wrote {out}")
    return model


StoreOpt = Annotated[Optional[Path], typer.Option(
    "--store", help="With --scheduler on a raw --manifest: extract the features on the cluster "
    "into this store (a folder every worker sees; default with --scheduler local: a temporary "
    "one), then evaluate from it.", rich_help_panel=EVALUATION)]


def extract_for_run(manifest: Optional[Path], columns: dict, encoders: Any,
                    scheduler: Optional[str], store: Optional[Path], tabular: bool,
                    stack: Any, quiet: bool, on_error: str = "raise") -> Optional[Path]:
    """``run --scheduler ... --manifest``: extract on the cluster into ``store`` (or a
    temporary store on a local cluster) and return its path; None when the run extracts in
    this process as before (no scheduler; encoders that learn from data, which a store
    cannot hold; tabular columns; a remote cluster without --store), with a note why."""
    from .._errors import InputError
    from ..distributed import resolve_scheduler

    address = resolve_scheduler(scheduler)
    if store is not None and (address is None or manifest is None):
        raise InputError("--store needs --scheduler and a raw --manifest (it is where the "
                         "cluster extracts the features)")
    if address is None or manifest is None:
        return None
    from ..features.plan import storable

    cols = {m: c for m, c in columns.items() if c}
    why = ("tabular columns are encoded per fold" if tabular else
           "--encoders auto chooses per fold" if encoders == "auto" else
           storable(cols, encoders))
    if why is None and store is None and address != "local":
        why = "a remote cluster needs --store DIR on storage every worker sees"
    if why is not None:
        if store is not None:
            raise InputError(f"--store: the features cannot be extracted into a store: {why}")
        console.print(f"note: features extracted in this process, folds on the cluster ({why})",
                      markup=False, highlight=False)
        return None
    import tempfile

    from ..features import extract_store

    out = store or Path(stack.enter_context(tempfile.TemporaryDirectory(
        prefix="mmfuse-store-"))) / "store"
    with _Progress(quiet) as bar:
        result = extract_store(manifest, cols, out, encoders=encoders or None,
                               scheduler=scheduler, on_error=on_error,
                               progress=None if bar is None else
                               (lambda d, t: bar("extracting on the cluster", d, t)))
    console.print(f"extracted {result.n_rows} rows on the cluster into "
                  f"{'a temporary store' if store is None else Path(out).name} "
                  f"({result.computed} shards computed, {result.reused} reused)",
                  markup=False, highlight=False)
    return Path(out)
