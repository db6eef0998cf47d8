"""Rule-based PII scrubbing: identifiers in text become typed placeholders.

Every rule is a regular expression plus, where one exists, a checksum (Luhn for card
numbers, ISO 13616 mod-97 for IBANs) or a range check (IPv4 octets, phone digit counts), so
that ordinary numbers are left alone. Nothing is downloaded and no model runs: the rules
are the whole detector.

==================  ===================================  ==========================================
placeholder         what                                 rule
==================  ===================================  ==========================================
``{{EMAIL}}``       e-mail address                       local@domain.tld
``{{URL}}``         web address                          ``scheme://...`` or ``www....``
``{{IBAN}}``        bank account (IBAN)                  2 letters, 2 check digits, 11-30 more;
                                                         valid mod-97 checksum
``{{CREDIT_CARD}}`` payment card number                  13-19 digits (spaces/dashes allowed);
                                                         valid Luhn checksum
``{{IP_ADDRESS}}``  IPv4 address                         four octets 0-255
``{{SSN}}``         US social security number            ddd-dd-dddd (not 000/666/9xx)
``{{PHONE}}``       phone number                         7-15 digits in groups, with ``+``/``00``
                                                         or separators; dates are not phones
==================  ===================================  ==========================================

Names, street addresses and other free-form identifiers need a language model and are
*not* detected (see the README, "Privacy").

Why not scrubadub: its 2.0.1 release pins ``textblob==0.15.3`` (and pulls nltk, dateparser
and faker); Presidio downloads a spaCy model. The rules here are small and tested
table-driven (``tests/privacy/test_scrub.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

PII_KINDS = ("EMAIL", "URL", "IBAN", "CREDIT_CARD", "IP_ADDRESS", "SSN", "PHONE")


def placeholder(kind: str) -> str:
    return "{{" + kind + "}}"


def luhn_valid(digits: str) -> bool:
    """True when the digit string passes the Luhn checksum (payment cards)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """True for an IBAN with a valid ISO 13616 mod-97 checksum (spaces ignored)."""
    iban = text.replace(" ", "").upper()
    if not 15 <= len(iban) <= 34 or not iban[:2].isalpha() or not iban[2:4].isdigit():
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


def _card(m: re.Match) -> bool:
    digits = _digits(m.group())
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _ipv4(m: re.Match) -> bool:
    return all(int(part) <= 255 for part in m.group().split("."))


def _ssn(m: re.Match) -> bool:
    area, group, serial = m.group().split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


_DATE = re.compile(r"^\d{1,4}[-./ ]\d{1,2}[-./ ]\d{1,4}$")


def _phone(m: re.Match) -> bool:
    text = m.group().strip()
    digits = _digits(text)
    if not 7 <= len(digits) <= 15:
        return False
    if _DATE.match(text):  # 2024-01-15, 15.01.2024
        return False
    international = text.startswith("+") or text.startswith("00")
    grouped = bool(re.search(r"[\s().-]", text))
    # a bare run of digits is a phone number only when long enough to be one
    return international or grouped or len(digits) >= 10


_RULES: list[tuple[str, re.Pattern, Callable[[re.Match], bool] | None]] = [
    ("EMAIL", re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
     None),
    ("URL", re.compile(r"\b(?:https?|ftp)://[^\s<>\"']*[^\s<>\"'.,;:!?)]"
                       r"|\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:[/?#][^\s<>\"']*[^\s<>\"'.,;:!?)])?",
                       re.IGNORECASE), None),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
     lambda m: iban_valid(m.group())),
    ("CREDIT_CARD", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    ("IP_ADDRESS", re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"), _ipv4),
    ("SSN", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), _ssn),
    ("PHONE", re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d\s().-]{5,}\d(?!\w)"), _phone),
]


def find_pii(text: str) -> list[tuple[str, str]]:
    """The identifiers :func:`scrub_text` would replace, as ``(kind, matched text)`` in
    rule order (for tests and reports; do not log the result)."""
    found: list[tuple[str, str]] = []
    for kind, pattern, valid in _RULES:
        def take(m: re.Match, kind: str = kind, valid=valid) -> str:
            if valid is None or valid(m):
                found.append((kind, m.group()))
                return placeholder(kind)
            return m.group()

        text = pattern.sub(take, text)
    return found


def scrub_text(text: str) -> str:
    """Replace e-mails, URLs, IBANs, card numbers, IPv4 addresses, US SSNs and phone numbers
    by typed placeholders such as ``{{EMAIL}}``.

    Rules run in the order of :data:`PII_KINDS`; each sees the text left by the previous
    ones, so a URL's e-mail is one ``{{EMAIL}}`` and a card number is never also a phone.

    Examples
    --------
    >>> scrub_text("mail ann@example.org or call +44 20 7946 0958")
    'mail {{EMAIL}} or call {{PHONE}}'
    """
    if not isinstance(text, str):
        raise TypeError(f"scrub_text expects str; got {type(text).__name__}")
    for kind, pattern, valid in _RULES:
        if valid is None:
            text = pattern.sub(placeholder(kind), text)
        else:
            text = pattern.sub(lambda m, kind=kind, valid=valid:
                               placeholder(kind) if valid(m) else m.group(), text)
    return text
