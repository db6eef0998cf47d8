"""Cross-validation from a feature store larger than memory (the out-of-core path of
``mmfuse run --features STORE``).

The outer folds come from the labels and groups alone (read as columns, without the
features) by the in-memory path's own :func:`~mmfuse.evaluate.folds.make_splits`. Then
the store is streamed shard by shard, every pass serving all outer folds at once:

1. one pass: per-modality standardisation of each fold's training rows
   (:func:`~mmfuse.features.stream.fold_scalers`: a fold's test rows never enter it);
2. ``epochs`` passes in a new random shard order each: every fold's learners
   (:class:`~mmfuse.fusion.streamed.StreamedSoftmax`) take a mini-batch pass over the
   shard's training rows of that fold;
3. one pass: each row is predicted by the models of the fold that tests it.

Memory is one shard plus a few numbers per row. The strategies that stream are
``early``, ``late``, ``weighted``, ``stacking`` and the ``seed-baseline``. Late's and
weighted's learned weights (``cv``, ``relative``) and stacking's meta level are fitted on
streamed inner folds (:mod:`mmfuse.evaluate.streamed_fit`: one more pass for the
out-of-fold probabilities, and for ``weighted`` one more series of passes with the chosen
weights); early fusion's learned weights are not: its row falls back to equal weights and
says so in ``weights_fallback``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from .._errors import InputError
from ..features.stream import StoreStream
from ..fusion.streamed import STREAMABLE
from .crossval import DEFAULT_STRATEGIES, EvaluationResult, Row, make_configs
from .folds import make_splits, mean_ci95
from .streamed_fit import FALLBACK, StreamedFit, kind_of, learns

OUT_OF_CORE, IN_MEMORY = "out-of-core", "in-memory"
#: above this many bytes of float32 features, ``--features`` streams by default
DEFAULT_THRESHOLD_BYTES = 2 * 2**30
__all__ = ["FALLBACK", "evaluate_store", "choose_path", "read_targets", "auto_batch",
           "auto_epochs", "threshold_bytes", "OUT_OF_CORE", "IN_MEMORY"]


#: the fewest mini-batch steps a streamed model takes when its passes are chosen for it
MIN_STEPS = 1000


def auto_batch(n_train: int, batch_size: int | None) -> int:
    """Rows per step: ``batch_size``, else ``n_train / 200`` within [32, 512]."""
    if batch_size is not None:
        return int(batch_size)
    return int(min(512, max(32, n_train // 200)))


def auto_epochs(n_train: int, batch_size: int) -> int:
    """Passes over ``n_train`` rows: 2, or enough for :data:`MIN_STEPS` steps (at most
    50)."""
    return int(min(50, max(2, -(-MIN_STEPS * batch_size // max(1, n_train)))))


def threshold_bytes() -> int:
    """The size above which a store is streamed (``$MMFUSE_OUT_OF_CORE_BYTES``, default
    2 GiB of float32 features)."""
    value = os.environ.get("MMFUSE_OUT_OF_CORE_BYTES")
    if not value:
        return DEFAULT_THRESHOLD_BYTES
    try:
        return int(float(value))
    except ValueError:
        raise InputError(f"$MMFUSE_OUT_OF_CORE_BYTES must be a number of bytes; got "
                         f"{value!r}") from None


def choose_path(path: Any, out_of_core: bool | None) -> str:
    """``"out-of-core"`` or ``"in-memory"`` for the store at ``path``: as asked, else by
    size (streamed above :func:`threshold_bytes`)."""
    if out_of_core is not None:
        return OUT_OF_CORE if out_of_core else IN_MEMORY
    return OUT_OF_CORE if StoreStream(path).nbytes > threshold_bytes() else IN_MEMORY


def read_targets(stream: StoreStream, label: str, group: str | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(classes, y codes, group codes or None)`` from the store's columns (no features;
    an empty label or group is an error naming the row)."""
    from ..encoders.base import is_missing

    out = []
    for name in [label] + ([group] if group else []):
        values = stream.column(name)
        bad = [i for i, v in enumerate(values) if is_missing(v)] if values.dtype == object \
            else list(np.flatnonzero(np.isnan(values))) if values.dtype.kind == "f" else []
        if bad:
            raise InputError(f"feature store {str(stream.path)!r}: column {name!r} is empty in "
                             f"row {bad[0]} ({len(bad)} rows); every sample needs a {name}")
        uniques, codes = np.unique(values, return_inverse=True)
        out.append((uniques, codes.astype(np.int32)))
        del values
    classes, y = out[0]
    return classes, y, (out[1][1] if group else None)


def _configs(modalities: Sequence[str], strategies: Sequence[str], weights: Any) -> list[Any]:
    configs = make_configs(modalities, strategies, weights)
    cannot = sorted({c.fusion for c in configs if c.kind != "single"
                     and c.fusion not in STREAMABLE})
    if cannot:
        raise InputError(f"fusion {', '.join(cannot)} cannot be fitted out of core; the "
                         f"streamed strategies are {', '.join(STREAMABLE)} (or drop "
                         f"--out-of-core on a store that fits in memory)")
    return configs


