"""The passes of a streamed fit: every outer fold's models fitted shard by shard, the
meta levels and learned weights on streamed out-of-fold probabilities, and the test rows'
predictions (used by :func:`~mmfuse.evaluate.streamed.evaluate_store` per outer fold and
by :func:`~mmfuse.features.train.train_store` with one fold that trains on every row).

A fold's training rows are split into inner folds (grouped and stratified like the outer
ones: :func:`~mmfuse.splits.inner_splits`) when one of its configurations learns from
out-of-fold predictions:

- ``late`` with ``cv``/``relative`` weights and ``stacking``: each modality's inner
  experts are streamed in the same passes as the outer models; one more pass predicts
  every training row with the expert of the inner fold that held it out (the out-of-fold
  probabilities: rows x classes per modality, kept in memory, or in a temporary file above
  :data:`OOF_MEMORY_BYTES`; on a fold with more than :data:`META_MAX_ROWS` training rows,
  only for a seeded uniform sample of that many, the rows the meta level then learns
  from); the strategy's own meta level is fitted on them
  (:meth:`~mmfuse.fusion.base.FusionStrategy.fit_meta`: late's weights, stacking's
  meta-model with its one-standard-error fallback) and predicts, as in memory, from the
  inner experts' probabilities, averaged over the inner folds;
- ``weighted`` with ``relative`` weights: :func:`~mmfuse.fusion.weights.relative_weights`
  on the same out-of-fold probabilities; with ``cv`` weights: one model per point of the
  weight grid and inner fold (:func:`~mmfuse.fusion.weighted.weight_grid`), scored on
  its inner test rows, the point chosen by the one-standard-error rule
  (:func:`~mmfuse.fusion.weighted.grid_choice`). Its model is then fitted with the chosen
  weights in a second series of passes.

Every model of an inner fold is standardised by its inner training rows' statistics, as in
memory (computed in the same pass as the outer folds': :func:`~mmfuse.features.stream.fold_scalers`);
the rows are read standardised by their outer fold and moved to the inner fold's scale
(:meth:`~mmfuse.features.stream.FoldScalers.to_inner`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..features.stream import StoreStream, fold_scalers
from ..fusion.streamed import STREAMED, StreamedSoftmax, design, pool_late

#: the weights learned from inner folds
LEARNED = ("cv", "relative")
#: out-of-fold probabilities taking more bytes than this are kept in a temporary file
OOF_MEMORY_BYTES = 256 * 2**20
#: the meta levels and learned weights are fitted on at most this many out-of-fold rows of
#: a fold (a seeded uniform sample above it): they have a few numbers per modality and
#: class, and their memory then stays bounded whatever the store's size
META_MAX_ROWS = 100_000
FALLBACK = "out-of-core: learned weights are not fitted when streaming; equal weights"

Progress = Callable[[str, int, int], None]


def kind_of(c: Any) -> str:
    """"single", or how the config's strategy streams (:data:`STREAMED`)."""
    return "single" if c.kind == "single" else STREAMED[c.fusion]


def spec_of(c: Any, modalities: Sequence[str]) -> Any:
    """A config's weights: a normalised dict, ``"equal"``, ``"cv"`` or ``"relative"``."""
    from .._errors import InputError

    if isinstance(c.weights, Mapping):
        total = sum(float(c.weights.get(m, 0.0)) for m in modalities)
        if total <= 0:
            raise InputError(f"{c.name}: weights must have a positive sum; got {c.weights}")
        return {m: float(c.weights.get(m, 0.0)) / total for m in modalities}
    if c.kind == "baseline" or c.weights in (None, "equal"):
        return "equal"
    return c.weights


def learns(c: Any, modalities: Sequence[str]) -> bool:
    """Whether the config learns from inner folds when streamed."""
    kind = kind_of(c)
    return kind == "meta" or (kind in ("pool", "sum") and spec_of(c, modalities) in LEARNED)


