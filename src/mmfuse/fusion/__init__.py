"""Fusion strategies, registered by name (``create_fusion("late")``)."""

from .base import FusionStrategy, create_fusion, list_fusions, register_fusion

__all__ = ["FusionStrategy", "create_fusion", "list_fusions", "register_fusion"]