def evaluate_store(path: str | os.PathLike, label: str, group: str | None = None, *,
                   strategies: Sequence[str] = DEFAULT_STRATEGIES, weights: Any = "cv",
                   cv: Any = 5, random_state: Any = 0, modalities: Sequence[str] | None = None,
                   epochs: int | None = None, batch_size: int | None = None,
                   learning_rate: float = 0.002, inner_cv: int = 3,
                   progress: Callable[[str, int, int], None] | None = None,
                   scheduler: str | None = None, n_workers: int | None = None
                   ) -> EvaluationResult:
    """Cross-validate the single modalities, the streamable fusion strategies and the seed
    baseline on the store at ``path``, reading it shard by shard (see the module doc).

    Parameters
    ----------
    path : the store folder
    label, group : kept columns of the store (group: grouped outer folds)
    strategies : sequence of str, default=("early", "weighted", "late", "stacking")
        A strategy that cannot stream (the neural heads, ``auto``...) is an error.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        Learned weights of ``late`` and ``weighted`` are fitted on streamed inner folds;
        ``early``'s fall back to equal ones (recorded in ``weights_fallback``).
    cv : int or "loso" or dict, default=5
        Each row must be tested in exactly one fold (no repeated splits).
    epochs : int or None, default=None
        Passes of mini-batch steps over the training rows. None: 2, or more on a small
        store, so that every model takes at least :data:`MIN_STEPS` steps (at most 50
        passes).
    batch_size : int or None, default=None
        Rows per step; None: :func:`auto_batch` (512 on large stores).
    inner_cv : int, default=3
        Inner folds of learned weights and stacking's meta level (in memory: 5 for the
        out-of-fold probabilities, 3 for weighted's weight grid; streamed: one set of 3
        serves both, each inner fold's models costing a share of every pass).
    scheduler : None, "local" or a Dask scheduler address, optional
        Run the outer folds as Dask tasks, one per fold: each worker reads the store from
        its path (every worker must see it, as with ``extract``) and sends back its test
        rows' predictions; no feature is shipped. Results equal the one-process run's.
    n_workers : int, optional
        Workers of a ``"local"`` cluster.

    Returns
    -------
    EvaluationResult (its ``path`` is ``"out-of-core"``)
    """
    if epochs is not None and (not isinstance(epochs, (int, np.integer))
                               or isinstance(epochs, bool) or epochs < 1):
        raise InputError(f"epochs must be an int >= 1 or None; got {epochs!r}")
    if not isinstance(inner_cv, (int, np.integer)) or isinstance(inner_cv, bool) \
            or inner_cv < 2:
        raise InputError(f"inner_cv must be an int >= 2; got {inner_cv!r}")
    from ..distributed import resolve_scheduler

    job = {"path": str(Path(path).resolve()), "label": label, "group": group, "cv": cv,
           "random_state": random_state, "modalities": modalities,
           "strategies": list(strategies), "weights": weights, "epochs": epochs,
           "batch_size": batch_size, "learning_rate": learning_rate, "inner_cv": int(inner_cv)}
    plan = _plan(job)
    address = resolve_scheduler(scheduler)
    if address is None:
        preds, seconds, per_fold = _fit_predict(plan, job, range(plan["n_folds"]), progress)
    else:
        preds, seconds, per_fold = _folds_on_dask(plan, job, address, n_workers, progress)
    stream, configs, y = plan["stream"], plan["configs"], plan["y"]
    rows = _rows(configs, per_fold, preds, y, plan["fold_of_row"], plan["n_folds"], seconds)
    return EvaluationResult(len(y), len(plan["classes"]), plan["classes"].tolist(),
                            plan["cv_info"], rows, preds, y, [], 0.0, [],
                            dict(sorted((m, stream.header["encoders"][m]["name"])
                                        for m in stream.modalities)),
                            random_state, None, path=OUT_OF_CORE)


def _plan(job: Mapping[str, Any]) -> dict[str, Any]:
    """Everything the folds share, from the store's header and columns alone: targets,
    folds, configurations, steps. A pure function of ``job`` (a Dask worker computes the
    same plan from the store it reads)."""
    stream = StoreStream(job["path"], job["modalities"])
    mods = stream.modalities
    classes, y, groups = read_targets(stream, job["label"], job["group"])
    if len(classes) < 2:
        raise InputError(f"column {job['label']!r} holds a single class; at least 2 are needed")
    splits, cv_info = make_splits(y, groups, job["cv"], job["random_state"])
    fold_of_row = np.full(len(y), -1, dtype=np.int16)
    for f, (_, test) in enumerate(splits):
        if (fold_of_row[test] >= 0).any():
            raise InputError("out-of-core cross-validation tests each row once; repeated "
                             "splits are not supported (use an int cv or 'loso')")
        fold_of_row[test] = f
    del splits
    n_folds = int(fold_of_row.max()) + 1
    configs = _configs(mods, job["strategies"], job["weights"])
    n_train = [int((fold_of_row != f).sum()) for f in range(n_folds)]
    batch_size = auto_batch(min(n_train), job["batch_size"])
    epochs = job["epochs"] or auto_epochs(min(n_train), batch_size)
    return {"stream": stream, "classes": classes, "y": y, "groups": groups,
            "fold_of_row": fold_of_row, "n_folds": n_folds, "cv_info": cv_info,
            "configs": configs, "n_train": n_train, "batch_size": batch_size,
            "epochs": int(epochs)}


