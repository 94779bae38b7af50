"""The rules of limits without a server: the LIMITS_FILE as an operator writes it (and every way
it can be wrong, each one line naming the place), and the rate algorithm's arithmetic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parley_gateway.limits import gcra
from parley_gateway.limits.gcra import Meter
from parley_gateway.limits.policy import load_policy

GOOD = """
tiers:
  gold:
    chat: {api_key: 300/minute, user: 120/minute, tenant: 3000/minute}
    reads: {user: {rate: 20/second, burst: 100}}
    streams: {user: 16, tenant: 400}
    tokens:
      user: {day: 2000000}
      tenant: {month: 500000000}
tenants:
  acme: gold
  globex: unlimited
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(text)
    return path


def test_a_tenant_gets_its_tier_and_the_rest_the_default(tmp_path: Path) -> None:
    policy = load_policy(_file(tmp_path, GOOD), "standard")
    name, gold = policy.tier_of("acme")
    assert name == "gold"
    chat = gold.rates("chat")
    assert chat.user is not None
    assert (chat.user.count, chat.user.period_seconds) == (120, 60)
    assert chat.user.burst == 120  # all of a period's requests may go at once by default
    reads = gold.rates("reads").user
    assert reads is not None
    assert (reads.count, reads.period_seconds, reads.burst) == (20, 1, 100)
    assert gold.rates("documents").user is None  # left out: unlimited
    assert gold.streams.user == 16
    assert gold.tokens.user.day == 2_000_000
    assert gold.tokens.user.month is None
    assert policy.tier_of("globex")[0] == "unlimited"
    assert policy.tier_of("initech")[0] == "standard"
    assert policy.tier_of("initech")[1].rates("chat").user is not None


def test_without_a_file_the_built_in_tiers_apply() -> None:
    policy = load_policy(None, "unlimited")
    name, tier = policy.tier_of("anyone")
    assert name == "unlimited"
    assert tier.rates("chat").user is None
    assert tier.streams.user is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tiers: {gold: {chat: {user: 10/fortnight}}}", "tiers.gold.chat.user: a rate is written"),
        ("tiers: {gold: {chat: {user: 0/minute}}}", "tiers.gold.chat.user.count"),
        ("tiers: {gold: {chats: {}}}", "tiers.gold.chats: Extra inputs"),
        ("tiers: {gold: {streams: {user: -1}}}", "tiers.gold.streams.user"),
        ("tiers: {gold: {chat: {user: {rate: 1/second, bust: 2}}}}", "unknown key 'bust'"),
        ("tenants: {acme: platinum}", "tenants.acme: no tier named 'platinum'"),
        ("tiers: [gold", "not valid YAML at line 1"),
    ],
)
def test_a_wrong_file_is_refused_naming_the_place(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="LIMITS_FILE") as refused:
        load_policy(_file(tmp_path, text), "standard")
    assert problem in str(refused.value)
    assert "\n" not in str(refused.value)


def test_an_unknown_default_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="LIMITS_DEFAULT_TIER 'gold' is not a tier"):
        load_policy(None, "gold")


def test_the_gateway_will_not_start_with_a_wrong_limits_file(tmp_path: Path) -> None:
    path = _file(tmp_path, "tenants: {acme: platinum}")
    run = subprocess.run(
        [sys.executable, "-m", "parley_gateway.main"],
        env={"LIMITS_FILE": str(path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"gateway: invalid settings: LIMITS_FILE {path}: tenants.acme: no tier named 'platinum'"
    ]


SECOND = gcra.MICROS


def test_a_burst_goes_at_once_then_one_request_per_interval() -> None:
    meter = Meter(interval=SECOND, burst=3)  # 1 per second, 3 at once
    tat: int | None = None
    now = 1_000 * SECOND
    remaining = []
    for _ in range(3):
        passed, after, tallies = gcra.take([tat], [meter], now)
        assert passed
        tat = after[0]
        remaining.append(tallies[0].remaining)
    assert remaining == [2, 1, 0]
    passed, _, tallies = gcra.take([tat], [meter], now)
    assert not passed
    assert tallies[0].retry_after == SECOND  # the next one passes in a second
    assert tallies[0].reset == 3 * SECOND  # whole again in three
    passed, after, tallies = gcra.take([tat], [meter], now + SECOND)
    assert passed
    assert tallies[0].remaining == 0


def test_a_request_one_limit_refuses_uses_nothing_of_the_others() -> None:
    roomy, tight = Meter(SECOND, 10), Meter(SECOND, 1)
    now = 50 * SECOND
    passed, after, _ = gcra.take([None, None], [roomy, tight], now)
    assert passed
    passed, _kept, tallies = gcra.take(after, [roomy, tight], now)
    assert not passed
    assert tallies[0].remaining == 9
    assert tallies[0].retry_after == 0
    assert tallies[1].remaining == 0
    assert tallies[1].retry_after == SECOND
    # Refused: nothing is stored, so the roomy limit still has its 9.
    assert gcra.peek(after[0], roomy, now).remaining == 9


def test_an_idle_limit_is_whole_and_never_more() -> None:
    meter = Meter(SECOND, 5)
    assert gcra.peek(None, meter, SECOND).remaining == 5
    assert gcra.peek(0, meter, 10_000 * SECOND).remaining == 5
