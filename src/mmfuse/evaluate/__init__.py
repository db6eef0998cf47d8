"""Evaluation: leak-free cross-validation (:mod:`~mmfuse.evaluate.crossval`: the
configurations compared, the per-fold fitting, the results table; :mod:`~mmfuse.evaluate.folds`:
the outer splits), robustness to missing modalities (:mod:`~mmfuse.evaluate.robustness`) and
the DP evaluation (:mod:`~mmfuse.evaluate.dp`), all three run by one cross-validation engine
(:mod:`~mmfuse.evaluate.engine`: the feature table, the outer folds, the loop over them).
Reports of a result are in :mod:`mmfuse.report`.

``from mmfuse.evaluate import evaluate`` is the public entry point.
"""

from .crossval import (BASELINE, DEFAULT_STRATEGIES, Config, EvaluationResult, Row, evaluate,
                       make_configs)
from .engine import FeatureTable
from .folds import make_splits, mean_ci95
from .robustness import RobustnessResult, RobustnessRow, evaluate_robustness

__all__ = ["BASELINE", "DEFAULT_STRATEGIES", "Config", "EvaluationResult", "FeatureTable",
           "RobustnessResult", "RobustnessRow", "Row", "evaluate", "evaluate_robustness",
           "make_configs", "make_splits", "mean_ci95"]
