"""Small I/O helpers: read input files with a clear error; never leave half a file behind."""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a written file gets the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: Largest input file read per modality, in bytes (checked from ``os.stat`` before reading).
#: Generous for real data, small enough that one bad cell cannot exhaust memory.
MAX_FILE_BYTES = {"image": 256 * 2**20, "audio": 1024 * 2**20, "manifest": 4 * 2**30,
                  "array": 4 * 2**30, "model": 4 * 2**30, "weights": None}
_DEFAULT_MAX_BYTES = 1024 * 2**20
_CHUNK = 1 << 20


class InputFile(str):
    """A path whose bytes were already read (once, bounded) by :func:`read_input_file`.

    It is a ``str`` (the path), so anything that takes a path takes it; the readers of
    mmfuse use :attr:`data` instead of reading the file again. Extraction hashes and decodes
    these same bytes, so a file edited between the two can never give a wrong cache hit.
    """

    data: bytes

    def __new__(cls, path: str, data: bytes) -> "InputFile":
        obj = super().__new__(cls, path)
        obj.data = data
        return obj

    def __reduce__(self) -> Any:  # pickles as the plain path (the bytes stay local)
        return (str, (str(self),))


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a plain file"


def check_regular_file(path: str | os.PathLike, what: str,
                       max_bytes: int | None = None) -> os.stat_result:
    """``os.stat`` a path (symlinks resolved, judged by their target) before anything reads
    it: only a regular file no larger than ``max_bytes`` passes.

    Raises :class:`~mmfuse.InputError` naming the path for a missing file, a symlink loop,
    a directory, FIFO, socket or device ("not a regular file") and an over-size file. Never
    opens the path, so it cannot block on a pipe or read an endless device.
    """
    from ._errors import InputError

    name = os.fspath(path)
    try:
        st = os.stat(name)  # follows symlinks: the target is what gets judged
    except FileNotFoundError:
        if os.path.islink(name):
            raise InputError(f"{what} file {name!r} is a broken symbolic link") from None
        raise InputError(f"{what} file not found: {name!r} (it does not exist)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{what} file {name!r} cannot be resolved: symbolic link loop") \
                from None
        raise InputError(f"cannot read {what} file {name!r}: {exc.strerror or exc}") from None
    except ValueError as exc:  # embedded NUL byte and the like
        raise InputError(f"{what} path {name!r} is not a valid path: {exc}") from None
    if not stat.S_ISREG(st.st_mode):
        target = "" if os.path.realpath(name) == os.path.abspath(name) else \
            f" (it resolves to {os.path.realpath(name)!r})"
        raise InputError(f"{what} file {name!r} is not a regular file: it is "
                         f"{_kind_of(st.st_mode)}{target}")
    limit = max_bytes if max_bytes is not None else MAX_FILE_BYTES.get(what, _DEFAULT_MAX_BYTES)
    if limit is not None and st.st_size > limit:
        raise InputError(f"{what} file {name!r} is {st.st_size:,} bytes, above the limit of "
                         f"{limit:,} bytes for {what} files")
    return st


def _read_chunk(fd: int, size: int) -> bytes:
    return os.read(fd, size)


def iter_regular_file(path: str | os.PathLike, what: str,
                      max_bytes: int | None = None) -> Iterator[bytes]:
    """The bytes of a regular file in chunks, never more than its ``stat`` size.

    Checked by :func:`check_regular_file` first; opened with ``O_NONBLOCK`` and checked
    again on the open descriptor (a path swapped for a pipe in between cannot block); a
    file that grows, shrinks or is rewritten while it is read raises
    :class:`~mmfuse.InputError` ("changed while being read") after the last chunk.
    """
    from ._errors import InputError

    name = os.fspath(path)
    before = check_regular_file(name, what, max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) \
        | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(name, flags)
    except OSError as exc:
        raise InputError(f"cannot read {what} file {name!r}: {exc.strerror or exc}") from None
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (
                before.st_dev, before.st_ino):
            raise InputError(f"{what} file {name!r} changed while being opened; it is no "
                             "longer the regular file it was")
        expected = opened.st_size
        remaining = expected
        while remaining > 0:
            chunk = _read_chunk(fd, min(_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
        # One byte more than stat said: a growing file (or one whose stat size lies) is
        # detected rather than followed.
        extra = _read_chunk(fd, 1)
        after = os.fstat(fd)
    except OSError as exc:
        raise InputError(f"cannot read {what} file {name!r}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if remaining > 0 or extra or after.st_size != expected or \
            after.st_mtime_ns != opened.st_mtime_ns:
        got = expected - remaining
        raise InputError(f"{what} file {name!r} changed while being read (its size was "
                         f"{expected:,} bytes when opened; read {got:,}{'+' if extra else ''}, "
                         f"now {after.st_size:,})")


def read_input_file(path: str | os.PathLike, what: str, max_bytes: int | None = None) -> bytes:
    """The bytes of an input file, or an :class:`~mmfuse.InputError` naming it (``what``:
    e.g. ``"image"``) and why it could not be read.

    Only regular files are read (see :func:`check_regular_file`), at most ``max_bytes``
    (default: the limit for ``what`` in :data:`MAX_FILE_BYTES`), and a file that changes
    while it is read is an error. An :class:`InputFile` gives its bytes without a read.
    """
    data = getattr(path, "data", None)
    if isinstance(path, InputFile) and isinstance(data, bytes):
        return data
    return b"".join(iter_regular_file(path, what, max_bytes))


def read_and_hash(path: str | os.PathLike, what: str,
                  max_bytes: int | None = None) -> tuple[InputFile, str]:
    """Read a file once (as :func:`read_input_file`) and hash those bytes: ``(InputFile,
    hex digest)``. The digest is the one :func:`mmfuse.cache.hash_file` gives."""
    import hashlib

    digest = hashlib.blake2b(digest_size=16)
    parts = []
    for chunk in iter_regular_file(path, what, max_bytes):
        digest.update(chunk)
        parts.append(chunk)
    return InputFile(os.fspath(path), b"".join(parts)), digest.hexdigest()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
