"""Saving and loading fitted models without executing code from the file.

``allowlist`` says which types a file may hold, ``codec`` turns an object graph into JSON +
arrays and back, ``container`` is the zip of header and payload, ``model_file`` saves and
loads a :class:`~mmfuse.MultimodalClassifier` (see its docstring for the format).
"""

from .allowlist import register_safe_type, safe_types
from .container import (FORMAT, HEADER_NAME, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES,
                        MIN_SCHEMA_VERSION, PAYLOAD_NAME, SCHEMA_VERSION, SUFFIX, ModelFileError,
                        jsonable)
from .model_file import FingerprintMismatchError, load, read_header, save

__all__ = ["FORMAT", "HEADER_NAME", "MAX_HEADER_BYTES", "MAX_PAYLOAD_BYTES", "MIN_SCHEMA_VERSION",
           "PAYLOAD_NAME", "SCHEMA_VERSION", "SUFFIX", "FingerprintMismatchError",
           "ModelFileError", "jsonable", "load", "read_header", "register_safe_type",
           "safe_types", "save"]
