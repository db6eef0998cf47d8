"""Feature extractors, registered by name."""

from .base import Encoder, ItemError, MissingItem, is_missing
from .registry import create_encoder, list_encoders, register_encoder

__all__ = ["Encoder", "ItemError", "MissingItem", "create_encoder", "is_missing", "list_encoders", "register_encoder"]