def _fit_predict(plan: Mapping[str, Any], job: Mapping[str, Any], folds: Any,
                 progress: Callable[[str, int, int], None] | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[int, Any]]:
    """Fit the models of ``folds`` shard by shard and predict their test rows: every
    row's prediction per configuration (-1 for rows of other folds), seconds, and per
    fold the weights used and the fallback notes."""
    folds = list(folds)
    fit = StreamedFit(plan["stream"], plan["classes"], plan["y"], plan["groups"],
                      plan["fold_of_row"], plan["n_folds"], plan["configs"],
                      batch_size=plan["batch_size"], epochs=plan["epochs"],
                      learning_rate=job["learning_rate"], random_state=job["random_state"],
                      inner_cv=job.get("inner_cv", 3)).fit(folds, progress)
    preds = fit.predict(folds, progress)
    return preds, fit.seconds, {f: (fit.weights[f], fit.notes[f]) for f in folds}


def _fold_task(job: Mapping[str, Any], fold: int) -> dict[str, Any]:
    """One outer fold on a Dask worker: the worker reads the store itself (shared
    storage) and sends back its test rows' predictions only."""
    plan = _plan(job)
    preds, seconds, per_fold = _fit_predict(plan, job, [fold])
    test = plan["fold_of_row"] == fold
    return {"fold": fold, "preds": {k: v[test] for k, v in preds.items()},
            "seconds": seconds, "per_fold": per_fold}


def _folds_on_dask(plan: Mapping[str, Any], job: Mapping[str, Any], address: str,
                   n_workers: int | None, progress: Callable[[str, int, int], None] | None
                   ) -> tuple[dict[str, np.ndarray], dict[str, float], dict[int, Any]]:
    """One task per outer fold. A task carries ``job`` (the store's path and the run's
    arguments: a few hundred bytes), never the features; a task rerun after a lost
    worker computes the same result."""
    from distributed import as_completed

    from ..distributed import dask_client

    y, fold_of_row = plan["y"], plan["fold_of_row"]
    preds = {c.name: np.full(len(y), -1, dtype=np.int32) for c in plan["configs"]}
    seconds = {c.name: 0.0 for c in plan["configs"]}
    per_fold: dict[int, Any] = {}
    with dask_client(address, n_workers=n_workers) as client:
        futures = [client.submit(_fold_task, job, f, pure=False,
                                 key=f"mmfuse-streamed-fold-{f}-{uuid.uuid4().hex[:8]}")
                   for f in range(plan["n_folds"])]
        for done, future in enumerate(as_completed(futures)):
            out = future.result()
            test = fold_of_row == out["fold"]
            for name, p in out["preds"].items():
                preds[name][test] = p
            for name, secs in out["seconds"].items():
                seconds[name] += secs
            per_fold.update(out["per_fold"])
            if progress is not None:
                progress("folds on the cluster", done + 1, plan["n_folds"])
    return preds, seconds, per_fold


def _rows(configs: Sequence[Any], per_fold: Mapping[int, Any],
          preds: Mapping[str, np.ndarray], y: np.ndarray, fold_of_row: np.ndarray,
          n_folds: int, seconds: Mapping[str, float]) -> list[Row]:
    rows = []
    for c in configs:
        acc, f1 = [], []
        for f in range(n_folds):
            test = fold_of_row == f
            p, t = preds[c.name][test], y[test]
            acc.append(float(np.mean(p == t)))
            f1.append(float(f1_score(t, p, average="macro", labels=np.unique(t),
                                     zero_division=0)))
        mean, ci = mean_ci95(acc)
        weighed = c.kind == "fused" and (kind_of(c) in ("pool", "sum")
                                       or learns(c, c.modalities))
        fw = [dict(per_fold[f][0][c.name]) if weighed and per_fold[f][0].get(c.name)
              else None for f in range(n_folds)]
        notes = [per_fold[f][1].get(c.name) for f in range(n_folds)]
        given = [w for w in fw if w is not None]
        mean_w = ({m: float(np.mean([w.get(m, 0.0) for w in given])) for m in given[0]}
                  if given else None)
        rows.append(Row(c.name, c.kind, list(c.modalities),
                        None if c.kind == "single" else c.fusion,
                        c.weights if isinstance(c.weights, (str, type(None)))
                        else dict(c.weights), mean, ci, float(np.mean(f1)),
                        round(seconds[c.name], 3), acc, mean_w, [], f1, fw, notes))
    return rows
