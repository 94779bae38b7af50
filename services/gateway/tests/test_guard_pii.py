"""Personal data and secrets: found by pattern and checksum, redacted in a whole text, in a
text that streams in pieces however it is split, and in log lines; and the per-tenant policy
file that decides where this applies."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parley_gateway.guardrails.logs import RedactingFilter
from parley_gateway.guardrails.pii import StreamRedactor, find, iban_valid, luhn, redact
from parley_gateway.guardrails.policy import Policies, Policy, PolicyError
from parley_gateway.settings import Settings
from parley_runtime.logs import JsonFormatter

# Test numbers published for the purpose (card networks' test cards, the IBAN registry's
# examples, AWS's documented example key).
FOUND = [
    ("write to ann.lee+hr@example.co.uk today", "email", "ann.lee+hr@example.co.uk"),
    ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
    ("call (020) 7946 0958", "phone", "(020) 7946 0958"),
    ("US office 415-555-0132.", "phone", "415-555-0132"),
    ("portable 06 12 34 56 78", "phone", "06 12 34 56 78"),
    ("card 4111 1111 1111 1111 expires", "card", "4111 1111 1111 1111"),
    ("card 5555-5555-5555-4444", "card", "5555-5555-5555-4444"),
    ("amex 3782 822463 10005", "card", "3782 822463 10005"),
    ("card 4012888888881881", "card", "4012888888881881"),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "iban", "GB82 WEST 1234 5698 7654 32"),
    ("DE89370400440532013000", "iban", "DE89370400440532013000"),
    (
        "key sk-proj-abcdefghijklmnopqrstuvwxyz0123",
        "secret",
        "sk-proj-abcdefghijklmnopqrstuvwxyz0123",
    ),
    ("AKIAIOSFODNN7EXAMPLE is the id", "secret", "AKIAIOSFODNN7EXAMPLE"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("token ghp_" + "a" * 36, "secret", "ghp_" + "a" * 36),
    ("-----BEGIN RSA PRIVATE KEY-----", "secret", "-----BEGIN RSA PRIVATE KEY-----"),
]


@pytest.mark.parametrize(("text", "kind", "item"), FOUND)
def test_each_kind_is_found_whole(text: str, kind: str, item: str) -> None:
    (found,) = find(text)
    assert (found.kind, text[found.start : found.end]) == (kind, item)
    assert redact(text) == (text.replace(item, f"[redacted:{kind}]"), (kind,))


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112 fails the Luhn check",
        "IBAN GB82 WEST 1234 5698 7654 33 fails mod 97",
        "we met on 2024-01-15 12:30 about order 12345678",
        "version 1.2.3.4 of the tool, build 20240115",
        "steps 0 1 2 3 4 5 6 7 8 9 in order",
        "the word sk-short is not a key",
        "a@b is not an address",
    ],
)
def test_near_misses_are_left_alone(text: str) -> None:
    assert redact(text) == (text, ())


def test_checksums() -> None:
    assert luhn("79927398713")
    assert not luhn("79927398710")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82WEST12345698765433")


PROSE = st.sampled_from(["The ", "policy ", "says ", "twenty ", "days, ", "ask ", "HR. ", "\n"])
ITEMS = st.sampled_from([item for _, _, item in FOUND])


@settings(max_examples=300, deadline=None, database=None)
@given(
    words=st.lists(st.one_of(PROSE, ITEMS.map(lambda item: item + " ")), max_size=20),
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=50),
)
def test_a_streamed_text_is_redacted_as_the_whole_however_it_is_split(
    words: list[str], cuts: list[int]
) -> None:
    text = "".join(words)
    redactor = StreamRedactor()
    shown, at, index = [], 0, 0
    while at < len(text):
        size = cuts[index % len(cuts)]
        shown.append(redactor.feed(text[at : at + size]))
        at, index = at + size, index + 1
    shown.append(redactor.flush())
    expected, kinds = redact(text)
    assert "".join(shown) == expected
    assert redactor.found == list(kinds)


def test_a_stream_holds_back_only_what_may_still_grow() -> None:
    redactor = StreamRedactor()
    # The last word may become an address; once a space ends it, it is shown.
    assert redactor.feed("Write to ann.lee") == "Write to "
    assert redactor.feed("@example.com") == ""
    assert redactor.feed(" today") == "[redacted:email] "
    # Digit groups are held while they may be a phone or card number.
    assert redactor.feed(" or call +44 20") == "today or call "
    assert redactor.feed(" 7946 0958 now") == "[redacted:phone] "
    assert redactor.flush() == "now"


def test_a_stream_releases_an_unfinished_item_past_the_hold_limit() -> None:
    redactor = StreamRedactor(hold_limit=32)
    shown = redactor.feed("x" * 100)
    assert 100 - 32 <= len(shown) < 100


def test_log_lines_are_redacted() -> None:
    record = logging.makeLogRecord(
        {
            "name": "parley.gateway",
            "levelno": logging.WARNING,
            "levelname": "WARNING",
            "msg": "refused %s for card %s",
            "args": ("ann@example.com", "4111 1111 1111 1111"),
        }
    )
    record.refused = "key AKIAIOSFODNN7EXAMPLE"
    record.count = 3
    assert RedactingFilter().filter(record)
    entry = json.loads(JsonFormatter("gateway").format(record))
    assert entry["message"] == "refused [redacted:email] for card [redacted:card]"
    assert entry["refused"] == "key [redacted:secret]"
    assert entry["count"] == 3


def test_policies_default_to_flag_and_tenants_override() -> None:
    policies = Policies.parse(
        "default:\n  moderation: off\ntenants:\n  acme:\n    injection: block\n    pii: block\n"
    )
    assert policies.of("zeta") == Policy(moderation="off")
    assert policies.of("acme") == Policy(injection="block", pii="block", moderation="off")
    assert Policies.parse("") == Policies()
    assert Policies().of("anyone") == Policy("flag", "flag", "flag", "flag")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("tenants:\n  acme:\n    injection: maybe\n", "tenants.acme.injection: 'maybe'"),
        ("tenants:\n  acme:\n    spam: block\n", "unknown guard 'spam'"),
        ("default: [1, 2]\n", "expected a mapping of guard to level"),
        ("other: 1\n", "expected a mapping with 'default' and 'tenants'"),
        ("default: {a: [\n", "not valid YAML"),
    ],
)
def test_a_wrong_policy_file_says_where(text: str, says: str) -> None:
    with pytest.raises(PolicyError, match=None) as refused:
        Policies.parse(text)
    assert says in str(refused.value)


def test_a_wrong_guardrails_file_stops_the_gateway_at_start(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="GUARDRAILS_FILE"):
        Settings(guardrails_file="/nonexistent/guardrails.yaml")
