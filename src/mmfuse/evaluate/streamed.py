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
``early``, ``late`` and ``weighted`` (fixed weights: equal or a dict) and the
``seed-baseline``; learned weights (``cv``, ``relative``) are not fitted out of core: the
row falls back to equal weights and says so in ``weights_fallback``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from .._errors import InputError
from ..features.stream import StoreStream, fold_scalers
from ..fusion.streamed import STREAMABLE, STREAMED, StreamedSoftmax, design, pool_late
from .crossval import DEFAULT_STRATEGIES, EvaluationResult, Row, make_configs
from .folds import make_splits, mean_ci95

OUT_OF_CORE, IN_MEMORY = "out-of-core", "in-memory"
#: above this many bytes of float32 features, ``--features`` streams by default
DEFAULT_THRESHOLD_BYTES = 2 * 2**30
FALLBACK = "out-of-core: learned weights are not fitted when streaming; equal weights"


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


def _fixed(c: Any, modalities: Sequence[str]) -> tuple[dict[str, float], str | None]:
    """A config's fixed weights, and the fallback note when it asked for learned ones."""
    if isinstance(c.weights, Mapping):
        total = sum(float(c.weights.get(m, 0.0)) for m in modalities)
        if total <= 0:
            raise InputError(f"{c.name}: weights must have a positive sum; got {c.weights}")
        return {m: float(c.weights.get(m, 0.0)) / total for m in modalities}, None
    equal = {m: 1.0 / len(modalities) for m in modalities}
    return equal, (None if c.weights in (None, "equal") or c.kind == "baseline" else FALLBACK)