class StreamedFit:
    """The models of some outer folds of one streamed run (see the module doc).

    ``fold_of_row[i]`` is the fold that tests row ``i`` (-1: none, it trains in every
    fold). After :meth:`fit`, per fold ``f``: ``scalers`` (fold ``f``'s standardisation),
    ``models[f]`` (``"single:<m>"`` and the fixed-weight designs), ``inner_models[f]``
    (``(j, "single:<m>")``), ``metas[f]`` (fitted strategies by config name),
    ``stage2[f]`` (models fitted with learned weights), ``weights[f]`` and ``notes[f]``
    (per config name: the weights used, and why learned ones fell back).
    """

    def __init__(self, stream: StoreStream, classes: np.ndarray, y: np.ndarray,
                 groups: np.ndarray | None, fold_of_row: np.ndarray, n_folds: int,
                 configs: Sequence[Any], *, batch_size: int, epochs: int,
                 learning_rate: float, random_state: Any, inner_cv: int = 3):
        self.stream, self.classes, self.y, self.groups = stream, classes, y, groups
        self.fold_of_row, self.n_folds, self.configs = fold_of_row, n_folds, list(configs)
        self.batch_size, self.epochs, self.learning_rate = batch_size, epochs, learning_rate
        self.random_state, self.inner_cv = random_state, inner_cv
        self.mods = stream.modalities
        self.seed = 0 if random_state is None else int(random_state)
        self.seconds = {c.name: 0.0 for c in self.configs}
        self.learned = [c for c in self.configs if learns(c, self.mods)]

    # -- setup -------------------------------------------------------------------------
    def _model(self, f: int, *tag: int) -> StreamedSoftmax:
        return StreamedSoftmax(learning_rate=self.learning_rate, batch_size=self.batch_size,
                               random_state=[self.seed, f, *tag])

    def _setup(self, folds: Sequence[int]) -> None:
        from ..fusion.weighted import weight_grid
        from ..splits import fallback_reason, inner_splits

        n = len(self.y)
        self.models, self.inner_models, self.metas, self.stage2 = {}, {}, {}, {}
        self.weights, self.notes, self.inner, self.n_inner = {}, {}, {}, {}
        self.n_train, self.inner_train, self.grids, self.pos = {}, {}, {}, {}
        self.meta_rows: dict[int, np.ndarray] = {}
        self.grid = weight_grid(len(self.mods))
        self.grid_configs = [c for c in self.learned if kind_of(c) == "sum"
                             and spec_of(c, self.mods) == "cv"]
        self.oof_configs = [c for c in self.learned if c not in self.grid_configs]
        for f in folds:
            train = np.flatnonzero(self.fold_of_row != f)
            self.n_train[f] = len(train)
            keys = [f"single:{m}" for m in self.mods] + [
                c.name for c in self.configs
                if kind_of(c) in ("concat", "sum") and not learns(c, self.mods)]
            self.models[f] = {k: self._model(f, i) for i, k in enumerate(keys)}
            self.weights[f], self.notes[f] = {}, {}
            for c in self.configs:
                spec = spec_of(c, self.mods)
                if kind_of(c) == "concat" and spec in LEARNED:
                    self.notes[f][c.name] = FALLBACK
                if isinstance(spec, dict):
                    self.weights[f][c.name] = spec
                elif not learns(c, self.mods) or kind_of(c) == "concat":
                    self.weights[f][c.name] = {m: 1.0 / len(self.mods) for m in self.mods}
            self.metas[f], self.stage2[f], self.inner_models[f] = {}, {}, {}
            self.n_inner[f] = 0
            if not self.learned:
                continue
            splits = inner_splits(self.y, self.groups, self.inner_cv, self.random_state,
                                  rows=train)
            if not splits:  # as a strategy without inner folds: equal weights
                why = fallback_reason(self.y[train], None if self.groups is None
                                      else self.groups[train])
                for c in self.learned:
                    self.notes[f][c.name] = why
                    self.weights[f][c.name] = {m: 1.0 / len(self.mods) for m in self.mods}
                continue
            inner = np.full(n, -1, dtype=np.int8)
            for j, (_, test) in enumerate(splits):
                inner[train[test]] = j
            self.inner[f], self.n_inner[f] = inner, len(splits)
            self.inner_train[f] = [int(len(train) - len(te)) for _, te in splits]
            meta_rows = train
            if len(train) > META_MAX_ROWS:
                pick = np.random.default_rng([self.seed, f]).choice(len(train), META_MAX_ROWS,
                                                                    replace=False)
                meta_rows = train[np.sort(pick)]
            self.meta_rows[f] = meta_rows
            pos = np.full(n, -1, dtype=np.int64)  # a row's place in the out-of-fold arrays
            pos[meta_rows] = np.arange(len(meta_rows))
            self.pos[f] = pos
            for j in range(len(splits)):
                if self.oof_configs:
                    for i, m in enumerate(self.mods):
                        self.inner_models[f][j, f"single:{m}"] = self._model(f, 100 + j, i)
                for c in self.grid_configs:
                    for i in range(len(self.grid[0])):
                        self.inner_models[f][j, f"grid:{c.name}:{i}"] = self._model(
                            f, 200 + j, 1000 * self.configs.index(c) + i)
            self.grids[f] = {c.name: np.zeros((len(self.grid[0]), len(splits), 2))
                             for c in self.grid_configs}

    # -- the passes --------------------------------------------------------------------
    def fit(self, folds: Sequence[int], progress: Progress | None = None) -> "StreamedFit":
        folds = list(folds)
        self._setup(folds)

        def tick(stage: str) -> Callable[[int, int], None] | None:
            return None if progress is None else (lambda d, t: progress(stage, d, t))

        self.scalers = fold_scalers(self.stream, self.fold_of_row, self.n_folds,
                                    tick("standardising"),
                                    inner={f: (self.inner[f], self.n_inner[f])
                                           for f in folds if self.n_inner[f]})
        self._passes(folds, 1, progress)
        inner_folds = [f for f in folds if self.n_inner[f]]
        if inner_folds:
            self._out_of_fold(inner_folds, progress)
        self._stage2_setup(folds)
        if any(self.stage2[f] for f in folds):
            self._passes(folds, 2, progress)
        return self

    def _blocks(self, shard: Any, f: int, rows: np.ndarray
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        blocks = {m: self.scalers.transform(m, f, shard.views[m][rows]) for m in self.mods}
        return blocks, {m: shard.present[m][rows] for m in self.mods}

    def _to_inner(self, f: int, j: int, blocks: Mapping[str, np.ndarray],
                  present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows standardised by outer fold ``f``, standardised by its inner fold ``j``."""
        return {m: self.scalers.to_inner(m, f, j, b, present[m]) for m, b in blocks.items()}

    def _design(self, c: Any, blocks: Mapping[str, np.ndarray],
                present: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
        kind = kind_of(c)
        if kind == "concat":  # early fusion's weights: each block times sqrt(M w_m)
            factors = {m: np.sqrt(len(self.mods) * weights[m]) for m in self.mods}
            if not np.allclose(list(factors.values()), 1.0):
                blocks = {m: b * np.float32(factors[m]) for m, b in blocks.items()}
            return design(kind, blocks)
        # weighted's sum rescales rows that miss a modality; the seed's does not
        return design(kind, blocks, weights, None if c.kind == "baseline" else present)

    def _fold_blocks(self, shard: Any, folds: Sequence[int], test: bool = False) -> Any:
        """Per fold of ``folds`` with rows in ``shard``: ``(fold, mask, blocks, present)``,
        the mask of its training rows in the shard (``test``: of its test rows) and their
        standardised blocks and presence (:meth:`_blocks`)."""
        fold = self.fold_of_row[shard.rows]
        for f in folds:
            rows = fold == f if test else fold != f
            if rows.any():
                yield (f, rows, *self._blocks(shard, f, rows))

    def _passes(self, folds: Sequence[int], stage: int, progress: Progress | None) -> None:
        index = np.arange(len(self.classes))
        rng = np.random.default_rng(self.random_state if stage == 1 else [self.seed, stage])
        stream = self.stream
        for epoch in range(self.epochs):
            for done, shard in enumerate(stream.shards(rng.permutation(stream.n_shards))):
                for f, train, blocks, present in self._fold_blocks(shard, folds):
                    y = self.y[shard.rows[train]].astype(np.intp)
                    if stage == 1:
                        self._fit_outer(f, blocks, present, y, index)
                        if self.n_inner[f]:
                            self._fit_inner(f, shard.rows[train], blocks, present, y, index)
                    else:
                        for name, model in self.stage2[f].items():
                            c = next(c for c in self.configs if c.name == name)
                            t = time.perf_counter()
                            model.partial_fit(self._design(c, blocks, present,
                                                           self.weights[f][name]),
                                              y, classes=index, n_train=self.n_train[f])
                            self.seconds[name] += time.perf_counter() - t
                if progress is not None:
                    what = "fitting" if stage == 1 else "fitting with learned weights"
                    progress(f"{what} (pass {epoch + 1} of {self.epochs})", done + 1,
                             stream.n_shards)

    def _fit_outer(self, f: int, blocks: Mapping[str, np.ndarray],
                   present: Mapping[str, np.ndarray], y: np.ndarray, index: np.ndarray) -> None:
        models = self.models[f]
        for m, z in blocks.items():
            t = time.perf_counter()
            if present[m].any():
                models[f"single:{m}"].partial_fit(z[present[m]], y[present[m]], classes=index,
                                                  n_train=self.n_train[f])
            secs = time.perf_counter() - t
            for c in self.configs:
                if c.modalities == (m,) or kind_of(c) in ("pool", "meta"):
                    self.seconds[c.name] += secs
        for c in self.configs:
            if c.name in models:
                t = time.perf_counter()
                models[c.name].partial_fit(self._design(c, blocks, present,
                                                        self.weights[f][c.name]),
                                           y, classes=index, n_train=self.n_train[f])
                self.seconds[c.name] += time.perf_counter() - t

    def _fit_inner(self, f: int, rows: np.ndarray, blocks: Mapping[str, np.ndarray],
                   present: Mapping[str, np.ndarray], y: np.ndarray, index: np.ndarray) -> None:
        held = self.inner[f][rows]
        for j in range(self.n_inner[f]):
            keep = held != j
            if not keep.any():
                continue
            t = time.perf_counter()
            sub_present = {m: p[keep] for m, p in present.items()}
            sub = self._to_inner(f, j, {m: b[keep] for m, b in blocks.items()}, sub_present)
            for m in self.mods if self.oof_configs else ():
                has = sub_present[m]
                if has.any():
                    self.inner_models[f][j, f"single:{m}"].partial_fit(
                        sub[m][has], y[keep][has], classes=index,
                        n_train=self.inner_train[f][j])
            secs = time.perf_counter() - t
            for c in self.oof_configs:
                self.seconds[c.name] += secs
            for c in self.grid_configs:
                t = time.perf_counter()
                for i, w in enumerate(self.grid[0]):
                    x = self._design(c, sub, sub_present, dict(zip(self.mods, w)))
                    self.inner_models[f][j, f"grid:{c.name}:{i}"].partial_fit(
                        x, y[keep], classes=index, n_train=self.inner_train[f][j])
                self.seconds[c.name] += time.perf_counter() - t

    def _inner_probas(self, f: int, j: int, blocks: Mapping[str, np.ndarray],
                      present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inner fold ``j``'s expert probabilities (NaN where the modality is absent) for
        rows standardised by outer fold ``f``."""
        out = {}
        for m in self.mods:
            z = self.scalers.to_inner(m, f, j, blocks[m], present[m])
            p = self.inner_models[f][j, f"single:{m}"].predict_proba(z).astype(float)
            p[~present[m]] = np.nan
            out[m] = p
        return out

    def _out_of_fold(self, folds: Sequence[int], progress: Progress | None) -> None:
        """One pass: each training row predicted by the inner models that held it out
        (the out-of-fold probabilities, the grid models' inner accuracies); then the meta
        levels and learned weights, fold by fold."""
        k = len(self.classes)
        size = sum(len(self.meta_rows[f]) for f in folds) * k * len(self.mods) * 4
        tmp = tempfile.TemporaryDirectory(prefix="mmfuse-oof-") \
            if size > OOF_MEMORY_BYTES and self.oof_configs else None
        try:
            oof: dict[int, dict[str, np.ndarray]] = {}
            for f in folds if self.oof_configs else ():
                oof[f] = {}
                for m in self.mods:
                    shape = (len(self.meta_rows[f]), k)
                    oof[f][m] = (np.full(shape, np.nan, dtype=np.float32) if tmp is None else
                                 np.lib.format.open_memmap(f"{tmp.name}/{f}-{m}.npy", "w+",
                                                           np.float32, shape))
            for done, shard in enumerate(self.stream.shards()):
                for f, train, blocks, present in self._fold_blocks(shard, folds):
                    rows = shard.rows[train]
                    held, y = self.inner[f][rows], self.y[rows]
                    for j in range(self.n_inner[f]):
                        sel = held == j
                        if not sel.any():
                            continue
                        sub = {m: b[sel] for m, b in blocks.items()}
                        sub_present = {m: p[sel] for m, p in present.items()}
                        at = self.pos[f][rows[sel]]
                        if self.oof_configs and (at >= 0).any():
                            kept = at >= 0  # rows of the meta level's sample
                            for m, p in self._inner_probas(
                                    f, j, {m: b[kept] for m, b in sub.items()},
                                    {m: p[kept] for m, p in sub_present.items()}).items():
                                oof[f][m][at[kept]] = p
                        if self.grid_configs:
                            sub = self._to_inner(f, j, sub, sub_present)
                        for c in self.grid_configs:
                            for i, w in enumerate(self.grid[0]):
                                x = self._design(c, sub, sub_present, dict(zip(self.mods, w)))
                                pred = self.inner_models[f][j, f"grid:{c.name}:{i}"] \
                                    .predict_proba(x).argmax(axis=1)
                                self.grids[f][c.name][i, j] += (np.sum(pred == y[sel]),
                                                                int(sel.sum()))
                if progress is not None:
                    progress("out-of-fold predictions", done + 1, self.stream.n_shards)
            for f in folds:
                self._fit_meta(f, oof.get(f))
        finally:
            if tmp is not None:
                tmp.cleanup()

    def _fit_meta(self, f: int, oof: Mapping[str, np.ndarray] | None) -> None:
        from ..fusion.base import create_fusion
        from ..fusion.weighted import grid_choice
        from ..fusion.weights import relative_weights

        train = self.meta_rows[f]
        y = self.y[train]
        groups = None if self.groups is None else self.groups[train]
        probas = ({m: np.asarray(p, dtype=np.float64) for m, p in oof.items()}
                  if oof is not None else {})
        present = {m: ~np.isnan(p).any(axis=1) for m, p in probas.items()}
        for c in self.learned:
            t = time.perf_counter()
            kind, spec = kind_of(c), spec_of(c, self.mods)
            if kind in ("pool", "meta"):
                params = {"cv": self.inner_cv, "random_state": self.random_state}
                if kind == "pool":
                    params["weights"] = spec
                strategy = create_fusion(c.fusion, **params)
                strategy.fit_meta(probas, y, present, groups, n_classes=len(self.classes))
                self.metas[f][c.name] = strategy
                self.weights[f][c.name] = dict(getattr(strategy, "modality_weights_", None)
                                               or {})
            elif spec == "relative":
                self.weights[f][c.name] = relative_weights(probas, y)
            else:
                counts = self.grids[f][c.name]
                scores = counts[..., 0] / np.maximum(counts[..., 1], 1)
                self.weights[f][c.name] = dict(zip(self.mods, map(float, self.grid[0][
                    grid_choice(scores, self.grid[1])])))
            self.seconds[c.name] += time.perf_counter() - t

    def _stage2_setup(self, folds: Sequence[int]) -> None:
        for f in folds:
            for c in self.learned:
                if kind_of(c) == "sum":
                    self.stage2[f][c.name] = self._model(f, 300 + self.configs.index(c))

    # -- prediction --------------------------------------------------------------------
    def predict(self, folds: Sequence[int], progress: Progress | None = None
                ) -> dict[str, np.ndarray]:
        """Every row's predicted class index per configuration (-1 for rows of other
        folds), each row by the models of the fold that tests it."""
        preds = {c.name: np.full(len(self.y), -1, dtype=np.int32) for c in self.configs}
        for done, shard in enumerate(self.stream.shards()):
            for f, test, blocks, present in self._fold_blocks(shard, folds, test=True):
                for name, p in self.predict_proba(f, blocks, present).items():
                    preds[name][shard.rows[test]] = p.argmax(axis=1)
            if progress is not None:
                progress("predicting", done + 1, self.stream.n_shards)
        return preds

    def predict_proba(self, f: int, blocks: Mapping[str, np.ndarray],
                      present: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Fold ``f``'s probabilities (or pooled log-scores) per configuration for
        standardised ``blocks``."""
        from ..fusion.stacking import fallback_modalities

        out: dict[str, np.ndarray] = {}
        models = self.models[f]
        probas = {m: models[f"single:{m}"].predict_proba(z) for m, z in blocks.items()
                  if hasattr(models[f"single:{m}"], "coef_")}
        inner = None
        for c in self.configs:
            t = time.perf_counter()
            kind = kind_of(c)
            if kind == "single":
                out[c.name] = probas[c.modalities[0]]
            elif c.name in self.metas[f]:
                meta = self.metas[f][c.name]
                # as in memory: the simple combination stacking fell back to predicts from
                # experts fitted on every training row (fallback_modalities), the meta
                # level from the inner folds' experts, averaged over them
                full = fallback_modalities(getattr(meta, "meta_fallback_", None), self.mods)
                if inner is None and len(full) < len(self.mods):
                    inner = [self._inner_probas(f, j, blocks, present)
                             for j in range(self.n_inner[f])]
                if full:
                    mixed = {m: np.where(present[m][:, None], probas[m], np.nan) if m in full
                             else np.mean([p[m] for p in inner], axis=0) for m in self.mods}
                    out[c.name] = meta.predict_meta(mixed, present)
                else:
                    out[c.name] = np.mean([meta.predict_meta(p, present) for p in inner],
                                          axis=0)
            elif kind in ("pool", "meta"):
                out[c.name] = pool_late(probas, present, self.weights[f][c.name])
            else:
                model = self.stage2[f].get(c.name) or models[c.name]
                out[c.name] = model.predict_proba(self._design(c, blocks, present,
                                                               self.weights[f][c.name]))
            self.seconds[c.name] += time.perf_counter() - t
        return out
