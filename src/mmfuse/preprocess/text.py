"""Text cleaning: one canonical form for captions, titles and descriptions."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from .._errors import InputError

_WHITESPACE = re.compile(r"\s+")
# Control characters that are not whitespace (whitespace ones become spaces below), lone
# surrogates (they cannot be encoded, e.g. into a cache) and invisible format characters
# that only get in the way of tokenisers.
_UNWANTED = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f\ud800-\udfff"
                       "\u00ad\u200b\u2060\ufeff]")


def clean_text(item: Any, *, lowercase: bool = False, max_chars: int | None = None) -> str:
    """Normalise a text item: decode, NFKC, drop control characters, collapse whitespace.

    Parameters
    ----------
    item : str or bytes
        The text; bytes must be UTF-8 (a leading byte-order mark is dropped).
    lowercase : bool, default=False
        Lower-case the result.
    max_chars : int, optional
        Keep at most this many characters (cut after cleaning, trailing space removed).

    Returns
    -------
    str
        The cleaned text; ``""`` when nothing is left, which callers treat as missing.

    Raises
    ------
    InputError
        If ``item`` is neither str nor bytes, or the bytes are not valid UTF-8.

    Examples
    --------
    >>> clean_text("  Ｈello\\tworld\\x00 ")
    'Hello world'
    """
    if isinstance(item, (bytes, bytearray, memoryview)):
        raw = bytes(item)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad = raw[exc.start:exc.end].hex(" ")
            raise InputError(
                f"text is not valid UTF-8: invalid byte(s) {bad} at byte offset {exc.start} "
                f"({exc.reason}); decode it with the right encoding first"
            ) from None
    elif isinstance(item, str):
        text = item
    else:
        raise InputError(f"expected text as str or bytes; got {type(item).__name__}")
    if max_chars is not None and (not isinstance(max_chars, int) or max_chars < 1):
        raise ValueError(f"max_chars must be a positive int or None; got {max_chars!r}")

    text = unicodedata.normalize("NFKC", text)
    text = _UNWANTED.sub("", text)
    text = _WHITESPACE.sub(" ", text).strip()
    if lowercase:
        text = text.lower()
    if max_chars is not None:
        text = text[:max_chars].rstrip()
    return text

