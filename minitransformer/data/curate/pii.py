"""Scrubbing personal data: e-mail addresses, phone numbers and IPv4 addresses (as in Dolma).

A language model can memorise and later emit a string it saw during pre-training, so
contact details of private people should not reach it. Regular expressions find the three
kinds of personal data that have a fixed shape; each match is replaced by a placeholder
that keeps the sentence readable ("write to |||EMAIL_ADDRESS||| for details"). A document
with more than ``max_hits`` matches is dropped instead: it is a contact list or a log file,
and what is left after scrubbing it is not prose.

What the patterns deliberately leave alone, and why:

* ISBNs and other long digit strings: a phone number needs separators (space, hyphen or a
  bracketed area code) or a leading "+", and must not be glued to a longer run of digits,
  hyphens or dots, nor follow another number and a separator ("978 030 640 6157"); a number
  preceded by "ISBN" is never a phone number. Ten bare digits are
  therefore not matched: "0306406152" could as well be an ISBN-10 as a phone.
* Version strings: an IPv4 address has exactly four dotted parts, each 0-255 with no leading
  zero, not preceded by a letter ("v1.2.3.4") and not followed by a fifth part. Phone numbers
  never use dots as separators, so a dotted triple such as "555.123.4567" is read as a
  version, not as a phone; that misses one phone style in exchange for never scrubbing a
  version number.
"""
from __future__ import annotations

import dataclasses

import regex

from .knobs import knob

EMAIL = regex.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
IPV4 = regex.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")

PHONE = regex.compile(
    r"(?<![\w+/.-])(?<!(?i:ISBN)(?:-1[03])?:?\s*)"
    r"(?:"
    r"\+\d{1,3}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{1,4}(?:[ -]\d{2,4}){1,4}"  # +44 20 7946 0958
    r"|\+\d{8,15}"                                                    # +15551234567
    r"|(?<!\d[ -])(?:1[ -])?(?:\(\d{3}\) ?|\d{3}[ -])\d{3}[ -]\d{4}"  # 1 (555) 123-4567
    r")(?![\w-]|\.\d)")


@dataclasses.dataclass(frozen=True)
class PIIConfig:
    enabled: bool = knob(True, "scrub e-mail addresses, phone numbers and IPv4 addresses")
    emails: bool = knob(True, "scrub e-mail addresses")
    phones: bool = knob(True, "scrub phone numbers")
    ipv4: bool = knob(True, "scrub IPv4 addresses")
    max_hits: int = knob(5, "drop documents with more matches than this instead of scrubbing them")
    email_placeholder: str = knob("|||EMAIL_ADDRESS|||", "replacement for an e-mail address")
    phone_placeholder: str = knob("|||PHONE_NUMBER|||", "replacement for a phone number")
    ipv4_placeholder: str = knob("|||IP_ADDRESS|||", "replacement for an IPv4 address")


def scrub_pii(text: str, cfg: PIIConfig = PIIConfig()) -> tuple[str, dict[str, int]]:
    """(``text`` with each match replaced by its placeholder, matches per kind).

    E-mail addresses go first, so the digits of "jo.1984@example.com" are never taken for a
    phone number; IPv4 before phones for the same reason.
    """
    hits: dict[str, int] = {}
    for kind, on, pattern, placeholder in (
            ("email", cfg.emails, EMAIL, cfg.email_placeholder),
            ("ipv4", cfg.ipv4, IPV4, cfg.ipv4_placeholder),
            ("phone", cfg.phones, PHONE, cfg.phone_placeholder)):
        if on:
            text, n = pattern.subn(placeholder, text)
            if n:
                hits[kind] = n
    return text, hits
