"""Text cleaning: normalisation, control characters, whitespace and decoding errors."""

from __future__ import annotations

import pytest

from mmfuse import InputError
from mmfuse.preprocess.text import clean_text


@pytest.mark.parametrize("raw, expected", [
    ("  A frog.\n", "A frog."),
    ("a\t\tb \r\n c", "a b c"),
    ("ＡＢＣ　１２３", "ABC 123"),            # NFKC: full-width letters and ideographic space
    ("ﬁne caf\u0065\u0301", "fine café"),     # ligature and combining accent composed
    ("null\x00byte\x07bell", "nullbytebell"),  # control characters removed
    ("zero\u200bwidth\u00adsoft", "zerowidthsoft"),
    ("line\u2028separator\x85next", "line separator next"),
    ("", ""),
    (" \t\n ", ""),
    ("\x00\x01", ""),
])
def test_clean_text(raw, expected):
    assert clean_text(raw) == expected


def test_bytes_are_decoded_as_utf8_without_bom():
    assert clean_text("\ufeffcafé au lait".encode()) == "café au lait"
    assert clean_text(bytearray(b"ok")) == "ok"


def test_non_utf8_bytes_say_where():
    latin1 = "café au lait".encode("latin-1")
    with pytest.raises(InputError, match=r"not valid UTF-8: invalid byte\(s\) e9 at byte offset 3"):
        clean_text(latin1)


def test_lowercase_and_max_chars():
    assert clean_text("Hello  World", lowercase=True) == "hello world"
    assert clean_text("Hello  World", max_chars=6) == "Hello"  # trailing space dropped
    assert clean_text("Hi", max_chars=10) == "Hi"


@pytest.mark.parametrize("item, message", [
    (42, "expected text as str or bytes; got int"),
    (["a"], "got list"),
])
def test_other_types_are_refused(item, message):
    with pytest.raises(InputError, match=message):
        clean_text(item)


@pytest.mark.parametrize("max_chars", [0, -1, 2.5])
def test_bad_max_chars(max_chars):
    with pytest.raises(ValueError, match="max_chars must be a positive int"):
        clean_text("text", max_chars=max_chars)


def test_lone_surrogates_are_dropped():
    # They cannot be encoded (e.g. into a cache key) and carry no text.
    cleaned = clean_text("ok\udcff!")
    assert cleaned == "ok!"
    cleaned.encode("utf-8")
