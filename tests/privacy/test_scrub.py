"""PII scrubbing rules: a table of what must be replaced and what must be left alone."""

import pytest

from mmfuse.privacy.scrub import find_pii, iban_valid, luhn_valid, scrub_text

CASES = [
    # (input, expected output)
    ("mail ann.lee+x@mail.example.org now", "mail {{EMAIL}} now"),
    ("A.B@EXAMPLE.CO.UK.", "{{EMAIL}}."),
    ("see https://example.org/a?b=c, then", "see {{URL}}, then"),
    ("www.example.com/path.", "{{URL}}."),
    ("ftp://files.example.net/x.zip", "{{URL}}"),
    ("card 4111 1111 1111 1111 ok", "card {{CREDIT_CARD}} ok"),
    ("card 5500-0000-0000-0004", "card {{CREDIT_CARD}}"),
    ("amex 378282246310005", "amex {{CREDIT_CARD}}"),
    ("IBAN GB82 WEST 1234 5698 7654 32.", "IBAN {{IBAN}}."),
    ("DE89370400440532013000 paid", "{{IBAN}} paid"),
    ("host 192.168.0.1 down", "host {{IP_ADDRESS}} down"),
    ("ssn 123-45-6789", "ssn {{SSN}}"),
    ("call +44 20 7946 0958 today", "call {{PHONE}} today"),
    ("call (555) 123-4567", "call {{PHONE}}"),
    ("tel 555.123.4567", "tel {{PHONE}}"),
    ("0044 20 7946 0958", "{{PHONE}}"),
    ("ring 06 12 34 56 78", "ring {{PHONE}}"),
    ("mobile 0612345678", "mobile {{PHONE}}"),
    # left alone
    ("4111 1111 1111 1112 fails Luhn", "4111 1111 1111 1112 fails Luhn"),
    ("GB00WEST12345698765432 bad checksum", "GB00WEST12345698765432 bad checksum"),
    # a long run of digit groups is taken for a phone number even when not an IBAN
    ("GB00 WEST 1234 5698 7654 32", "GB00 WEST {{PHONE}}"),
    ("on 2024-01-15 we saw 12 frogs", "on 2024-01-15 we saw 12 frogs"),
    ("on 15.01.2024 at 10:30", "on 15.01.2024 at 10:30"),
    ("version 3.14.159 of 999.1.1.1", "version 3.14.159 of 999.1.1.1"),
    ("order 1234567 shipped", "order 1234567 shipped"),
    ("pi is 3.14159, born 1999", "pi is 3.14159, born 1999"),
    ("A frog sits on a lily pad.", "A frog sits on a lily pad."),
    ("ssn 000-12-3456 is invalid", "ssn 000-12-3456 is invalid"),
    ("", ""),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_scrub_table(text, expected):
    assert scrub_text(text) == expected


def test_find_pii_reports_kinds_in_rule_order():
    found = find_pii("ann@example.org, +44 20 7946 0958, 4111111111111111")
    assert [k for k, _ in found] == ["EMAIL", "CREDIT_CARD", "PHONE"]


def test_checksums():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and not iban_valid("GB82 WEST 1234 5698 7654 33")


def test_scrub_text_refuses_non_strings():
    with pytest.raises(TypeError, match="expects str"):
        scrub_text(b"bytes")
