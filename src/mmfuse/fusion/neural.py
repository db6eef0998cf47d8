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

import contextlib
import functools
import time
from typing import Any

import numpy as np

from .._errors import InputError, require
from ..views import Present, Views, dense
from .base import FusionStrategy, register_fusion
from .scaling import EPS
from .splits import inner_splits, seed_from

DEVICES = ("auto", "cpu", "cuda")
HEADS = ("gmu", "attention", "lowrank")
#: Standardised features are clipped here: a near-constant TF-IDF column would otherwise
#: produce huge values on the rare rows where it fires.
CLIP = 8.0
PREDICT_BATCH = 2048
#: A validation loss must fall by this much to count as better: on easy data the loss creeps
#: towards 0 for dozens of epochs that change no prediction (measured: 2.4x the training time).
TOL = 1e-3


def _torch() -> Any:
    return require("torch", "torch")


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a CUDA device is usable, else ``"cpu"``."""
    if device not in DEVICES:
        raise InputError(f"device must be one of {list(DEVICES)}; got {device!r}")
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("device='cuda' was asked for but no CUDA device is available; "
                         "use device='cpu' or 'auto'")
    return device


@contextlib.contextmanager
def _threads(torch: Any, n_threads: int | None):
    """Limit intra-op threads while training (the machine is shared), then restore."""
    before = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the modules (defined on first use so torch is imported lazily) ------------------------

@functools.lru_cache(maxsize=None)
def _modules() -> dict[str, Any]:
    torch = _torch()
    nn = torch.nn

    class Projection(nn.Module):
        """Two-layer MLP from one view to the common width."""

        def __init__(self, d_in: int, width: int, dropout: float):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(d_in, width), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(width, width))

        def forward(self, x):
            return self.net(x)

    class FusionNet(nn.Module):
        """Projections -> fusion module -> linear classifier; modalities in sorted order."""

        def __init__(self, arch: dict[str, Any]):
            super().__init__()
            self.modalities = list(arch["modalities"])
            width, dropout = int(arch["width"]), float(arch["dropout"])
            self.proj = nn.ModuleList(
                [Projection(int(arch["dims"][m]), width, dropout) for m in self.modalities])
            self.drop = nn.Dropout(dropout)
            self.classifier = nn.Linear(width, int(arch["n_classes"]))
            # one linear classifier per modality: the auxiliary losses keep every projection
            # discriminative on its own, which is what a sample left with one modality needs
            self.aux = nn.ModuleList(
                [nn.Linear(width, int(arch["n_classes"])) for _ in self.modalities])

        def forward(self, xs, mask, with_aux: bool = False):
            hs = [p(x) for p, x in zip(self.proj, xs)]
            fused, _ = self.fuse(hs, mask)
            logits = self.classifier(self.drop(fused))
            if not with_aux:
                return logits
            return logits, [head(self.drop(h)) for head, h in zip(self.aux, hs)]

        def fuse(self, hs, mask):  # -> (fused (B, W), per-modality weights (B, M) or None)
            raise NotImplementedError

    class GMUNet(FusionNet):
        """Gated multimodal unit (Arevalo et al., 2017), generalised to M modalities.

        h_m = tanh(P_m x_m); per-feature gates z = softmax_m(W [h_1..h_M, mask]) over the
        present modalities (for M=2 this is the paper's sigmoid z and 1 - z); fused = Σ z_m h_m.
        """

        def __init__(self, arch):
            super().__init__(arch)
            m, w = len(self.modalities), int(arch["width"])
            self.gate = nn.Linear(m * w + m, m * w)

        def fuse(self, hs, mask):
            h = torch.tanh(torch.stack(hs, dim=1))  # (B, M, W)
            maskf = mask.to(h.dtype)
            h = h * maskf[:, :, None]
            logits = self.gate(torch.cat([h.flatten(1), maskf], dim=1)).view_as(h)
            logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
            z = torch.softmax(logits, dim=1)
            return (z * h).sum(dim=1), z.mean(dim=2)

    class AttentionNet(FusionNet):
        """Modality tokens (projection + modality embedding), one pre-norm self-attention
        layer with missing tokens masked out, then attention pooling with a learned query."""

        def __init__(self, arch):
            super().__init__(arch)
            m, w = len(self.modalities), int(arch["width"])
            self.embed = nn.Parameter(torch.randn(m, w) * 0.02)
            self.n_heads = int(arch["n_heads"])
            self.norm1 = nn.LayerNorm(w)
            self.qkv = nn.Linear(w, 3 * w)
            self.out = nn.Linear(w, w)
            self.query = nn.Parameter(torch.randn(w) * 0.02)
            self.key = nn.Linear(w, w)
            self.norm_out = nn.LayerNorm(w)

        def attend(self, t, mask):
            """Multi-head self-attention over the M tokens, missing keys masked out.

            With a handful of tokens, broadcast products beat batched matrix products
            (a quarter less time per training step than nn.MultiheadAttention, measured).
            """
            b, m, w = t.shape
            d = w // self.n_heads
            q, k, v = self.qkv(t).view(b, m, 3, self.n_heads, d).unbind(2)  # (B, M, H, d)
            scores = (q[:, :, None] * k[:, None]).sum(-1) * d**-0.5  # (B, Mq, Mk, H)
            scores = scores.masked_fill(~mask[:, None, :, None], float("-inf"))
            attn = torch.softmax(scores, dim=2)
            return self.out((attn[..., None] * v[:, None]).sum(2).reshape(b, m, w))

        def fuse(self, hs, mask):
            t = torch.stack(hs, dim=1) + self.embed[None]  # (B, M, W)
            t = t + self.drop(self.attend(self.norm1(t), mask))
            # (no feed-forward block: the projections are MLPs already)
            scores = self.key(t) @ self.query / t.shape[-1] ** 0.5  # (B, M)
            alpha = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
            return self.norm_out((alpha[:, :, None] * t).sum(dim=1)), alpha

    class LowRankNet(FusionNet):
        """Low-rank multimodal fusion (Liu et al., 2018): Σ_r λ_r Π_m ([h_m, 1] W_m^(r)).

        The appended 1 keeps the lower-order (uni- and bi-modal) terms of the full tensor; a
        missing modality contributes only that constant row, which training with modality
        dropout learns to use.
        """

        def __init__(self, arch):
            super().__init__(arch)
            m, w, rank = len(self.modalities), int(arch["width"]), int(arch["rank"])
            self.factors = nn.ParameterList(
                [nn.Parameter(nn.init.xavier_normal_(torch.empty(rank, w + 1, w)))
                 for _ in range(m)])
            self.rank_weights = nn.Parameter(nn.init.xavier_normal_(torch.empty(1, rank)))
            self.bias = nn.Parameter(torch.zeros(w))
            self.norm_out = nn.LayerNorm(w)

        def fuse(self, hs, mask):
            out = None
            for i, (h, factor) in enumerate(zip(hs, self.factors)):
                h = h * mask[:, i : i + 1].to(h.dtype)
                z = torch.cat([h, torch.ones_like(h[:, :1])], dim=1)  # (B, W+1)
                f = torch.einsum("bi,rio->bro", z, factor)  # (B, R, W)
                out = f if out is None else out * f
            fused = torch.einsum("r,bro->bo", self.rank_weights[0], out) + self.bias
            return self.norm_out(fused), None

    class Ensemble(nn.Module):
        """The members trained on different inner folds; predicts their mean probability."""

        def __init__(self, arch):
            super().__init__()
            net = {"gmu": GMUNet, "attention": AttentionNet, "lowrank": LowRankNet}[arch["head"]]
            self.members = nn.ModuleList([net(arch) for _ in range(int(arch["n_members"]))])

        def forward(self, xs, mask):
            return torch.stack([torch.softmax(m(xs, mask), dim=1) for m in self.members]).mean(0)

        def modality_weights(self, xs, mask):
            """Mean per-sample modality weights of the members (None for lowrank)."""
            out = []
            for m in self.members:
                _, w = m.fuse([p(x) for p, x in zip(m.proj, xs)], mask)
                if w is None:
                    return None
                out.append(w)
            return torch.stack(out).mean(0)

    return {"gmu": GMUNet, "attention": AttentionNet, "lowrank": LowRankNet,
            "ensemble": Ensemble}


def build_module(architecture: dict[str, Any], state_dict: dict[str, np.ndarray] | None = None):
    """The torch module (an ensemble of ``n_members`` heads) described by ``architecture``,
    loaded with ``state_dict`` (name -> numpy array) if given."""
    torch = _torch()
    if architecture.get("head") not in HEADS:
        raise InputError(f"architecture['head'] must be one of {list(HEADS)}; "
                         f"got {architecture.get('head')!r}")
    module = _modules()["ensemble"](architecture)
    if state_dict is not None:
        module.load_state_dict({k: torch.from_numpy(np.array(v, copy=True))
                                for k, v in state_dict.items()})
    return module


# -- the strategies -------------------------------------------------------------------------

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
            if self.device_ == "cuda":
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
    def module(self) -> Any:
        """The fitted torch module (rebuilt from ``architecture_`` and ``state_dict_``)."""
        cached = getattr(self, "_module", None)
        if cached is None:
            torch = _torch()
            device = "cuda" if self.device_ == "cuda" and torch.cuda.is_available() else "cpu"
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


class _Tensors:
    """The standardised training data as tensors on the training device."""

    def __init__(self, torch: Any, xs: list[np.ndarray], mask: np.ndarray, y: np.ndarray,
                 device: str):
        self.xs = [torch.from_numpy(x).to(device) for x in xs]
        self.mask = torch.from_numpy(mask).to(device)
        self.y = torch.from_numpy(y.astype(np.int64)).to(device)


def _adamw(torch: Any, params: Any, lr: float, weight_decay: float) -> Any:
    """AdamW, fused where this torch build supports it (a fifth less time per step on the
    CPU for heads this small, measured: the unfused update loops over every tensor)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _drop_modalities(torch: Any, mask: Any, p: float, generator: Any) -> Any:
    """Hide each present modality with probability p, keeping one present per row.

    Rows left with nothing keep the present modality with the highest draw (a uniform
    choice among them); on CUDA without a branch, so no device-to-host read."""
    u = torch.rand(mask.shape, generator=generator, device=mask.device)
    kept = mask & (u >= p)
    empty = ~kept.any(dim=1)
    if mask.device.type == "cpu" and not bool(empty.any()):
        return kept  # on the CPU the test is free and skips the rescue
    score = torch.where(mask, u, torch.full_like(u, -1.0))
    rescue = torch.zeros_like(mask)
    rescue[torch.arange(mask.shape[0], device=mask.device), score.argmax(dim=1)] = True
    return torch.where(empty[:, None], rescue & mask, kept)


@register_fusion("gmu", takes_device=True, description="learned gated multimodal unit (PyTorch)", extra="torch")
class GMUFusion(NeuralFusion):
    """Gated multimodal unit (Arevalo et al., 2017): per-feature gates choose, for each
    sample, how much each present modality contributes.

    Parameters are those of :class:`NeuralFusion`.

    Examples
    --------
    >>> clf = MultimodalClassifier(fusion="gmu")  # doctest: +SKIP
    """

    _head = "gmu"

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


@register_fusion("attention", takes_device=True, description="learned attention over modality tokens (PyTorch)",
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
        self.width = width
        self.n_heads = n_heads
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
        if (not isinstance(self.n_heads, (int, np.integer)) or self.n_heads < 1
                or self.width % self.n_heads):
            raise InputError(
                f"n_heads must be a positive integer dividing width={self.width}; "
                f"got {self.n_heads!r}"
            )
        return {"n_heads": int(self.n_heads)}


@register_fusion("lowrank", takes_device=True, description="learned low-rank tensor fusion (PyTorch)", extra="torch")
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
        self.width = width
        self.rank = rank
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
        if not isinstance(self.rank, (int, np.integer)) or self.rank < 1:
            raise InputError(f"rank must be a positive integer; got {self.rank!r}")
        return {"rank": int(self.rank)}
