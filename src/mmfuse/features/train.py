"""Training a model on a whole feature store out of core (``mmfuse train --features STORE
--out-of-core``): any strategy that streams (:data:`~mmfuse.fusion.streamed.STREAMABLE`:
early, late, weighted, stacking, the seed baseline), fitted shard by shard.

The fit is the streamed evaluation's (:class:`~mmfuse.evaluate.streamed_fit.StreamedFit`)
with one fold that trains on every row: learned weights and stacking's meta level come
from streamed inner folds (grouped by ``group`` when given). The model is an ordinary
:class:`~mmfuse.MultimodalClassifier`: its structure comes from fitting the same strategy
on a few rows of every class, and every learned number is then replaced by the streamed
one (standardisation over all the store's rows that have the modality, the classifiers,
the experts of the inner folds, the meta level, the weights, the class priors). It saves,
loads and predicts like any other model.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._errors import InputError


def _sample(stream: Any, y: np.ndarray, per_class: int = 3) -> np.ndarray:
    """Row numbers of up to ``per_class`` rows of every class that have every modality
    (read shard by shard until each class has them)."""
    need = {c: per_class for c in np.unique(y)}
    rows: list[int] = []
    for shard in stream.shards():
        full = np.all([shard.present[m] for m in stream.modalities], axis=0)
        for r in shard.rows[full]:
            c = y[r]
            if need.get(c, 0) > 0:
                rows.append(int(r))
                need[c] -= 1
        if not any(need.values()):
            break
    return np.asarray(sorted(rows))


def _rows_views(stream: Any, rows: np.ndarray) -> dict[str, np.ndarray]:
    per = stream.header["rows_per_shard"]
    out = {m: np.empty((len(rows), d), dtype=np.float32) for m, d in stream.dims.items()}
    for index in np.unique(rows // per):
        shard = stream.shard(int(index))
        pick = np.flatnonzero(rows // per == index)
        local = np.searchsorted(shard.rows, rows[pick])
        for m in stream.modalities:
            out[m][pick] = shard.views[m][local]
    return out


def fit_store(path: str | os.PathLike, label: str, *, fusion: str,
              weights: Any = "cv", group: str | None = None, random_state: Any = 0,
              epochs: int | None = None, batch_size: int | None = None,
              learning_rate: float = 0.002, inner_cv: int = 3,
              progress: Callable[[str, int, int], None] | None = None) -> tuple[Any, Any]:
    """The streamed fit of ``fusion`` on every row: ``(StreamedFit, config)``."""
    from ..evaluate.crossval import make_configs
    from ..evaluate.streamed import auto_batch, auto_epochs, read_targets
    from ..evaluate.streamed_fit import StreamedFit
    from ..fusion.base import capabilities
    from ..fusion.streamed import STREAMABLE
    from .stream import StoreStream

    if fusion not in STREAMABLE:
        raise InputError(f"fusion {fusion!r} cannot be trained out of core; the streamed "
                         f"train fits {', '.join(STREAMABLE)} (or drop --out-of-core on a "
                         f"store that fits in memory)")
    stream = StoreStream(path)
    mods = stream.modalities
    if len(mods) < 2:
        raise InputError(f"feature store {str(stream.path)!r} holds one modality "
                         f"({mods[0]}); a streamed train fuses at least 2")
    classes, y, groups = read_targets(stream, label, group)
    if len(classes) < 2:
        raise InputError(f"column {label!r} holds a single class; at least 2 are needed")
    reference = bool(capabilities(fusion).get("reference"))
    config = next(c for c in make_configs(mods, [] if reference else [fusion], weights,
                                          singles=False, baseline=reference)
                  if c.fusion == fusion)
    if config.kind == "fused":  # the weights asked for (an evaluation's default may differ)
        config = dataclasses.replace(config, weights=weights)
    batch = auto_batch(len(y), batch_size)
    passes = auto_epochs(len(y), batch) if epochs is None else int(epochs)
    everyone = np.full(len(y), -1, dtype=np.int16)  # one fold, tested on no row
    fit = StreamedFit(stream, classes, y, groups, everyone, 1, [config], batch_size=batch,
                      epochs=passes, learning_rate=learning_rate, random_state=random_state,
                      inner_cv=inner_cv).fit([0], progress)
    unused = [m for m in mods if not hasattr(fit.models[0][f"single:{m}"], "coef_")]
    if unused:
        raise InputError(f"modality {unused[0]!r} is absent from every row of the store")
    return fit, config


def train_store(path: str | os.PathLike, label: str, *, fusion: str,
                weights: Any = "cv", group: str | None = None, random_state: Any = 0,
                epochs: int | None = None, batch_size: int | None = None,
                learning_rate: float = 0.002, inner_cv: int = 3,
                progress: Callable[[str, int, int], None] | None = None) -> Any:
    """Fit ``fusion`` on every row of the store at ``path``, streamed.

    Parameters
    ----------
    path : the store folder
    label : kept column with the labels
    fusion : a strategy that streams (``late``, ``early``, ``weighted``, ``stacking``,
        ``seed-baseline``)
    weights : {"cv", "relative", "equal"} or dict
        Late's and weighted's learned weights are fitted on streamed inner folds; early
        fusion's fall back to equal ones (``weights_fallback_`` says so).
    group : kept column with groups (grouped inner folds), optional
    epochs, batch_size, learning_rate, inner_cv : as in
        :func:`~mmfuse.evaluate.streamed.evaluate_store`

    Returns
    -------
    MultimodalClassifier, fitted; ``fit_path_ == "out-of-core"``
    """
    fit, config = fit_store(path, label, fusion=fusion, weights=weights, group=group,
                            random_state=random_state, epochs=epochs, batch_size=batch_size,
                            learning_rate=learning_rate, inner_cv=inner_cv, progress=progress)
    return export(fit, config, random_state)


def export(fit: Any, config: Any, random_state: Any = 0) -> Any:
    """The :class:`~mmfuse.MultimodalClassifier` of a one-fold :class:`StreamedFit` of
    ``config`` (see the module doc)."""
    from ..estimator import MultimodalClassifier
    from ..evaluate.streamed_fit import kind_of

    stream, mods, y, classes = fit.stream, fit.mods, fit.y, fit.classes
    rows = _sample(stream, y)
    asked = config.weights if config.kind == "fused" else "equal"
    model = MultimodalClassifier(encoders={m: "passthrough" for m in mods},
                                 fusion=config.fusion,
                                 weights=asked if isinstance(asked, Mapping) else "equal",
                                 random_state=random_state)
    with warnings.catch_warnings():  # a structure fitted on a few rows: nothing to warn of
        warnings.simplefilter("ignore")
        model.fit(_rows_views(stream, rows), classes[y[rows]])
    if list(model.classes_) != list(classes):
        raise InputError(f"every class needs a row with every modality; only "
                         f"{len(model.classes_)} of {len(classes)} classes have one")
    prior = np.bincount(y, minlength=len(classes)) / len(y)
    strategy = model.fusion_
    _Numbers(fit, config, prior, random_state).into(strategy, kind_of(config))
    strategy.class_prior_ = prior.copy()
    strategy.weights = asked
    model.set_params(weights=asked)
    note = fit.notes[0].get(config.name)
    model.weights_fallback_ = strategy.weights_fallback_ = note
    model.modality_weights_ = strategy.modality_weights_
    model.fit_path_ = "out-of-core"
    model.n_train_rows_ = int(len(y))
    return model


class _Numbers:
    """The streamed fit's numbers, put into a strategy fitted on a sample."""

    def __init__(self, fit: Any, config: Any, prior: np.ndarray, random_state: Any):
        self.fit, self.config, self.prior, self.random_state = fit, config, prior, random_state
        self.mods = fit.mods

    def _view_scaler(self, m: str, inner: int | None = None) -> Any:
        """Fold 0's scaler of view ``m`` (``inner``: that of its inner fold)."""
        from ..fusion.scaling import ViewScaler

        sc = ViewScaler()
        sc.sparse_ = False
        mean, scale = ((self.fit.scalers.mean[m][0], self.fit.scalers.scale[m][0])
                       if inner is None else self.fit.scalers.inner_scaler(m, 0, inner))
        sc.mean_, sc.scale_ = mean.copy(), scale.copy()
        return sc

    def _standard_scaler(self, fitted: Any, m: str) -> Any:
        fitted.mean_ = self.fit.scalers.mean[m][0].astype(fitted.mean_.dtype)
        fitted.scale_ = self.fit.scalers.scale[m][0].astype(fitted.scale_.dtype)
        fitted.var_ = fitted.scale_ ** 2
        fitted.n_samples_seen_ = len(self.fit.y)
        return fitted

    def _expert(self, softmax: Any, m: str, inner: int | None = None) -> Any:
        from ..fusion.experts import ModalityExpert

        e = ModalityExpert(None, self.random_state)
        e.n_classes_ = len(self.fit.classes)
        e.scaler_ = self._view_scaler(m, inner)
        e.prior_ = self.prior.copy()
        e.model_ = softmax.to_logistic()
        return e

    def into(self, strategy: Any, kind: str) -> None:
        fit, name, mods = self.fit, self.config.name, self.mods
        equal = {m: 1.0 / len(mods) for m in mods}
        if kind in ("pool", "meta"):
            outer = {m: self._expert(fit.models[0][f"single:{m}"], m) for m in mods}
            meta = fit.metas[0].get(name)
            if meta is None:  # fixed weights, or too few rows for inner folds
                self._without_meta(strategy, kind, outer, fit.weights[0].get(name, equal))
                return
            from ..fusion.experts import CrossFitExpert
            from ..fusion.stacking import fallback_modalities

            for key, value in vars(meta).items():
                if key.endswith("_") and key not in ("classes_", "modalities_"):
                    setattr(strategy, key, value)
            # as in memory: the combination stacking fell back to, fitted on every row
            full = fallback_modalities(getattr(meta, "meta_fallback_", None), mods)
            strategy.experts_ = {m: outer[m] if m in full else CrossFitExpert([
                self._expert(fit.inner_models[0][j, f"single:{m}"], m, j)
                for j in range(fit.n_inner[0])]) for m in mods}
            return
        model = (fit.stage2[0].get(name) or fit.models[0][name]).to_logistic()
        strategy.model_ = model
        strategy.modality_weights_ = dict(fit.weights[0][name])
        if kind == "concat":  # early fusion as streamed: no imputer, flags or factors
            strategy.scalers_ = {m: self._view_scaler(m) for m in mods}
            strategy.imputer_ = None
            strategy.block_factors_ = {m: 1.0 for m in mods}
            strategy.presence_flags_ = False
        else:
            strategy.scalers_ = {m: self._standard_scaler(strategy.scalers_[m], m)
                                 for m in mods}
            if hasattr(strategy, "projection_"):
                strategy.projection_ = "features"

    def _without_meta(self, strategy: Any, kind: str, outer: Mapping[str, Any],
                      weights: Mapping[str, float]) -> None:
        from ..fusion.late import LOG_FLOOR
        from ..fusion.weights import normalise_weights

        strategy.experts_ = dict(outer)
        strategy.modality_weights_ = normalise_weights(dict(weights))
        if kind == "pool":
            strategy.prior_ = self.prior.copy()
            strategy.raw_weights_ = dict(strategy.modality_weights_)
            strategy.weight_scale_ = float(sum(strategy.raw_weights_.values()))
        else:  # stacking's equal-weight form (as its own fallback without inner folds)
            strategy.prior_ = np.clip(self.prior, LOG_FLOOR, 1.0)
            strategy.meta_, strategy.meta_C_, strategy.imputer_ = None, None, None
            strategy.meta_fallback_ = "equal"
            strategy.meta_fold_scores_ = {}
