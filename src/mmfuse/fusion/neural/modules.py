"""The PyTorch side of the learned fusion heads: the torch modules (projections, the GMU,
attention and low-rank fusion modules, the ensemble), :func:`build_module` from a plain
``architecture`` dict, and the training helpers (thread limit, AdamW,
modality dropout). PyTorch is imported only when one of these runs.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import numpy as np

from ..._errors import InputError, require


def _torch() -> Any:
    return require("torch", "torch")


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
            net = nets[arch["head"]]
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

    nets = {"gmu": GMUNet, "attention": AttentionNet, "lowrank": LowRankNet}
    return {"nets": nets, "ensemble": Ensemble}


def build_module(architecture: dict[str, Any], state_dict: dict[str, np.ndarray] | None = None):
    """The torch module (an ensemble of ``n_members`` heads) described by ``architecture``,
    loaded with ``state_dict`` (name -> numpy array) if given."""
    torch = _torch()
    nets = _modules()["nets"]
    if architecture.get("head") not in nets:
        raise InputError(f"architecture['head'] must be one of {list(nets)}; "
                         f"got {architecture.get('head')!r}")
    module = _modules()["ensemble"](architecture)
    if state_dict is not None:
        module.load_state_dict({k: torch.from_numpy(np.array(v, copy=True))
                                for k, v in state_dict.items()})
    return module


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
