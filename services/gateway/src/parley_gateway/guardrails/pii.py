"""Personal data and secrets in text: found, checked, replaced by ``[redacted:<kind>]``.

Kinds (:data:`KINDS`), each a pattern and, where one exists, a checksum that turns a number
into a likely real one:

- ``email``: ``name@domain.tld``;
- ``phone``: international (``+44 20 7946 0958``), North American (``415-555-0132``), or
  national with a trunk zero (``020 7946 0958``); 8 to 15 digits;
- ``card``: 13 to 19 digits, optionally grouped by spaces or dashes, passing the Luhn check;
- ``iban``: a country code, two check digits and 11 to 30 letters or digits, optionally
  grouped, passing the ISO 13616 mod-97 check;
- ``secret``: API-key-like tokens: ``sk-...`` (OpenAI, Anthropic), ``sk_live_``/``pk_live_``/
  ``rk_`` (Stripe), ``AKIA``/``ASIA`` (AWS access keys), ``ghp_`` and kin (GitHub),
  ``xox?-`` (Slack), ``AIza`` (Google), PEM private-key headers.

A streamed answer arrives in small pieces, and a card number or an e-mail address may be
split across two of them. :class:`StreamRedactor` holds back the end of what it has seen
that may still grow into an item: the last word (``ann.lee`` may be followed by
``@example.com``), a run of digit groups (``+44 20``), any match still under way. The rest
is shown at once. The trade-off: the reader sees an answer about one word later than the
model wrote it (a number written in groups, a few words later), and an item longer than
``hold_limit`` characters is shown in part before it can be recognised; a larger limit
catches longer items and may hold more text back.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
    r"\.[A-Za-z]{2,24}(?![\w-])"
)
_PHONE = re.compile(
    r"(?<![\w+])\+\d{1,3}(?:[ .-]?(?:\(\d{1,4}\)|\d{1,5})){1,5}(?![\w])"
    r"|(?<![\w(])\(\d{2,5}\)[ .-]?\d{3,4}[ .-]?\d{3,4}(?![\w])"
    r"|(?<![\w.-])\d{3}([.-]|\ )\d{3}\1\d{4}(?![\w]|[.-]\d)"
    r"|(?<![\w.-])0\d{1,4}(?:[ .-]?\d{2,4}){2,4}(?![\w]|[.-]\d)"
)
# Card numbers as they are written: one run of digits, or groups of four (4-6-5 for
# American Express) joined by the same space or dash.
_CARD = re.compile(
    r"(?<![\w-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}|\d{4}([ -])\d{6}\2\d{5})"
    r"(?![\w]|[ -]\d)"
)
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}(?![\w])")
_SECRET = re.compile(
    r"(?<![\w-])(?:sk-(?:proj-|ant-|live-|test-|svcacct-)?[A-Za-z0-9_-]{20,}"
    r"|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})(?![\w-])"
    r"|-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"
)


def luhn(digits: str) -> bool:
    """Whether ``digits`` passes the Luhn check (payment card numbers do)."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """Whether ``text`` (spaces allowed) is an IBAN whose check digits hold (ISO 13616)."""
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rotated = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rotated)
    return int(number) % 97 == 1


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _card(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn(digits)


def _phone(text: str) -> bool:
    return 8 <= len(_digits(text)) <= 15


def _any(text: str) -> bool:
    return True


# In order of precedence where two overlap at the same start: the more specific first.
PATTERNS: tuple[tuple[str, re.Pattern[str], Callable[[str], bool]], ...] = (
    ("secret", _SECRET, _any),
    ("iban", _IBAN, iban_valid),
    ("card", _CARD, _card),
    ("email", _EMAIL, _any),
    ("phone", _PHONE, _phone),
)
KINDS = tuple(kind for kind, _, _ in PATTERNS)
_PRECEDENCE = {kind: rank for rank, kind in enumerate(KINDS)}


@dataclass(frozen=True, slots=True)
class Found:
    """One item found in a text: its kind and where it is (``start`` to ``end``)."""

    kind: str
    start: int
    end: int


# Every pattern needs one of these: most text of an answer has none, and is passed on after
# this one search.
_HINT = re.compile(r"[\d@]|[spr]k[-_]|A[KS]IA|gh[pousr]_|xox|AIza|-----BEGIN")


def _candidates(text: str) -> list[tuple[Found, bool]]:
    """Every pattern match in ``text``, checked or not (the flag says whether it passed)."""
    if not _HINT.search(text):
        return []
    return [
        (Found(kind, match.start(), match.end()), check(match.group()))
        for kind, pattern, check in PATTERNS
        for match in pattern.finditer(text)
    ]


def _chosen(candidates: Iterable[tuple[Found, bool]]) -> list[Found]:
    """The checked matches, leftmost first, longest and most specific on a tie, without
    overlaps."""
    valid = sorted(
        (found for found, ok in candidates if ok),
        key=lambda f: (f.start, f.start - f.end, _PRECEDENCE[f.kind]),
    )
    chosen: list[Found] = []
    for found in valid:
        if not chosen or found.start >= chosen[-1].end:
            chosen.append(found)
    return chosen


def find(text: str) -> list[Found]:
    """The personal data and secrets in ``text``, in order, without overlaps."""
    return _chosen(_candidates(text))


def marker(kind: str) -> str:
    return f"[redacted:{kind}]"


def _replace(text: str, found: list[Found], offset: int = 0) -> str:
    parts, at = [], offset
    for item in found:
        parts.append(text[at : item.start])
        parts.append(marker(item.kind))
        at = item.end
    parts.append(text[at:])
    return "".join(parts)


def redact(text: str) -> tuple[str, tuple[str, ...]]:
    """``text`` with every item found replaced by its marker, and the kinds replaced."""
    found = find(text)
    if not found:
        return text, ()
    return _replace(text, found), tuple(item.kind for item in found)


# What a pattern may need to see before a match to know where it starts (its lookbehind).
_CONTEXT = 16
# The last word may still become an e-mail address or a secret.
_WORD = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+@-(")
# Numbers written in groups (cards, phones, IBANs) span several words of these.
_CODE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+()./- ")


def _tail_start(text: str, limit: int) -> int:
    """Where the end of ``text`` that may still grow into an item starts: its last word, or
    the run of digit groups before it (``+44 20 79``, ``GB82 WEST 12``) when it holds a
    digit (or a PEM header's dashes); never more than ``limit`` characters back."""
    floor = max(0, len(text) - limit)
    word = len(text)
    while word > floor and text[word - 1] in _WORD:
        word -= 1
    code = len(text)
    while code > floor and text[code - 1] in _CODE:
        code -= 1
    while code < len(text) and text[code] == " ":
        code += 1
    run = text[code:]
    if code < word and ("-----" in run or any(char.isdigit() for char in run)):
        return code
    return word


class StreamRedactor:
    """Redacts a text that arrives in pieces (see the module docstring).

    ``feed`` takes the next piece and returns what may be shown now, redacted; ``flush`` at
    the end returns the rest. What is held back is the end that may still grow into an item:
    the last word, or a run of digit groups, and any match still under way; never more than
    ``hold_limit`` characters. ``found`` lists the kinds redacted so far, in order.
    """

    def __init__(self, hold_limit: int = 256) -> None:
        self.hold_limit = hold_limit
        self.found: list[str] = []
        self._pending = ""
        self._context = ""

    def feed(self, piece: str) -> str:
        self._pending += piece
        return self._release(final=False)

    def flush(self) -> str:
        return self._release(final=True) if self._pending else ""

    def _release(self, *, final: bool) -> str:
        text = self._context + self._pending
        offset = len(self._context)
        candidates = [(f, ok) for f, ok in _candidates(text) if f.start >= offset]
        if final:
            cut = len(text)
        else:
            cut = max(_tail_start(text, self.hold_limit), offset)
            # Hold back from the start of any match that reaches past the cut: it may still
            # grow, or be the start of a longer one; unless it holds too much already.
            moved = True
            while moved:
                moved = False
                for found, _ in candidates:
                    if found.start < cut < found.end and len(text) - found.start <= (
                        self.hold_limit
                    ):
                        cut, moved = found.start, True
            if cut <= offset:
                return ""
        chosen = _chosen(candidates)
        # An item cut through (only past the hold limit) is redacted whole, now.
        cut = max([cut, *(f.end for f in chosen if f.start < cut < f.end)])
        released = [f for f in chosen if f.end <= cut]
        self.found.extend(f.kind for f in released)
        shown = _replace(text[:cut], released, offset)
        self._context = text[max(0, cut - _CONTEXT) : cut]
        self._pending = text[cut:]
        return shown
