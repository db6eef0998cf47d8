"""Content keys of the feature cache: the hash of an item's *bytes* (file content, text,
array values), never its path, and the memoised digest of weight files."""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

_HASH_CHUNK = 1 << 20


# Digests of weight files by (path, size, mtime), so a model's fingerprint does not re-read
# hundreds of MB each time; bounded (least recently used out) so a long-lived process that
# hashes many files does not grow without end.
_FILE_HASH_MEMO_SIZE = 256
_file_hash_memo: OrderedDict[tuple[str, int, int], str] = OrderedDict()
_file_hash_lock = threading.Lock()


def hash_file(path: str | os.PathLike, *, memo: bool = False, what: str | None = None,
              max_bytes: int | None = None) -> str:
    """Hex digest of a file's bytes, read in chunks (memory stays flat for big files).

    Only a regular file is read (symlinks judged by their target), never past the size
    ``os.stat`` gave, and a file that changes while it is read raises
    :class:`~mmfuse.InputError` rather than giving the digest of a mix (see
    :func:`mmfuse._io.iter_regular_file`). ``what`` names the kind of file in errors and
    picks its size limit (default: ``"weights"`` with ``memo=True``, no limit; ``"input"``
    otherwise); ``max_bytes`` overrides the limit.

    ``memo=True`` remembers the digest by (path, size, mtime) for the life of the process:
    right for model weights (hashed once, read many times), not for data files, which are
    hashed by content precisely so that an edit is always seen.
    """
    from .._io import check_regular_file, iter_regular_file

    path = os.fspath(path)
    what = what or ("weights" if memo else "input")
    stat = check_regular_file(path, what, max_bytes)
    token = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if memo:
        with _file_hash_lock:
            if token in _file_hash_memo:
                _file_hash_memo.move_to_end(token)
                return _file_hash_memo[token]
    digest = hashlib.blake2b(digest_size=16)
    for chunk in iter_regular_file(path, what, max_bytes):
        digest.update(chunk)
    value = digest.hexdigest()
    if memo:
        with _file_hash_lock:
            _file_hash_memo[token] = value
            while len(_file_hash_memo) > _FILE_HASH_MEMO_SIZE:
                _file_hash_memo.popitem(last=False)
    return value


def content_key(item: Any, modality: str) -> str | None:
    """Hash of what an item *contains*, or None when it cannot be hashed (then: no caching).

    For ``modality="text"`` a string is the text itself; for images and audio a string is
    a path, and the file's bytes are hashed. Arrays are hashed with dtype and shape, a
    ``(waveform, rate)`` pair with its rate, so equal values mean equal features.
    """
    digest = hashlib.blake2b(digest_size=16)
    try:
        if isinstance(item, str) and modality == "text":
            digest.update(b"text\0" + item.encode("utf-8", "surrogatepass"))
        elif isinstance(item, (str, os.PathLike)):
            return "file:" + hash_file(item, what=modality)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            digest.update(b"bytes\0")
            digest.update(item)
        elif isinstance(item, np.ndarray):
            _update_array(digest, item)
        elif (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray)
              and isinstance(item[1], (int, float, np.integer, np.floating))):
            _update_array(digest, item[0])
            digest.update(f"rate={float(item[1])!r}".encode())
        elif _is_pil_image(item):
            digest.update(f"pil\0{item.mode}\0{item.size}\0".encode())
            digest.update(item.tobytes())
        else:
            return None
    except (OSError, ValueError, TypeError):
        # Unreadable now (InputError is a ValueError: not a regular file, too large, changed
        # while read): prepare() will raise the proper, item-naming error.
        return None
    return digest.hexdigest()


def _update_array(digest: Any, array: np.ndarray) -> None:
    if array.dtype == object:
        raise TypeError("object arrays are not hashable by content")
    digest.update(f"array\0{array.dtype.str}\0{array.shape}\0".encode())
    digest.update(np.ascontiguousarray(array).data)


def _is_pil_image(item: Any) -> bool:
    module = type(item).__module__
    return module.startswith("PIL.") and hasattr(item, "tobytes") and hasattr(item, "mode")
