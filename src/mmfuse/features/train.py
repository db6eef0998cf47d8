"""Training a model on a whole feature store out of core (``mmfuse train --features STORE
--out-of-core``): late fusion whose per-modality experts are fitted shard by shard.

The model is an ordinary :class:`~mmfuse.MultimodalClassifier` with a fitted ``late``
strategy: its structure comes from fitting it on a few rows of every class, and every
learned number is then replaced by the streamed one (each expert's standardisation over
all the store's rows that have the modality, its classifier, the class priors). It saves,
loads and predicts like any other model.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._errors import InputError

#: the strategies a streamed train can fit
TRAINABLE = ("late",)


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


def train_store(path: str | os.PathLike, label: str, *, fusion: str = "late",
                weights: Any = "equal", random_state: Any = 0, epochs: int | None = None,
                batch_size: int | None = None, learning_rate: float = 0.002,
                progress: Callable[[str, int, int], None] | None = None) -> Any:
    """Fit ``fusion`` (``late``) on every row of the store at ``path``, streamed.

    Parameters
    ----------
    path : the store folder
    label : kept column with the labels
    fusion : {"late"}
    weights : "equal" or dict of modality -> weight
        Learned weights (``cv``, ``relative``) are not fitted out of core; they fall back to
        equal ones (``weights_fallback_`` says so).
    epochs, batch_size, learning_rate : as in :func:`~mmfuse.evaluate.streamed.evaluate_store`

    Returns
    -------
    MultimodalClassifier, fitted; ``fit_path_ == "out-of-core"``
    """
    from ..estimator import MultimodalClassifier
    from ..evaluate.streamed import FALLBACK, auto_batch, auto_epochs, read_targets
    from .stream import StoreStream, fold_scalers
    from ..fusion.streamed import StreamedSoftmax

    if fusion not in TRAINABLE:
        raise InputError(f"fusion {fusion!r} cannot be trained out of core; the streamed "
                         f"train fits {', '.join(TRAINABLE)} (or drop --out-of-core on a store "
                         f"that fits in memory)")
    stream = StoreStream(path)
    mods = stream.modalities
    classes, y, _ = read_targets(stream, label, None)
    if len(classes) < 2:
        raise InputError(f"column {label!r} holds a single class; at least 2 are needed")
    fallback = None
    if isinstance(weights, Mapping):
        fixed: Any = {m: float(weights.get(m, 0.0)) for m in mods}
    else:
        fixed = "equal"
        fallback = None if weights in (None, "equal") else FALLBACK
    everyone = np.full(len(y), -1, dtype=np.int16)
    stats = fold_scalers(stream, everyone, 1, None if progress is None else
                         (lambda d, t: progress("standardising", d, t)))
    batch = auto_batch(len(y), batch_size)
    passes = auto_epochs(len(y), batch) if epochs is None else int(epochs)
    seed = 0 if random_state is None else int(random_state)
    experts = {m: StreamedSoftmax(learning_rate=learning_rate, batch_size=batch,
                                  random_state=[seed, i]) for i, m in enumerate(mods)}
    rng = np.random.default_rng(random_state)
    index = np.arange(len(classes))
    seen = {m: 0 for m in mods}
    for epoch in range(passes):
        for done, shard in enumerate(stream.shards(rng.permutation(stream.n_shards))):
            for m in mods:
                keep = shard.present[m]
                if keep.any():
                    z = stats.transform(m, 0, shard.views[m][keep])
                    experts[m].partial_fit(z, y[shard.rows[keep]].astype(np.intp),
                                           classes=index, n_train=len(y))
                    seen[m] += int(keep.sum())
            if progress is not None:
                progress(f"fitting (pass {epoch + 1} of {passes})", done + 1, stream.n_shards)
    unused = [m for m in mods if not seen[m]]
    if unused:
        raise InputError(f"modality {unused[0]!r} is absent from every row of the store")
    rows = _sample(stream, y)
    model = MultimodalClassifier(encoders={m: "passthrough" for m in mods}, fusion="late",
                                 weights=fixed, random_state=random_state)
    model.fit(_rows_views(stream, rows), classes[y[rows]])
    if list(model.classes_) != list(classes):
        raise InputError(f"every class needs a row with every modality; only "
                         f"{len(model.classes_)} of {len(classes)} classes have one")
    prior = np.bincount(y, minlength=len(classes)) / len(y)
    late = model.fusion_
    for m in mods:
        expert = late.experts_[m]
        expert.scaler_.mean_ = stats.mean[m][0].astype(expert.scaler_.mean_.dtype)
        expert.scaler_.scale_ = stats.scale[m][0].astype(np.float32)
        expert.prior_ = prior.copy()
        expert.model_ = experts[m].to_logistic()
    late.prior_ = prior.copy()
    late.class_prior_ = prior.copy()
    model.weights_fallback_ = late.weights_fallback_ = fallback
    model.fit_path_ = "out-of-core"
    model.n_train_rows_ = int(len(y))
    return model
