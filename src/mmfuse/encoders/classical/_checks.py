"""Parameter checks shared by the classical encoders."""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def _check_positive_int(value: Any, name: str) -> None:
    if not _is_positive_int(value):
        raise ValueError(f"{name} must be a positive int; got {value!r}")
