"""Learned fusion heads in PyTorch: gated multimodal unit, attention over modality tokens and
low-rank tensor fusion.

Each head sees the *features* of the encoders (never raw files): every view is standardised
on its present training rows, a small MLP projects it to a common width, and a fusion module
combines the per-modality vectors under a presence mask, so a sample may miss any modality
but not all of them. Training uses AdamW, modality dropout (present modalities are hidden at
random, always keeping one), auxiliary per-modality losses, and early stopping on inner
validation splits made like every other inner split (grouped when groups are given): the
head is a small ensemble whose member ``i`` trains on inner fold ``i``'s training rows and
stops on its held-out rows. Everything is seeded.

PyTorch is optional (``pip install "mmfuse[torch]"``) and imported only when a head is fitted
or used, so ``import mmfuse`` and the strategy registry stay light. The fitted state is plain
data — ``input_mean_``/``input_scale_`` (numpy), ``architecture_`` (a dict) and
``state_dict_`` (name -> numpy array) — so a model can be saved without pickle and rebuilt
with :meth:`NeuralFusion.module`.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..._errors import InputError
from ...devices import resolve_device
from ...views import Present, Views, dense
from ..base import FusionStrategy, register_fusion
from ..scaling import EPS
from ...splits import inner_splits, seed_from
from .modules import _adamw, _drop_modalities, _Tensors, _threads, _torch, build_module

#: Standardised features are clipped here: a near-constant TF-IDF column would otherwise
#: produce huge values on the rare rows where it fires.
CLIP = 8.0
PREDICT_BATCH = 2048
#: A validation loss must fall by this much to count as better: on easy data the loss creeps
#: towards 0 for dozens of epochs that change no prediction (measured: 2.4x the training time).
TOL = 1e-3


class NeuralFusion(FusionStrategy):
    """Shared training and prediction of the learned heads (not registered itself).

    The head is a small ensemble: member ``i`` trains on the training part of inner fold
    ``i`` and stops early on its held-out part (inner folds grouped like every inner split),
    so every training row is learned from and the members' mean is steadier than any one.

    Parameters
    ----------
    width : int, default=64
        Common width of the modality projections and of the fused vector.
    dropout : float, default=0.2
        Dropout inside the projections and before the classifiers.
    modality_dropout : float, default=0.3
        Probability of hiding each present modality of a training sample per step (one
        present modality is always kept), so the head learns to cope with holes.
    aux_weight : float, default=0.5
        Weight of the auxiliary per-modality classification losses (each projection must
        also classify on its own, which keeps a lone modality useful).
    lr : float, default=2e-3
        AdamW learning rate.
    weight_decay : float, default=1e-2
        AdamW weight decay.
    batch_size : int, default=128
    max_epochs : int, default=200
    patience : int, default=10
        A member stops after this many epochs without its validation loss falling by at
        least ``TOL`` (0.001), and keeps its best epoch's weights.
    n_members : int, default=3
        Ensemble members, one per inner fold (at most ``cv``).
    device : {"auto", "cpu", "cuda"}, default="auto"
        ``"auto"`` uses CUDA when available, else the CPU.
    n_threads : int or None, default=1
        torch intra-op threads while fitting and predicting (None leaves torch's setting).
        One is the fastest for heads this small: on a busy 2-core machine a second thread
        made each step 30x slower (measured), as the threads wait on each other.
    classifier, weights : ignored
        Accepted so every strategy shares one signature; the head is its own classifier
        and learns its own modality weighting.
    cv : int, default=5
        Inner folds from which the members' train/validation splits are taken.
    random_state : int or None, default=None
        Seed of the initialisation, shuffling, dropout and inner folds; None means 0, so
        fits are reproducible by default (on one device and torch version).

    Attributes
    ----------
    architecture_ : dict
        Everything needed to rebuild the module (head, modalities, dims, width, members...).
    state_dict_ : dict of str -> ndarray
        The trained weights as numpy arrays (``build_module(architecture_, state_dict_)``).
    input_mean_, input_scale_ : dict of str -> ndarray
        Per-modality standardisation learned on the present training rows.
    modality_weights_ : dict or None
        Mean gate (``gmu``) or attention (``attention``) weight of each modality on the
        training rows; None for ``lowrank``.
    best_epoch_, n_epochs_ : list of int, per member
    history_ : list of dict, per member: ``train_loss`` and ``val_loss`` per epoch
    device_ : str
    fit_seconds_ : float
    """

    _head = ""


    def __init__(self, width: int = 64, dropout: float = 0.2,
                 modality_dropout: float = 0.3, aux_weight: float = 0.5, lr: float = 2e-3,
                 weight_decay: float = 1e-2, batch_size: int = 128, max_epochs: int = 200,
                 patience: int = 10, n_members: int = 3, device: str = "auto",
                 n_threads: int | None = 1, classifier: Any = None, weights: Any = None,
                 cv: int = 5, random_state: Any = None):
        self.width = width
        self.dropout = dropout
        self.modality_dropout = modality_dropout
        self.aux_weight = aux_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.n_members = n_members
        self.device = device
        self.n_threads = n_threads
        self.classifier = classifier
        self.weights = weights
        self.cv = cv
        self.random_state = random_state
    def _params(self) -> dict[str, Any]:
        return {}

    def _check_params(self) -> None:
        for name, low in (("width", 1), ("batch_size", 1), ("max_epochs", 1), ("patience", 1),
                          ("n_members", 1)):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
                raise InputError(f"{name} must be an integer >= {low}; got {value!r}")
        for name in ("dropout", "modality_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
                raise InputError(f"{name} must be in [0, 1); got {value!r}")
        for name, strict in (("lr", True), ("weight_decay", False), ("aux_weight", False)):
            value = getattr(self, name)
            if (not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0
                    or (strict and value == 0)):
                bound = "> 0" if strict else ">= 0"
                raise InputError(f"{name} must be a finite number {bound}; got {value!r}")

    # -- fitting ------------------------------------------------------------------------
    def _standardise(self, views: Views, present: Present) -> list[np.ndarray]:
        out = []
        for m in self.modalities_:
            z = (dense(views[m]) - self.input_mean_[m]) / self.input_scale_[m]
            z = np.clip(z, -CLIP, CLIP)
            z[~present[m]] = 0.0
            out.append(z.astype(np.float32, copy=False))
        return out

    def _fit(self, views: Views, y: np.ndarray, present: Present, groups: Any) -> None:
        self._check_params()
        extra = self._params()
        torch = _torch()
        self.device_ = resolve_device(self.device)
        started = time.perf_counter()
        mods = sorted(views)
        self.input_mean_, self.input_scale_ = {}, {}
        for m in mods:
            rows = dense(views[m][np.flatnonzero(present[m])])
            std = rows.std(axis=0)
            self.input_mean_[m] = rows.mean(axis=0).astype(np.float32)
            self.input_scale_[m] = np.where(std > EPS, std, 1.0).astype(np.float32)
        xs = self._standardise(views, present)
        mask = np.stack([present[m] for m in mods], axis=1)
        seed = seed_from(self.random_state)
        seed = 0 if seed is None else int(seed)
        splits = inner_splits(y, groups, self.cv, seed)[: int(self.n_members)]
        if not splits:  # too little data to hold any out: one member on every row
            splits = [(np.arange(len(y)), np.zeros(0, dtype=int))]
        self.architecture_ = {
            "head": self._head, "modalities": mods,
            "dims": {m: int(views[m].shape[1]) for m in mods}, "width": int(self.width),
            "n_classes": len(self.classes_), "dropout": float(self.dropout),
            "n_members": len(splits), **extra,
        }
        self.history_, self.best_epoch_, self.n_epochs_ = [], [], []
        with _threads(torch, self.n_threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if self.device_.startswith("cuda"):
                torch.cuda.manual_seed_all(seed)
            ensemble = build_module(self.architecture_).to(self.device_)
            data = _Tensors(torch, xs, mask, y, self.device_)
            for i, (train, val) in enumerate(splits):
                history, best = self._train(torch, ensemble.members[i], data, train, val,
                                            seed + i)
                self.history_.append(history)
                self.best_epoch_.append(best)
                self.n_epochs_.append(len(history["train_loss"]))
            ensemble.eval()
            self.state_dict_ = {k: v.detach().cpu().numpy().copy()
                                for k, v in ensemble.state_dict().items()}
            self._module = ensemble
            self.modality_weights_ = self._mean_weights(torch, ensemble, xs, mask)
        self.fit_seconds_ = time.perf_counter() - started

    def _train(self, torch: Any, module: Any, data: "_Tensors", train: np.ndarray,
               val: np.ndarray, seed: int) -> tuple[dict[str, list[float]], int]:
        """Train one member on ``train`` rows, early-stopped on ``val`` rows."""
        dev = self.device_
        tr = torch.from_numpy(train.astype(np.int64)).to(dev)
        va = torch.from_numpy(val.astype(np.int64)).to(dev)
        torch.manual_seed(seed)
        # Shuffles and modality dropout are drawn on the training device: on CUDA, no step
        # waits for a host-to-device copy or a device-to-host answer (the loss is summed on
        # the device and read once per epoch).
        generator = torch.Generator(device=dev).manual_seed(seed)
        optimiser = _adamw(torch, module.parameters(), float(self.lr), float(self.weight_decay))
        loss_fn = torch.nn.CrossEntropyLoss()
        per_row = torch.nn.CrossEntropyLoss(reduction="none")
        batch, p_drop = int(self.batch_size), float(self.modality_dropout)
        on_gpu = torch.device(dev).type != "cpu"
        aux_weight = float(self.aux_weight)
        best_loss, best_state, best_epoch, waited = np.inf, None, 0, 0
        history: dict[str, list[float]] = {"train_loss": [], "val_loss": []}
        epochs = int(self.max_epochs) if len(val) else min(int(self.max_epochs), 50)
        for epoch in range(epochs):
            module.train()
            order = tr[torch.randperm(len(tr), generator=generator, device=dev)]
            step_losses = []  # summed once per epoch: no per-step device-to-host read
            for start in range(0, len(order), batch):
                idx = order[start : start + batch]
                if len(idx) < 2 <= len(order):
                    continue  # a batch of one adds only noise
                m = data.mask[idx]
                if p_drop > 0 and m.shape[1] > 1:
                    m = _drop_modalities(torch, m, p_drop, generator)
                yb = data.y[idx]
                logits, aux = module([x[idx] for x in data.xs], m, with_aux=True)
                loss = loss_fn(logits, yb)
                if aux_weight > 0:
                    for j, aux_logits in enumerate(aux):
                        # mean loss over the rows where modality j is shown (none: no loss)
                        rows = m[:, j]
                        if on_gpu:  # masked, so no step waits to learn whether rows exist
                            w = rows.to(logits.dtype)
                            aux_loss = (per_row(aux_logits, yb) * w).sum() / w.sum().clamp(min=1)
                        elif bool(rows.any()):  # on the CPU the test is free, the subset cheaper
                            aux_loss = loss_fn(aux_logits[rows], yb[rows])
                        else:
                            continue
                        loss = loss + aux_weight / len(aux) * aux_loss
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step_losses.append(loss.detach() * len(idx))
            total = float(torch.stack(step_losses).sum()) if step_losses else 0.0
            history["train_loss"].append(total / max(len(order), 1))
            if not len(val):
                best_epoch = epoch + 1
                continue
            module.eval()
            with torch.no_grad():
                logits = module([x[va] for x in data.xs], data.mask[va])
                val_loss = float(loss_fn(logits, data.y[va]))
            history["val_loss"].append(val_loss)
            if val_loss < best_loss - TOL:
                best_loss, best_epoch, waited = val_loss, epoch + 1, 0
                best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
            else:
                waited += 1
                if waited >= int(self.patience):
                    break
        if best_state is not None:
            module.load_state_dict(best_state)
        return history, best_epoch

    def _mean_weights(self, torch: Any, module: Any, xs: list[np.ndarray],
                      mask: np.ndarray) -> dict[str, float] | None:
        weights = self._forward(torch, module, xs, mask, want_weights=True)
        if weights is None:
            return None
        mean = weights.mean(axis=0)
        total = float(mean.sum())
        return {m: float(w / total) for m, w in zip(self.modalities_, mean)}

    # -- prediction -----------------------------------------------------------------------
    def to(self, device: str) -> "NeuralFusion":
        """Predict on ``device`` (resolved) from now on: the torch module is rebuilt there
        on its next use. Returns self."""
        if hasattr(self, "device_"):
            self.device_ = device
        self.__dict__.pop("_module", None)
        return self

    def module(self) -> Any:
        """The fitted torch module (rebuilt from ``architecture_`` and ``state_dict_``)."""
        cached = getattr(self, "_module", None)
        if cached is None:
            torch = _torch()
            device = (self.device_ if self.device_.startswith("cuda")
                      and torch.cuda.is_available() else "cpu")
            cached = build_module(self.architecture_, self.state_dict_).eval().to(device)
            self._module = cached
        return cached

    def _forward(self, torch: Any, module: Any, xs: list[np.ndarray], mask: np.ndarray,
                 want_weights: bool = False) -> np.ndarray | None:
        dev = next(module.parameters()).device
        # rows with no modality would give NaN through the masked softmaxes; they are
        # answered with the class prior (base class), so feed them a harmless mask
        mask = mask.copy()
        mask[~mask.any(axis=1)] = True
        outs = []
        module.eval()
        with torch.no_grad():
            for start in range(0, mask.shape[0], PREDICT_BATCH):
                sl = slice(start, start + PREDICT_BATCH)
                xb = [torch.from_numpy(np.ascontiguousarray(x[sl])).to(dev) for x in xs]
                mb = torch.from_numpy(mask[sl]).to(dev)
                out = module.modality_weights(xb, mb) if want_weights else module(xb, mb)
                if out is None:
                    return None
                outs.append(out.cpu().numpy())
        if not outs:
            return np.zeros((0, len(self.modalities_) if want_weights else len(self.classes_)))
        return np.concatenate(outs, axis=0)

    def _predict_proba(self, views: Views, present: Present) -> np.ndarray:
        torch = _torch()
        xs = self._standardise(views, present)
        mask = np.stack([present[m] for m in self.modalities_], axis=1)
        with _threads(torch, self.n_threads):
            proba = self._forward(torch, self.module(), xs, mask).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_module", None)  # rebuilt from state_dict_ on demand
        return state


@register_fusion("gmu", takes_device=True, cost="high", description="learned gated multimodal unit (PyTorch)", extra="torch")
class GMUFusion(NeuralFusion):
    """Gated multimodal unit (Arevalo et al., 2017): per-feature gates choose, for each
    sample, how much each present modality contributes.

    Parameters are those of :class:`NeuralFusion`.

    Examples
    --------
    >>> clf = MultimodalClassifier(fusion="gmu")  # doctest: +SKIP
    """

    _head = "gmu"


@register_fusion("attention", takes_device=True, cost="high", description="learned attention over modality tokens (PyTorch)",
                 extra="torch")
class AttentionFusion(NeuralFusion):
    """Attention over per-modality tokens: a self-attention block lets modalities inform
    each other, then a learned query pools the present tokens.

    Parameters
    ----------
    n_heads : int, default=4
        Attention heads (must divide ``width``).
    Others as in :class:`NeuralFusion`.
    """

    _head = "attention"

    def __init__(self, width: int = 64, n_heads: int = 4, dropout: float = 0.2,
                 modality_dropout: float = 0.3, aux_weight: float = 0.5, lr: float = 2e-3,
                 weight_decay: float = 1e-2, batch_size: int = 128, max_epochs: int = 200,
                 patience: int = 10, n_members: int = 3, device: str = "auto",
                 n_threads: int | None = 1, classifier: Any = None, weights: Any = None,
                 cv: int = 5, random_state: Any = None):
        self.n_heads = n_heads
        super().__init__(width=width, dropout=dropout, modality_dropout=modality_dropout,
                         aux_weight=aux_weight, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                         n_members=n_members, device=device, n_threads=n_threads,
                         classifier=classifier, weights=weights, cv=cv,
                         random_state=random_state)

    def _params(self) -> dict[str, Any]:
        if (not isinstance(self.n_heads, (int, np.integer)) or self.n_heads < 1
                or self.width % self.n_heads):
            raise InputError(
                f"n_heads must be a positive integer dividing width={self.width}; "
                f"got {self.n_heads!r}"
            )
        return {"n_heads": int(self.n_heads)}


@register_fusion("lowrank", takes_device=True, cost="high", description="learned low-rank tensor fusion (PyTorch)", extra="torch")
class LowRankFusion(NeuralFusion):
    """Low-rank multimodal fusion (Liu et al., 2018): the multimodal outer-product tensor
    fusion computed through rank-``rank`` modality-specific factors.

    Parameters
    ----------
    rank : int, default=4
    Others as in :class:`NeuralFusion`.
    """

    _head = "lowrank"

    def __init__(self, width: int = 64, rank: int = 4, dropout: float = 0.2,
                 modality_dropout: float = 0.3, aux_weight: float = 0.5, lr: float = 2e-3,
                 weight_decay: float = 1e-2, batch_size: int = 128, max_epochs: int = 200,
                 patience: int = 10, n_members: int = 3, device: str = "auto",
                 n_threads: int | None = 1, classifier: Any = None, weights: Any = None,
                 cv: int = 5, random_state: Any = None):
        self.rank = rank
        super().__init__(width=width, dropout=dropout, modality_dropout=modality_dropout,
                         aux_weight=aux_weight, lr=lr, weight_decay=weight_decay,
                         batch_size=batch_size, max_epochs=max_epochs, patience=patience,
                         n_members=n_members, device=device, n_threads=n_threads,
                         classifier=classifier, weights=weights, cv=cv,
                         random_state=random_state)

    def _params(self) -> dict[str, Any]:
        if not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
            raise InputError(f"rank must be a positive integer; got {self.rank!r}")
        return {"rank": int(self.rank)}