def evaluate_store(path: str | os.PathLike, label: str, group: str | None = None, *,
                   strategies: Sequence[str] = DEFAULT_STRATEGIES, weights: Any = "cv",
                   cv: Any = 5, random_state: Any = 0, modalities: Sequence[str] | None = None,
                   epochs: int | None = None, batch_size: int | None = None, learning_rate: float = 0.002,
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
        ``stacking`` (and any other strategy that cannot stream) is an error; the CLI
        drops it from its default list.
    weights : {"cv", "relative", "equal"} or dict, default="cv"
        Only fixed weights are used; learned ones fall back to equal (recorded).
    cv : int or "loso" or dict, default=5
        Each row must be tested in exactly one fold (no repeated splits).
    epochs : int or None, default=None
        Passes of mini-batch steps over the training rows. None: 2, or more on a small
        store, so that every model takes at least :data:`MIN_STEPS` steps (at most 50
        passes).
    batch_size : int or None, default=None
        Rows per step; None: :func:`auto_batch` (512 on large stores).
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
    from ..distributed import resolve_scheduler

    job = {"path": str(Path(path).resolve()), "label": label, "group": group, "cv": cv,
           "random_state": random_state, "modalities": modalities,
           "strategies": list(strategies), "weights": weights, "epochs": epochs,
           "batch_size": batch_size, "learning_rate": learning_rate}
    plan = _plan(job)
    address = resolve_scheduler(scheduler)
    if address is None:
        preds, seconds = _fit_predict(plan, job, range(plan["n_folds"]), progress)
    else:
        preds, seconds = _folds_on_dask(plan, job, address, n_workers, progress)
    stream, configs, y = plan["stream"], plan["configs"], plan["y"]
    rows = _rows(configs, plan["fixed"], preds, y, plan["fold_of_row"], plan["n_folds"],
                 seconds)
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
    return {"stream": stream, "classes": classes, "y": y, "fold_of_row": fold_of_row,
            "n_folds": n_folds, "cv_info": cv_info, "configs": configs,
            "fixed": {c.name: _fixed(c, mods) for c in configs if c.kind != "single"},
            "n_train": n_train, "batch_size": batch_size, "epochs": int(epochs)}


def _fit_predict(plan: Mapping[str, Any], job: Mapping[str, Any], folds: Any,
                 progress: Callable[[str, int, int], None] | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Fit the models of ``folds`` shard by shard and predict their test rows: every
    row's prediction per configuration (-1 for rows of other folds), and seconds."""
    stream, y, fold_of_row = plan["stream"], plan["y"], plan["fold_of_row"]
    configs, fixed, mods = plan["configs"], plan["fixed"], stream.modalities
    folds = list(folds)
    epochs = plan["epochs"]
    models = _new_models(configs, mods, plan["n_folds"], plan["batch_size"],
                         job["learning_rate"], job["random_state"])

    def tick(stage: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda d, t: progress(stage, d, t))

    scalers = fold_scalers(stream, fold_of_row, plan["n_folds"], tick("standardising"))
    rng = np.random.default_rng(job["random_state"])
    seconds = {c.name: 0.0 for c in configs}
    for epoch in range(epochs):
        for done, shard in enumerate(stream.shards(rng.permutation(stream.n_shards))):
            fold = fold_of_row[shard.rows]
            for f in folds:
                train = fold != f
                if not train.any():
                    continue
                blocks = {m: scalers.transform(m, f, shard.views[m][train]) for m in mods}
                present = {m: shard.present[m][train] for m in mods}
                _partial_fit(models[f], configs, fixed, blocks, present, y[shard.rows][train],
                             plan["classes"], plan["n_train"][f], seconds)
            if progress is not None:
                progress(f"fitting (pass {epoch + 1} of {epochs})", done + 1, stream.n_shards)
    preds = {c.name: np.full(len(y), -1, dtype=np.int32) for c in configs}
    for done, shard in enumerate(stream.shards()):
        fold = fold_of_row[shard.rows]
        for f in folds:
            test = fold == f
            if not test.any():
                continue
            blocks = {m: scalers.transform(m, f, shard.views[m][test]) for m in mods}
            present = {m: shard.present[m][test] for m in mods}
            for name, p in _predict(models[f], configs, fixed, blocks, present,
                                    seconds).items():
                preds[name][shard.rows[test]] = p
        if progress is not None:
            progress("predicting", done + 1, stream.n_shards)
    return preds, seconds


def _fold_task(job: Mapping[str, Any], fold: int) -> dict[str, Any]:
    """One outer fold on a Dask worker: the worker reads the store itself (shared
    storage) and sends back its test rows' predictions only."""
    plan = _plan(job)
    preds, seconds = _fit_predict(plan, job, [fold])
    test = plan["fold_of_row"] == fold
    return {"fold": fold, "preds": {k: v[test] for k, v in preds.items()},
            "seconds": seconds}


def _folds_on_dask(plan: Mapping[str, Any], job: Mapping[str, Any], address: str,
                   n_workers: int | None, progress: Callable[[str, int, int], None] | None
                   ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """One task per outer fold. A task carries ``job`` (the store's path and the run's
    arguments: a few hundred bytes), never the features; a task rerun after a lost
    worker computes the same result."""
    from distributed import as_completed

    from ..distributed import dask_client

    y, fold_of_row = plan["y"], plan["fold_of_row"]
    preds = {c.name: np.full(len(y), -1, dtype=np.int32) for c in plan["configs"]}
    seconds = {c.name: 0.0 for c in plan["configs"]}
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
            if progress is not None:
                progress("folds on the cluster", done + 1, plan["n_folds"])
    return preds, seconds


def _new_models(configs: Sequence[Any], mods: Sequence[str], n_folds: int, batch_size: int,
                learning_rate: float, random_state: Any) -> list[dict[str, StreamedSoftmax]]:
    seed = 0 if random_state is None else int(random_state)
    out = []
    for f in range(n_folds):
        keys = [f"single:{m}" for m in mods] + [c.name for c in configs
                                                 if _kind(c) not in ("single", "pool")]
        out.append({k: StreamedSoftmax(learning_rate=learning_rate, batch_size=batch_size,
                                       random_state=[seed, f, i]) for i, k in enumerate(keys)})
    return out


def _kind(c: Any) -> str:
    """"single", or how the config's strategy streams (:data:`STREAMED`)."""
    return "single" if c.kind == "single" else STREAMED[c.fusion]


def _features(c: Any, fixed: Mapping[str, Any], blocks: Mapping[str, np.ndarray]) -> np.ndarray:
    kind = _kind(c)
    return design(kind, blocks, fixed[c.name][0] if kind == "sum" else None)


def _partial_fit(models: Mapping[str, StreamedSoftmax], configs: Sequence[Any],
                 fixed: Mapping[str, Any], blocks: Mapping[str, np.ndarray],
                 present: Mapping[str, np.ndarray], y: np.ndarray, classes: np.ndarray,
                 n_train: int, seconds: dict[str, float]) -> None:
    index = np.arange(len(classes))
    y = y.astype(np.intp)
    for m, z in blocks.items():
        t = time.perf_counter()
        if present[m].any():
            models[f"single:{m}"].partial_fit(z[present[m]], y[present[m]], classes=index,
                                              n_train=n_train)
        secs = time.perf_counter() - t
        for c in configs:
            if c.modalities == (m,) or _kind(c) == "pool":
                seconds[c.name] += secs
    for c in configs:
        if _kind(c) in ("single", "pool"):
            continue
        t = time.perf_counter()
        models[c.name].partial_fit(_features(c, fixed, blocks), y, classes=index,
                                   n_train=n_train)
        seconds[c.name] += time.perf_counter() - t


def _predict(models: Mapping[str, StreamedSoftmax], configs: Sequence[Any],
             fixed: Mapping[str, Any], blocks: Mapping[str, np.ndarray],
             present: Mapping[str, np.ndarray], seconds: dict[str, float]
             ) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    probas = {}
    for m, z in blocks.items():
        if f"single:{m}" in models and hasattr(models[f"single:{m}"], "coef_"):
            probas[m] = models[f"single:{m}"].predict_proba(z)
    for c in configs:
        t = time.perf_counter()
        if _kind(c) == "single":
            out[c.name] = probas[c.modalities[0]].argmax(axis=1)
        elif _kind(c) == "pool":
            out[c.name] = pool_late({m: probas[m] for m in probas},
                                    {m: present[m] for m in probas},
                                    fixed[c.name][0]).argmax(axis=1)
        else:
            out[c.name] = models[c.name].predict_proba(_features(c, fixed, blocks)).argmax(axis=1)
        seconds[c.name] += time.perf_counter() - t
    return out


def _rows(configs: Sequence[Any], fixed: Mapping[str, Any], preds: Mapping[str, np.ndarray],
          y: np.ndarray, fold_of_row: np.ndarray, n_folds: int, seconds: Mapping[str, float]
          ) -> list[Row]:
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
        w, note = fixed.get(c.name, (None, None))
        weighed = c.kind == "fused" and _kind(c) in ("pool", "sum")
        fw = [dict(w) if w is not None and weighed else None] * n_folds
        rows.append(Row(c.name, c.kind, list(c.modalities),
                        None if c.kind == "single" else c.fusion,
                        c.weights if isinstance(c.weights, (str, type(None)))
                        else dict(c.weights), mean, ci, float(np.mean(f1)),
                        round(seconds[c.name], 3), acc,
                        None if fw[0] is None else dict(w), [], f1, fw, [note] * n_folds))
    return rows
