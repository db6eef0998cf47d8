"""API keys: read from a file and the environment, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Mapping

from .._errors import InputError

API_KEYS_ENV = "MMFUSE_API_KEYS"
# Paths anyone may call when API keys are set: liveness says nothing about the model.
OPEN_PATHS = frozenset({"/health"})


def load_api_keys(path: str | os.PathLike | None = None,
                  environ: Mapping[str, str] | None = None) -> list[str]:
    """API keys from a key file and from ``$MMFUSE_API_KEYS``.

    Parameters
    ----------
    path : path-like, optional
        A text file with one key per line; blank lines and lines starting with ``#`` are
        skipped.
    environ : mapping, optional
        Where to read ``MMFUSE_API_KEYS`` (keys separated by commas or whitespace); default
        ``os.environ``.

    Returns
    -------
    list of str
        Every key from both sources, file first; empty when neither gives one.

    Raises
    ------
    InputError
        The file cannot be read, holds no key, or a key has characters a header cannot
        carry. Messages name the file and line, never a key.
    """
    environ = os.environ if environ is None else environ
    keys: list[str] = []
    if path is not None:
        try:
            text = open(os.fspath(path), encoding="utf-8").read()  # noqa: SIM115
        except OSError as exc:
            raise InputError(f"cannot read the API key file {os.fspath(path)!r}: "
                             f"{exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InputError(f"the API key file {os.fspath(path)!r} is not UTF-8 text") from None
        found = []
        for number, line in enumerate(text.splitlines(), 1):
            key = line.strip()
            if not key or key.startswith("#"):
                continue
            _check_key(key, f"line {number} of the API key file {os.fspath(path)!r}")
            found.append(key)
        if not found:
            raise InputError(f"the API key file {os.fspath(path)!r} holds no key; expected one "
                             f"key per line")
        keys += found
    for i, key in enumerate(environ.get(API_KEYS_ENV, "").replace(",", " ").split(), 1):
        _check_key(key, f"key {i} of ${API_KEYS_ENV}")
        keys.append(key)
    return keys


def _check_key(key: str, where: str) -> None:
    if not all(33 <= ord(c) <= 126 for c in key):
        raise InputError(f"{where}: a key must be printable ASCII without spaces (it travels in "
                         f"an HTTP header)")


class KeyCheck:
    """Constant-time API key check; holds SHA-256 digests only, never the keys."""

    def __init__(self, keys: Iterable[str]):
        if isinstance(keys, str):
            raise InputError("api_keys must be a list of keys, not one string")
        self._digests = []
        for i, key in enumerate(keys, 1):
            if not isinstance(key, str):
                raise InputError(f"api_keys: key {i} must be a str; got {type(key).__name__}")
            _check_key(key, f"api_keys: key {i}")
            self._digests.append(hashlib.sha256(key.encode()).digest())

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:
        return f"KeyCheck({len(self._digests)} keys)"

    def verdict(self, headers: Iterable[tuple[bytes, bytes]]) -> str:
        """``"ok"``, ``"missing"`` or ``"invalid"`` for a request's raw ASGI headers."""
        given = []
        for name, value in headers:
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer" and token.strip():
                    given.append(token.strip())
            elif name == b"x-api-key" and value.strip():
                given.append(value.strip())
        if not given:
            return "missing"
        ok = False
        for candidate in given:
            digest = hashlib.sha256(candidate).digest()
            for known in self._digests:  # every key compared: time does not depend on which
                ok |= hmac.compare_digest(digest, known)
        return "ok" if ok else "invalid"
