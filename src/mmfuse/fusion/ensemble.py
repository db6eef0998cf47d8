"""Greedy ensemble selection with replacement (Caruana et al., ICML 2004) over ``auto``'s
candidates' inner out-of-fold probabilities, scored honestly on held-out inner folds."""

from __future__ import annotations

import numpy as np

from .choice import one_se_choice

ENSEMBLE_PREFIX = "ensemble"
PROBA_FLOOR = 1e-12
#: A candidate joins the ensemble only if it lowers the inner log-loss by at least this much.
ENSEMBLE_TOL = 1e-4


class GreedyEnsembleMixin:
    """``AutoFusion``'s ensemble selection (uses its ``ensemble_size``, ``inner_scores_``,
    ``inner_fold_scores_`` and ``_record``)."""

    def _greedy(self, oof: dict[str, np.ndarray], names: list[str], y: np.ndarray,
                rows: np.ndarray) -> dict[str, int]:
        """Greedy ensemble selection with replacement on ``rows``: member counts."""
        def log_loss(p: np.ndarray) -> float:
            return float(-np.log(np.clip(p[np.arange(len(rows)), y[rows]],
                                         PROBA_FLOOR, 1.0)).mean())

        sub = {n: oof[n][rows] for n in names}
        start = min(names, key=lambda n: (log_loss(sub[n]), n))
        counts, total, size = {start: 1}, sub[start].copy(), 1
        current = log_loss(total)
        while size < int(self.ensemble_size):
            scores = {n: log_loss((total + sub[n]) / (size + 1)) for n in names}
            pick = min(names, key=lambda n: (scores[n], n))
            if scores[pick] > current - ENSEMBLE_TOL:
                break
            counts[pick] = counts.get(pick, 0) + 1
            total += sub[pick]
            size += 1
            current = scores[pick]
        return counts

    @staticmethod
    def _average(oof: dict[str, np.ndarray], counts: dict[str, int]) -> np.ndarray:
        return sum(c * oof[n] for n, c in counts.items()) / sum(counts.values())

    def _select_ensemble(self, oof: dict[str, np.ndarray], y: np.ndarray, best: str,
                         splits: list, simple: set) -> dict[str, int]:
        """Greedy ensemble selection with replacement on the inner out-of-fold
        probabilities; ``{best: 1}`` unless the ensemble wins under the one-SE rule.

        The selection is itself a fit, so it is scored like the others: on each inner fold,
        the members are selected on the other folds' rows and the average is scored on this
        fold's rows (selecting and scoring on the same rows flattered the ensemble, which
        then lost to the equal-weight fusions on unseen groups: measured on tuxpaint and
        tuxpaint-grouped, see benchmarks/RESULTS.md).
        """
        names = [n for n in self.inner_scores_ if n in oof and not np.isnan(oof[n]).any()]
        if best not in names or len(names) < 2:
            return {best: 1}
        counts = self._greedy(oof, names, y, np.arange(len(y)))
        self.ensemble_candidate_ = dict(counts)
        if len(counts) < 2:
            return {best: 1}
        honest = np.zeros_like(oof[best])
        for _train, test in splits:
            fold_counts = self._greedy(oof, names, y, np.setdiff1d(np.arange(len(y)), test))
            honest[test] = self._average({n: oof[n][test] for n in fold_counts}, fold_counts)
        name = f"{ENSEMBLE_PREFIX}({'+'.join(sorted(counts))})"
        self._record(name, honest, y, splits)
        fold_scores = {n: np.asarray(self.inner_fold_scores_[n]) for n in (best, name)}
        if one_se_choice(fold_scores, {best} if best in simple else set()) != name:
            return {best: 1}
        if best in simple or self.inner_scores_[name] >= self.inner_scores_[best]:
            # (against a learned best, the ensemble must also be at least as accurate)
            return counts
        return {best: 1}
