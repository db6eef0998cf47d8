"""Per-prediction modality contributions: how much each modality moved one prediction.

For every row, the contribution of modality ``m`` to the predicted class ``c`` is computed
from the fitted strategy's public outputs (its probabilities with some modalities marked
missing), in one of two ways, named in :attr:`Explanation.method`:

``"log-share"`` (late and weighted fusion)
    These strategies add up weighted per-modality terms before one softmax, so the fused
    centred log-probability of ``c`` splits exactly into one term per modality:
    ``contribution_m = w_m * (log p_m(c) - mean_k log p_m(k))``, with ``w_m`` the
    strategy's ``modality_weights_`` and ``p_m`` its prediction from ``m`` alone (rescaled
    on rows missing a modality, as the strategy rescales). Late fusion sums weighted
    log-probabilities; weighted fusion (``projection="features"``, the seed's space, or
    ``"pca"``) feeds the weighted sum ``Σ w_m z_m`` of the projected views to one logistic
    regression, whose logits are linear in that sum, so the split is exact there too
    (tested). With cross-fitted experts (late with ``weights="cv"``, weighted with
    ``projection="class-scores"``) the split is exact per inner-fold model and close on
    their average.
``"leave-one-out"`` (early, stacking, learned heads, any other strategy)
    ``contribution_m = log p(c | all) - log p(c | all but m)``, where "all but m" marks
    ``m`` missing and lets the strategy's own learned imputation fill it in.

``shares`` normalise each row's contributions by their total absolute value (they sum to 1
in absolute value; a negative share argued against the predicted class). A modality absent
from a row contributes 0.

Examples
--------
>>> exp = clf.explain(X)                      # doctest: +SKIP
>>> exp.to_frame().head()                     # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SHARE_PREFIX = "share_"
LOG_SHARE = "log-share"
LEAVE_ONE_OUT = "leave-one-out"
_FLOOR = 1e-300


@dataclass
class Explanation:
    """What :func:`explain` returns.

    Attributes
    ----------
    labels : ndarray (n,)
        Predicted labels.
    proba : ndarray (n, n_classes)
        Class probabilities of the fusion strategy (``predict_proba``, before the model's
        ``calibration`` if it has one: contributions explain the fusion itself).
    modalities : list of str
        The columns of ``contributions`` and ``shares``.
    contributions : ndarray (n, n_modalities)
        Each modality's contribution to the log-probability of the predicted class.
    shares : ndarray (n, n_modalities)
        ``contributions`` divided by the row's total absolute contribution.
    method : str
        ``"log-share"`` or ``"leave-one-out"`` (see the module docstring).
    """

    labels: np.ndarray
    proba: np.ndarray
    modalities: list[str]
    contributions: np.ndarray
    shares: np.ndarray
    method: str
    #: the true labels of the rows, when known (held-out rows of the report)
    true_labels: np.ndarray | None = None
    #: the strategy's name, when known
    strategy: str | None = None

    def to_frame(self) -> Any:
        """A DataFrame: ``label``, ``probability`` and one ``share:<modality>`` column each."""
        import pandas as pd

        frame = pd.DataFrame({"label": self.labels,
                              "probability": self.proba.max(axis=1)})
        for j, m in enumerate(self.modalities):
            frame[f"share:{m}"] = self.shares[:, j]
        return frame

    def rows(self) -> list[dict[str, float]]:
        """Per row, ``{modality: share}`` (JSON-friendly floats)."""
        return [{m: round(float(v), 6) for m, v in zip(self.modalities, row)}
                for row in self.shares]

    def mean_by_class(self) -> dict[Any, dict[str, float]]:
        """The average share of each modality over the rows predicted as each class."""
        out = {}
        for label in np.unique(self.labels):
            rows = self.labels == label
            out[label.item() if hasattr(label, "item") else label] = {
                m: float(self.shares[rows, j].mean()) for j, m in enumerate(self.modalities)}
        return out


def method_for(fusion: Any) -> str:
    """The method used for a fitted strategy (see the module docstring)."""
    from .fusion.base import capabilities

    # what the strategy declared at registration (register_fusion(explanation=...))
    if capabilities(fusion).get("explanation") == LOG_SHARE and \
            getattr(fusion, "modality_weights_", None):
        return LOG_SHARE
    return LEAVE_ONE_OUT


# Below this many rows (times the modalities asked about), the predictions an explanation
# needs are asked for in one call on stacked copies of the rows: on small batches (a service
# request, a page of rows) a strategy's per-call overhead (one pass per inner-fold expert
# and modality) outweighs the arithmetic. Larger batches ask modality by modality, so the
# memory stays that of one prediction.
STACK_ROWS = 4096


def _stack(block: Any, copies: int) -> Any:
    from .views import is_sparse

    if is_sparse(block):
        from scipy import sparse

        return sparse.vstack([block] * copies, format="csr")
    return np.concatenate([np.asarray(block)] * copies, axis=0)


def _predictions(fusion: Any, views: dict[str, Any], masks: list[dict[str, np.ndarray]],
                 n: int) -> list[np.ndarray]:
    """``fusion.predict_proba(views, mask)`` for each presence mask in ``masks``.

    The strategies explained here predict each row on its own, so the answers are the
    same whether asked for together on stacked rows (small batches) or one by one."""
    if len(masks) * n > STACK_ROWS or len(masks) == 1:
        return [fusion.predict_proba(views, mask) for mask in masks]
    stacked = {m: _stack(v, len(masks)) for m, v in views.items()}
    present = {m: np.concatenate([mask[m] for mask in masks]) for m in views}
    out = fusion.predict_proba(stacked, present)
    return [out[k * n:(k + 1) * n] for k in range(len(masks))]


def explain_views(fusion: Any, views: dict[str, Any], present: dict[str, np.ndarray]
                  ) -> Explanation:
    """Contributions for already-encoded views (see :func:`explain`)."""
    mods = list(fusion.modalities_)
    views = {m: views[m] for m in mods}
    present = {m: np.asarray(present[m], bool) for m in mods}
    n = next(iter(present.values())).shape[0]
    rows = np.arange(n)
    contrib = np.zeros((n, len(mods)))
    method = method_for(fusion)
    none = {m: np.zeros(n, bool) for m in mods}
    if method == LOG_SHARE:
        weights = fusion.modality_weights_
        asked = [m for m in mods if float(weights.get(m, 0.0)) > 0 and present[m].any()]
        masks = [present] + [{**none, m: present[m]} for m in asked]
    else:
        asked = [m for m in mods if present[m].any()]
        masks = [present] + [{**present, m: np.zeros(n, bool)} for m in asked]
    proba, *others = _predictions(fusion, views, masks, n)
    pred = np.argmax(proba, axis=1)
    if method == LOG_SHARE:
        w_present = np.zeros(n)
        for m in mods:
            w_present += weights.get(m, 0.0) * present[m]
        for m, alone in zip(asked, others):
            j = mods.index(m)
            logp = np.log(np.clip(alone, _FLOOR, None))
            centred = logp[rows, pred] - logp.mean(axis=1)
            scale = np.divide(float(weights[m]), w_present, out=np.zeros(n),
                              where=w_present > 0)
            contrib[:, j] = np.where(present[m], scale * centred, 0.0)
    else:
        full = np.log(np.clip(proba[rows, pred], _FLOOR, None))
        for m, without in zip(asked, others):
            j = mods.index(m)
            drop = full - np.log(np.clip(without[rows, pred], _FLOOR, None))
            contrib[:, j] = np.where(present[m], drop, 0.0)
    total = np.abs(contrib).sum(axis=1, keepdims=True)
    shares = np.divide(contrib, total, out=np.zeros_like(contrib), where=total > 0)
    return Explanation(fusion.classes_[pred], proba, mods, contrib, shares, method)


def explain(model: Any, X: Any) -> Explanation:
    """Per-row modality contributions of a fitted :class:`~mmfuse.MultimodalClassifier`.

    The features are computed once; the strategy is then asked for ``M`` more predictions
    (one per modality), which are cheap next to encoding.

    Parameters
    ----------
    model : fitted MultimodalClassifier
    X : the same input as ``predict`` takes

    Returns
    -------
    Explanation
    """
    views, present = model.transform_views(X)
    return explain_views(model.fusion_, views, present)


def holdout_explanation(table: Any, y: Any, groups: Any, cv: Any, fusion: str, *,
                        weights: Any = "cv", random_state: Any = 0,
                        fusion_params: Any = None, inner_cv: int = 5) -> Explanation:
    """Contributions on held-out rows: ``fusion`` fit on the first outer training fold of
    ``cv`` (the same splits as :func:`mmfuse.evaluate.evaluate`), explained on its test fold.

    ``table`` is a :class:`~mmfuse.evaluate.FeatureTable`; stateful encoders are fit on the
    training fold only, and a column that chooses its encoder (``encoders="auto"``, a list)
    chooses it by ``inner_cv`` folds of that training fold, as the evaluation does. Used by
    the HTML report (``mmfuse run --report``).
    """
    from .evaluate import make_splits
    from .fusion import create_fusion

    y = np.asarray(y)
    _, y_enc = np.unique(y, return_inverse=True)
    splits, _ = make_splits(y_enc, groups, cv, random_state)
    train, test = splits[0]
    params = dict(fusion_params or {})
    if getattr(table, "candidates", None):  # the chosen encoders' views, not placeholders
        # (and a column that chose separate experts "a|b" gets them, as in the evaluation)
        views, present, _, classifier = table.choose(train, y_enc, groups, inner_cv,
                                                     random_state)
        if classifier is not None:
            params.setdefault("classifier", classifier)
    else:
        views, present = table.fold_views(train)
    keep = np.any(np.stack([present[m][train] for m in present]), axis=0)
    train = train[keep]
    params.setdefault("weights", weights)
    params.setdefault("random_state", random_state)
    model = create_fusion(fusion, **params)
    model.fit({m: v[train] for m, v in views.items()}, y[train],
              {m: p[train] for m, p in present.items()},
              None if groups is None else np.asarray(groups)[train])
    exp = explain_views(model, {m: v[test] for m, v in views.items()},
                        {m: p[test] for m, p in present.items()})
    exp.true_labels = y[test]
    exp.strategy = fusion
    return exp
