"""Exceptions raised by mmfuse. The library raises; only the CLI prints."""

from __future__ import annotations

import importlib
from types import ModuleType


class MmfuseError(Exception):
    """Base class of every error mmfuse raises on purpose."""


class InputError(MmfuseError, ValueError):
    """Bad input: the message names the file, row or field and what was expected."""


class MissingDependencyError(MmfuseError, ImportError):
    """An optional dependency is not installed; the message gives the pip line that fixes it."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or fail with the ``pip install`` line that brings it.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"cairosvg"``.
    extra : str
        The mmfuse extra that installs it, e.g. ``"svg"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module!r} is needed for this feature but is not installed; "
            f'install it with: pip install "mmfuse[{extra}]"'
        ) from exc


class DeviceError(MmfuseError, ValueError):
    """A device was asked for that this machine does not have, or is not a device at all.

    Not an :class:`~mmfuse.InputError`: ``on_error="skip"`` skips bad items, never a bad
    device.
    """
