"""Circuit breakers: one behaviour, in-process and shared through the real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from parley_llm_router.adapters.redis_state import RedisBreakers
from parley_llm_router.breaker import (
    Admission,
    BreakerPolicy,
    Breakers,
    BreakerState,
    LocalBreakers,
)

POLICY = BreakerPolicy(
    consecutive_failures=3,
    window_seconds=2.0,
    min_requests=6,
    error_rate=0.5,
    cooldown_seconds=0.2,
    probe_timeout_seconds=0.3,
)


@pytest.fixture(params=["local", "redis"])
async def breakers(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[Breakers]:
    if request.param == "local":
        yield LocalBreakers(POLICY)
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisBreakers(redis, POLICY, prefix=unique_prefix)
    keys = [k async for k in redis.scan_iter(f"{unique_prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def fail(breakers: Breakers, times: int, key: str = "openai/gpt") -> BreakerState:
    state = BreakerState.CLOSED
    for _ in range(times):
        state = await breakers.record(key, ok=False)
    return state


async def test_opens_after_consecutive_failures_and_rejects(breakers: Breakers) -> None:
    assert await fail(breakers, 2) == BreakerState.CLOSED
    assert await breakers.admit("openai/gpt") == Admission.ALLOW
    assert await fail(breakers, 1) == BreakerState.OPEN
    assert await breakers.admit("openai/gpt") == Admission.REJECT
    assert await breakers.admit("other/model") == Admission.ALLOW


async def test_a_success_resets_the_consecutive_count(breakers: Breakers) -> None:
    await fail(breakers, 2)
    await breakers.record("openai/gpt", ok=True)
    assert await fail(breakers, 2) == BreakerState.CLOSED


async def test_opens_on_the_error_rate_over_the_window(breakers: Breakers) -> None:
    for ok in [True, False, True, False, True, False]:  # never three failures in a row
        state = await breakers.record("openai/gpt", ok=ok)
    assert state == BreakerState.OPEN


async def test_half_opens_after_the_cooldown_with_one_probe(breakers: Breakers) -> None:
    await fail(breakers, 3)
    await asyncio.sleep(0.25)
    assert await breakers.state("openai/gpt") == BreakerState.HALF_OPEN
    answers = await asyncio.gather(*(breakers.admit("openai/gpt") for _ in range(8)))
    assert answers.count(Admission.PROBE) == 1
    assert answers.count(Admission.REJECT) == 7


async def test_a_good_probe_closes_and_a_bad_one_reopens(breakers: Breakers) -> None:
    await fail(breakers, 3)
    await asyncio.sleep(0.25)
    assert await breakers.admit("openai/gpt") == Admission.PROBE
    assert await breakers.record("openai/gpt", ok=False) == BreakerState.OPEN
    assert await breakers.admit("openai/gpt") == Admission.REJECT
    await asyncio.sleep(0.25)
    assert await breakers.admit("openai/gpt") == Admission.PROBE
    assert await breakers.record("openai/gpt", ok=True) == BreakerState.CLOSED
    assert await breakers.admit("openai/gpt") == Admission.ALLOW


async def test_a_probe_that_never_reports_frees_its_place(breakers: Breakers) -> None:
    await fail(breakers, 3)
    await asyncio.sleep(0.25)
    assert await breakers.admit("openai/gpt") == Admission.PROBE
    assert await breakers.admit("openai/gpt") == Admission.REJECT
    await asyncio.sleep(0.35)
    assert await breakers.admit("openai/gpt") == Admission.PROBE


async def test_replicas_share_the_state_through_redis(redis_url: str, unique_prefix: str) -> None:
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    replica_a = RedisBreakers(first, POLICY, prefix=unique_prefix)
    replica_b = RedisBreakers(second, POLICY, prefix=unique_prefix)
    await asyncio.gather(*(replica_a.record("m", ok=False) for _ in range(2)))
    await replica_b.record("m", ok=False)
    assert await replica_a.admit("m") == Admission.REJECT
    assert await replica_b.state("m") == BreakerState.OPEN
    keys = [k async for k in first.scan_iter(f"{unique_prefix}*")]
    await first.delete(*keys)
    await first.aclose()
    await second.aclose()


async def test_without_redis_breakers_fail_open_quickly() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    breakers = RedisBreakers(redis, POLICY)
    started = asyncio.get_running_loop().time()
    assert await breakers.admit("m") == Admission.ALLOW
    assert await breakers.record("m", ok=False) == BreakerState.CLOSED
    assert asyncio.get_running_loop().time() - started < 2
    await redis.aclose()
