"""Fusion strategies, registered by name (``create_fusion("late")``)."""

from .base import FusionStrategy, create_fusion, fusion_name, list_fusions, register_fusion

__all__ = ["AttentionFusion", "AutoFusion", "EarlyFusion", "FusionStrategy", "GMUFusion",
           "LateFusion", "LowRankFusion", "SeedBaseline", "StackingFusion", "WeightedSumFusion",
           "create_fusion", "fusion_name", "list_fusions", "register_fusion"]

# The strategy classes, imported when first asked for (``from mmfuse.fusion import
# LateFusion``) so that ``import mmfuse.fusion`` stays light (the neural ones need torch).
_CLASSES = {"EarlyFusion": "early", "WeightedSumFusion": "weighted", "LateFusion": "late",
            "StackingFusion": "stacking", "SeedBaseline": "baseline", "AutoFusion": "auto",
            "GMUFusion": "neural", "AttentionFusion": "neural", "LowRankFusion": "neural"}


def __getattr__(name: str):
    if name in _CLASSES:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
