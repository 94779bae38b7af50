"""Limits in Redis under the conditions a deployment meets: many requests at once from
several clients (replicas), a gateway that died holding stream slots, and a Redis that stops
answering (``LIMITS_ON_REDIS_ERROR`` open or closed), on a private ``redis-server``."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway.auth import issue_token
from parley_gateway.limits.gcra import MICROS, Meter
from parley_gateway.limits.memory_store import MemoryStore
from parley_gateway.limits.redis_store import RedisStore, connect
from parley_gateway.limits.store import LimitStore, StoreUnavailable
from parley_gateway.settings import DEV_SECRET
from parley_testkit.redis import PrivateRedis

ACCEPTED = conv.TurnEvent(
    accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
)
DONE = conv.TurnEvent(done=conv.TurnDone(message=conv.Message(id="a1", conversation_id="c1")))
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]


@pytest.fixture
async def private_redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        yield redis
    finally:
        await redis.kill()


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[LimitStore]:
    if request.param == "memory":
        yield MemoryStore()
        return
    redis_store = RedisStore(connect(request.getfixturevalue("redis_url")))
    try:
        yield redis_store
    finally:
        await redis_store.close()


def _key(name: str) -> str:
    return f"test:{uuid.uuid4().hex[:12]}:{{t}}:{name}"


async def test_replicas_asking_at_once_let_exactly_the_burst_through(redis_url: str) -> None:
    # Four replicas' worth of clients, each with connections of its own, 200 requests at once.
    replicas = [RedisStore(connect(redis_url)) for _ in range(4)]
    keys = [_key("user"), _key("tenant")]
    meters = [Meter(interval=60 * MICROS, burst=25), Meter(interval=MICROS, burst=1000)]
    try:
        answers = await asyncio.gather(*(replicas[n % 4].take(keys, meters) for n in range(200)))
        passed = [tallies for ok, tallies in answers if ok]
        # What the tenant saw: the 25 that passed, not the 175 the user's limit refused.
        _, after = await replicas[0].take(keys[1:], meters[1:])
    finally:
        for replica in replicas:
            await replica.close()
    assert len(passed) == 25
    assert sorted(t[0].remaining for t in passed) == list(range(25))
    assert after[0].remaining == 1000 - 25 - 1


async def test_a_slot_never_given_back_is_free_once_its_lease_ends(store: LimitStore) -> None:
    key = _key("streams")
    # A gateway takes the only slot and dies without giving it back.
    assert await store.admit([], [(key, 1)], "dead-gateway", lease_seconds=0.3) is None
    refused = await store.admit([], [(key, 1)], "live", lease_seconds=30)
    assert refused is not None
    assert (refused.kind, refused.used) == ("streams", 1)
    assert await store.streams_open([key]) == [1]
    await asyncio.sleep(0.4)
    assert await store.streams_open([key]) == [0]
    assert await store.admit([], [(key, 1)], "live", lease_seconds=30) is None
    await store.settle([key], "live", [], 0)
    assert await store.streams_open([key]) == [0]


async def test_a_spent_quota_refuses_before_any_slot_is_taken(store: LimitStore) -> None:
    counter, slots = _key("tokens"), _key("streams")
    await store.settle([], "", [(counter, 4_000_000_000.0)], 120)
    refused = await store.admit([(counter, 100)], [(slots, 5)], "s1", lease_seconds=30)
    assert refused is not None
    assert (refused.kind, refused.index, refused.used) == ("quota", 0, 120)
    assert await store.streams_open([slots]) == [0]
    assert await store.tokens_used([counter, _key("other")]) == [120, 0]


# -- Redis going away, through the gateway ---------------------------------------------------


def _bearer() -> dict[str, str]:
    token = issue_token(DEV_SECRET, "parley", tenant=f"t{uuid.uuid4().hex[:8]}", user="ann")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tier(tmp_path: Path) -> str:
    path = tmp_path / "limits.yaml"
    path.write_text("tiers:\n  test:\n    reads: {user: 100/minute}\n    streams: {user: 2}\n")
    return str(path)


async def test_with_redis_down_limits_fail_open_when_so_set(
    api: Api, private_redis: PrivateRedis, tier: str
) -> None:
    settings = {"redis_url": private_redis.url, "limits_file": tier, "limits_default_tier": "test"}
    async with api(**settings, limits_on_redis_error="open") as (client, fakes):
        who = _bearer()
        before = await client.get("/v1/conversations", headers=who)
        await private_redis.kill()
        during = [await client.get("/v1/conversations", headers=who) for _ in range(3)]
        fakes.conversation.turn = [ACCEPTED, DONE]
        turn = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=who
        )
        await private_redis.start()
        await asyncio.sleep(1.1)  # past the second the gateway leaves a failed Redis alone
        after = await client.get("/v1/conversations", headers=who)
    assert before.headers["ratelimit-remaining"] == "99"
    # Unlimited while Redis is away: answered, without RateLimit headers.
    assert [r.status_code for r in during] == [200, 200, 200]
    assert all("ratelimit-limit" not in r.headers for r in during)
    assert turn.status_code == 200  # a turn is admitted without its stream slot
    assert [c.method for c in fakes.calls].count("SendMessage") == 1
    # Redis came back empty: limits count again from a whole limit.
    assert after.status_code == 200
    assert after.headers["ratelimit-remaining"] == "99"


async def test_with_redis_down_limits_fail_closed_when_so_set(
    api: Api, private_redis: PrivateRedis, tier: str, error_of: ErrorOf
) -> None:
    settings = {"redis_url": private_redis.url, "limits_file": tier, "limits_default_tier": "test"}
    async with api(**settings, limits_on_redis_error="closed") as (client, fakes):
        who = _bearer()
        before = await client.get("/v1/conversations", headers=who)
        await private_redis.kill()
        refused = await client.get("/v1/conversations", headers=who)
        shown = await client.get("/v1/limits", headers=who)
        await private_redis.start()
        await asyncio.sleep(1.1)
        after = await client.get("/v1/conversations", headers=who)
    assert before.status_code == 200
    error_of(refused, 503, "limits_unavailable")
    assert refused.headers["retry-after"] == "1"
    error_of(shown, 503, "limits_unavailable")
    assert after.status_code == 200
    # Only the two answered requests reached the peer.
    assert [c.method for c in fakes.calls] == ["ListConversations", "ListConversations"]


async def test_a_redis_that_fails_is_left_alone_for_a_second(private_redis: PrivateRedis) -> None:
    store = RedisStore(connect(private_redis.url))
    key, meter = _key("user"), Meter(MICROS, 10)
    try:
        assert (await store.take([key], [meter]))[0]
        await private_redis.kill()
        with pytest.raises(StoreUnavailable):
            await store.take([key], [meter])
        await private_redis.start()
        # Back already, but not asked again within the second.
        with pytest.raises(StoreUnavailable, match="a moment ago"):
            await store.take([key], [meter])
        await asyncio.sleep(1.05)
        assert (await store.take([key], [meter]))[0]
    finally:
        await store.close()
