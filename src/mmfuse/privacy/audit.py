"""Membership-inference audit: can an attacker tell training rows from other rows?

Two attacks that need no shadow models, run on a fitted model, a set of rows it was trained
on (members) and a set it never saw (non-members), both from the same distribution:

``loss``
    The loss-threshold attack (Yeom et al., 2018): members tend to have a lower loss
    ``-log p(true class)``. The attack score is minus the loss.
``confidence``
    The label-free variant: the top predicted probability (members tend to get more
    confident predictions). Needs no labels, so anyone with query access can run it.

Each attack is summarised by its ROC AUC (0.5: no better than a coin; 1.0: members fully
exposed) with a percentile-bootstrap 95% CI (members and non-members resampled separately),
and by its membership advantage ``max(TPR - FPR)`` over thresholds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .._errors import InputError

ATTACKS = ("loss", "confidence")
LOSS_FLOOR = 1e-12


@dataclass
class AttackResult:
    name: str
    auc: float
    auc_ci95: list[float]
    advantage: float


@dataclass
class AuditResult:
    n_members: int
    n_non_members: int
    accuracy_members: float
    accuracy_non_members: float
    attacks: list[AttackResult] = field(default_factory=list)
    n_bootstrap: int = 1000

    @property
    def worst(self) -> AttackResult:
        return max(self.attacks, key=lambda a: a.auc)

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["worst_auc"] = self.worst.auc
        return doc


def attack_scores(proba: np.ndarray, y_index: np.ndarray) -> dict[str, np.ndarray]:
    """Per-row membership scores (higher: more likely a member) of each attack.

    ``y_index`` is each row's true class as a column of ``proba``, or -1 for a label the
    model does not know (its probability counts as 0).
    """
    proba = np.asarray(proba, dtype=np.float64)
    p_true = np.where(y_index >= 0, proba[np.arange(len(proba)), np.maximum(y_index, 0)], 0.0)
    loss = -np.log(np.clip(p_true, LOSS_FLOOR, 1.0))
    return {"loss": -loss, "confidence": proba.max(axis=1)}


def _auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(score of a member > score of a non-member), ties counted half (Mann-Whitney)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([members, non_members]))
    n1, n0 = len(members), len(non_members)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _advantage(members: np.ndarray, non_members: np.ndarray) -> float:
    from sklearn.metrics import roc_curve

    labels = np.r_[np.ones(len(members)), np.zeros(len(non_members))]
    fpr, tpr, _ = roc_curve(labels, np.r_[members, non_members])
    return float(np.max(tpr - fpr))


def membership_audit(proba_members: np.ndarray, y_members: Any, proba_non_members: np.ndarray,
                     y_non_members: Any, classes: Any, *, n_bootstrap: int = 1000,
                     random_state: int | None = 0) -> AuditResult:
    """Run the loss and confidence attacks on predicted probabilities.

    Parameters
    ----------
    proba_members, proba_non_members : ndarray of shape (n, n_classes)
        The model's probabilities for training rows and for rows it never saw.
    y_members, y_non_members : array-like of labels
    classes : array-like
        The model's ``classes_`` (the columns of the probabilities).
    n_bootstrap : int, default=1000
        Bootstrap resamples for the CI of each AUC.
    random_state : int or None, default=0

    Returns
    -------
    AuditResult
    """
    classes = np.asarray(classes)
    if not isinstance(n_bootstrap, int) or n_bootstrap < 10:
        raise InputError(f"n_bootstrap must be an int >= 10; got {n_bootstrap!r}")
    parts = []
    for what, proba, labels in (("members", proba_members, y_members),
                                ("non-members", proba_non_members, y_non_members)):
        proba = np.asarray(proba, dtype=np.float64)
        labels = np.asarray(labels)
        if proba.ndim != 2 or proba.shape[1] != len(classes) or len(proba) != len(labels):
            raise InputError(f"{what}: expected probabilities of shape (n, {len(classes)}) and "
                             f"n labels; got {proba.shape} and {labels.shape}")
        if len(labels) < 2:
            raise InputError(f"{what}: need at least 2 rows to audit; got {len(labels)}")
        lookup = {c: i for i, c in enumerate(classes.tolist())}
        index = np.array([lookup.get(v, -1) for v in labels.tolist()])
        parts.append((proba, index))
    (pm, im), (pn, i_n) = parts
    sm, sn = attack_scores(pm, im), attack_scores(pn, i_n)
    rng = np.random.default_rng(random_state)
    boot_m = rng.integers(0, len(pm), size=(n_bootstrap, len(pm)))
    boot_n = rng.integers(0, len(pn), size=(n_bootstrap, len(pn)))
    attacks = []
    for name in ATTACKS:
        auc = _auc(sm[name], sn[name])
        samples = [_auc(sm[name][bm], sn[name][bn]) for bm, bn in zip(boot_m, boot_n)]
        low, high = np.percentile(samples, [2.5, 97.5])
        attacks.append(AttackResult(name, auc, [float(low), float(high)],
                                    _advantage(sm[name], sn[name])))
    acc_m = float(np.mean(pm.argmax(1) == im))
    acc_n = float(np.mean(pn.argmax(1) == i_n))
    return AuditResult(len(pm), len(pn), acc_m, acc_n, attacks, n_bootstrap)


def audit_model(model: Any, X_members: Any, y_members: Any, X_non_members: Any,
                y_non_members: Any, *, progress: Any = None, **kwargs: Any) -> AuditResult:
    """:func:`membership_audit` of a fitted :class:`~mmfuse.MultimodalClassifier` on raw
    member and non-member samples (same columns as for ``predict_proba``);
    ``progress(stage, done, total)`` is called as their features are computed."""
    def proba(X: Any, who: str) -> np.ndarray:
        tick = None if progress is None else (
            lambda stage, done, total: progress(f"{who}: {stage}", done, total))
        return model.predict_report(X, progress=tick).proba

    return membership_audit(proba(X_members, "members"), y_members,
                            proba(X_non_members, "non-members"), y_non_members,
                            model.classes_, **kwargs)
