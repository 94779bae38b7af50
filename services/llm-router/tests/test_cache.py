"""The response cache: in-process and in the real Redis, scoped by tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from parley_llm_router.adapters.redis_state import RedisCache
from parley_llm_router.cache import CachedAnswer, LocalCache, ResponseCache, cache_key, cacheable
from parley_llm_router.messages import (
    ChatRequest,
    FinishReason,
    Message,
    Part,
    Role,
    Tool,
    ToolCallDelta,
    Usage,
)

ANSWER = CachedAnswer(
    "openai",
    "gpt",
    "Hello there.",
    (ToolCallDelta(0, "c1", "lookup", '{"q": 1}'),),
    FinishReason.STOP,
    Usage(10, 3, 0.001, False),
)
REQUEST = ChatRequest(messages=(Message(Role.USER, (Part(text="hi"),)),), temperature=0.0)


@pytest.fixture(params=["local", "redis"])
async def cache(request: pytest.FixtureRequest, unique_prefix: str) -> AsyncIterator[ResponseCache]:
    if request.param == "local":
        yield LocalCache(ttl_seconds=1)
        return
    redis = Redis.from_url(request.getfixturevalue("redis_url"))
    yield RedisCache(redis, 1, prefix=unique_prefix)
    keys = [k async for k in redis.scan_iter(f"{unique_prefix}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_round_trip_and_expiry(cache: ResponseCache) -> None:
    key = cache_key("acme", "default", REQUEST)
    assert await cache.get(key) is None
    await cache.put(key, ANSWER)
    assert await cache.get(key) == ANSWER
    await asyncio.sleep(2.1)
    assert await cache.get(key) is None


def test_keys_are_scoped_by_tenant_and_request() -> None:
    assert cache_key("acme", "default", REQUEST) != cache_key("globex", "default", REQUEST)
    assert cache_key("acme", "default", REQUEST) != cache_key("acme", "fast", REQUEST)
    assert cache_key("acme", "default", REQUEST) == cache_key("acme", "default", REQUEST)


def test_only_deterministic_requests_are_cached_unless_asked() -> None:
    warm = ChatRequest(messages=REQUEST.messages, temperature=0.7)
    tools = ChatRequest(messages=REQUEST.messages, temperature=0.0, tools=(Tool("t", "", "{}"),))
    assert cacheable(REQUEST, "default")
    assert not cacheable(warm, "default")
    assert not cacheable(tools, "default")
    assert cacheable(warm, "prefer")
    assert not cacheable(REQUEST, "bypass")


async def test_an_unreachable_redis_is_a_miss_not_an_error() -> None:
    redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    cache = RedisCache(redis, 60)
    await cache.put("k", ANSWER)
    assert await cache.get("k") is None
    await redis.aclose()
