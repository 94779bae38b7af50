"""Limits as a client meets them, through the running gateway in front of fake peers that
speak real gRPC: request rates per user, tenant and route class, concurrent streams, token
quotas, the 429s and their headers, and ``GET /v1/limits``. Each test runs twice: counters in
this process's memory, and in the real Redis at ``REDIS_URL`` (under a prefix of its own)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as conv
from parley.conversation.v1 import conversation_pb2_grpc
from parley_gateway.auth import issue_token
from parley_gateway.limits.limiter import Limiter
from parley_gateway.limits.memory_store import MemoryStore
from parley_gateway.limits.policy import load_policy
from parley_gateway.settings import DEV_SECRET
from parley_runtime.context import Principal
from parley_runtime.errors import NotFound, Unavailable
from parley_runtime.grpc_server import Registration
from parley_testkit import grpc_server

Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
Limited = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
STREAM = {"Accept": "text/event-stream"}
SEND = "/v1/conversations/c1/messages"

ACCEPTED = conv.TurnEvent(
    accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
)
DONE = conv.TurnEvent(
    done=conv.TurnDone(
        message=conv.Message(
            id="a1",
            conversation_id="c1",
            role=conv.MESSAGE_ROLE_ASSISTANT,
            content="Twenty-five days.",
            status=conv.MESSAGE_STATUS_COMPLETE,
        )
    )
)


def _delta(text: str) -> conv.TurnEvent:
    return conv.TurnEvent(delta=conv.TextDelta(text=text))


def _usage(input_tokens: int, output_tokens: int) -> conv.TurnEvent:
    return conv.TurnEvent(
        usage=conv.UsageEvent(
            usage=common_pb2.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        )
    )


ParseSse = Callable[[str], list[tuple[str | None, str, dict[str, Any]]]]


def _done_with(input_tokens: int, output_tokens: int) -> conv.TurnEvent:
    """DONE carrying the turn's usage, as conversation sends it when asked
    (``usage_with_done``)."""
    done = conv.TurnEvent()
    done.CopyFrom(DONE)
    done.done.usage.CopyFrom(
        common_pb2.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    )
    return done


def bearer(tenant: str, user: str) -> dict[str, str]:
    token = issue_token(
        DEV_SECRET, "parley", tenant=tenant, user=user, scopes=("read", "chat", "documents")
    )
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The settings of one store of counters: this process's memory, or the real Redis."""
    if request.param == "memory":
        return {"redis_url": None}
    return {
        "redis_url": request.getfixturevalue("redis_url"),
        "limits_key_prefix": f"test:{uuid.uuid4().hex[:12]}:",
    }


@pytest.fixture
def limited(api: Api, store: dict[str, Any], tmp_path: Path) -> Limited:
    """``async with limited(tier_yaml, **settings) as (client, fakes)``: the gateway with every
    tenant on the tier ``tier_yaml`` describes, in front of fake peers."""

    @asynccontextmanager
    async def serve(tier: str, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
        path = tmp_path / f"limits-{uuid.uuid4().hex[:6]}.yaml"
        indented = "\n".join(f"    {line}" for line in tier.strip().splitlines())
        path.write_text(f"tiers:\n  test:\n{indented}\n")
        async with api(limits_file=str(path), limits_default_tier="test", **store, **settings) as (
            client,
            fakes,
        ):
            yield client, fakes

    return serve


def _tenant() -> str:
    # A tenant of its own per test: counters in Redis outlive a run.
    return f"t{uuid.uuid4().hex[:10]}"


def _headers(response: httpx.Response) -> tuple[int, int, int]:
    h = response.headers
    return int(h["ratelimit-limit"]), int(h["ratelimit-remaining"]), int(h["ratelimit-reset"])


async def test_requests_over_a_rate_are_refused_with_retry_after_and_ratelimit_headers(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("reads: {user: 3/minute}") as (client, fakes):
        who = bearer(_tenant(), "ann")
        passed = [await client.get("/v1/conversations", headers=who) for _ in range(3)]
        refused = await client.get("/v1/conversations", headers=who)
    assert [r.status_code for r in passed] == [200, 200, 200]
    # Each success says how many may follow, and when the limit is whole again.
    assert [_headers(r)[:2] for r in passed] == [(3, 2), (3, 1), (3, 0)]
    assert all(0 < _headers(r)[2] <= 60 for r in passed)
    assert passed[0].headers["ratelimit-policy"] == '3;w=60;name="reads.user"'
    error = error_of(refused, 429, "rate_limited")
    assert "user" in error["message"]
    # One request every 20 s: the next may go in 20 s at most.
    assert 19 <= int(refused.headers["retry-after"]) <= 20
    limit, remaining, reset = _headers(refused)
    assert (limit, remaining) == (3, 0)
    assert 0 < reset <= 60
    assert refused.headers["ratelimit-policy"] == '3;w=60;name="reads.user"'
    # The refused request never reached the peer.
    assert [c.method for c in fakes.calls] == ["ListConversations"] * 3


async def test_a_refused_caller_passes_again_once_retry_after_has_passed(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("reads: {user: 1/second}") as (client, _):
        who = bearer(_tenant(), "ann")
        assert (await client.get("/v1/conversations", headers=who)).status_code == 200
        refused = await client.get("/v1/conversations", headers=who)
        error_of(refused, 429, "rate_limited")
        assert refused.headers["retry-after"] == "1"
        await asyncio.sleep(1.0)
        again = await client.get("/v1/conversations", headers=who)
    assert again.status_code == 200
    assert _headers(again)[:2] == (1, 0)


async def test_users_have_limits_of_their_own_inside_their_tenants(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("reads: {user: 2/minute, tenant: 3/minute}") as (client, _):
        tenant = _tenant()
        ann, bob = bearer(tenant, "ann"), bearer(tenant, "bob")
        ann_got = [(await client.get("/v1/conversations", headers=ann)) for _ in range(3)]
        # Ann's third was refused by her own limit and used none of the tenant's: Bob has one.
        bob_got = [(await client.get("/v1/conversations", headers=bob)) for _ in range(2)]
        # Another tenant is not touched by any of it.
        other = await client.get("/v1/conversations", headers=bearer(_tenant(), "ann"))
    assert [r.status_code for r in ann_got] == [200, 200, 429]
    assert "for this user" in error_of(ann_got[2], 429, "rate_limited")["message"]
    assert [r.status_code for r in bob_got] == [200, 429]
    assert "for this tenant" in error_of(bob_got[1], 429, "rate_limited")["message"]
    assert bob_got[1].headers["ratelimit-limit"] == "3"
    assert other.status_code == 200


async def test_each_route_class_has_its_own_limit(limited: Limited, error_of: ErrorOf) -> None:
    tier = "chat: {user: 1/minute}\nreads: {user: 100/minute}\ndocuments: {user: 1/minute}"
    async with limited(tier) as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, DONE]
        who = bearer(_tenant(), "ann")
        sent = [await client.post(SEND, json={"content": "hi"}, headers=who) for _ in range(2)]
        read = await client.get("/v1/conversations", headers=who)
        document = {"content": "Leave: 25 days.", "content_type": "text/plain"}
        added = [
            await client.post("/v1/knowledge-bases/kb/documents", json=document, headers=who)
            for _ in range(2)
        ]
    assert [r.status_code for r in sent] == [200, 429]
    assert sent[0].headers["ratelimit-policy"] == '1;w=60;name="chat.user"'
    assert "chat" in error_of(sent[1], 429, "rate_limited")["message"]
    assert read.status_code == 200
    assert read.headers["ratelimit-policy"] == '100;w=60;name="reads.user"'
    assert [r.status_code for r in added] == [201, 429]
    assert added[1].headers["ratelimit-policy"] == '1;w=60;name="documents.user"'


async def test_the_headers_name_the_limit_nearest_to_refusing(limited: Limited) -> None:
    async with limited("reads: {user: 10/minute, tenant: {rate: 1/second, burst: 4}}") as (
        client,
        _,
    ):
        response = await client.get("/v1/conversations", headers=bearer(_tenant(), "ann"))
    assert _headers(response)[:2] == (4, 3)  # the tenant's: 3 left of 4, against 9 of 10
    assert response.headers["ratelimit-policy"] == (
        '10;w=60;name="reads.user", 1;w=1;burst=4;name="reads.tenant"'
    )


async def test_a_tier_without_limits_sends_no_ratelimit_headers(limited: Limited) -> None:
    async with limited("streams: {}") as (client, _):
        response = await client.get("/v1/conversations", headers=bearer(_tenant(), "ann"))
    assert response.status_code == 200
    assert "ratelimit-limit" not in response.headers


# -- concurrent streams ----------------------------------------------------------------------


async def _open_streams(client: httpx.AsyncClient, who: dict[str, str]) -> int:
    limits = (await client.get("/v1/limits", headers=who)).json()
    return int(limits["streams"]["user"]["open"])


async def _until(check: Callable[[], Any], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.05)


async def test_a_second_stream_is_refused_while_the_first_is_open_and_allowed_after(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("streams: {user: 1}") as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, *[_delta(f"{n} ") for n in range(6)], DONE]
        fakes.conversation.pace = 0.1
        who = bearer(_tenant(), "ann")
        async with client.stream(
            "POST", SEND, json={"content": "one"}, headers={**STREAM, **who}
        ) as first:
            assert first.status_code == 200
            refused = await client.post(SEND, json={"content": "two"}, headers={**STREAM, **who})
            assert await _open_streams(client, who) == 1
            body = (await first.aread()).decode()
        assert "event: done" in body.rstrip().rsplit("\r\n\r\n", 1)[-1].split("\r\n")

        async def released() -> bool:
            return await _open_streams(client, who) == 0

        await _until(released)
        fakes.conversation.pace = 0.0
        third = await client.post(SEND, json={"content": "three"}, headers=who)
    error = error_of(refused, 429, "too_many_streams")
    assert "1 answers streaming" in error["message"]
    assert refused.headers["retry-after"] == "1"
    assert _headers(refused)[:2] == (1, 0)
    assert refused.headers["ratelimit-policy"] == '1;name="streams.user"'
    assert third.status_code == 200
    # The refused turn never reached conversation.
    assert [c.request.content for c in fakes.conversation.calls] == ["one", "three"]


async def test_a_stream_slot_comes_back_when_the_client_leaves(limited: Limited) -> None:
    async with limited("streams: {user: 1}") as (client, fakes):
        # A long answer: 400 deltas 50 ms apart, far longer than the test waits.
        fakes.conversation.turn = [ACCEPTED, *[_delta(f"{n} ") for n in range(400)], DONE]
        fakes.conversation.pace = 0.05
        who = bearer(_tenant(), "ann")
        async with client.stream(
            "POST", SEND, json={"content": "long"}, headers={**STREAM, **who}
        ) as first:
            async for line in first.aiter_lines():
                if line == "event: delta":
                    break  # an answer begun, then gone
        await asyncio.wait_for(fakes.conversation.cancelled.wait(), 10)

        async def released() -> bool:
            return await _open_streams(client, who) == 0

        await _until(released)
        fakes.conversation.turn = [ACCEPTED, DONE]
        fakes.conversation.pace = 0.0
        again = await client.post(SEND, json={"content": "again"}, headers=who)
    assert again.status_code == 200


async def test_a_stream_slot_comes_back_when_the_turn_fails_or_never_starts(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("streams: {user: 1}") as (client, fakes):
        who = bearer(_tenant(), "ann")
        # Fails after it started: an error event ends the stream.
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty")]
        fakes.conversation.failure = Unavailable("the model went away", code="provider_unavailable")
        failed = await client.post(SEND, json={"content": "a"}, headers={**STREAM, **who})
        assert "event: error" in failed.text
        # Refused before any event: a plain 404.
        fakes.conversation.turn = []
        fakes.conversation.failure = NotFound("no such conversation", code="conversation_not_found")
        unknown = await client.post(SEND, json={"content": "b"}, headers={**STREAM, **who})
        error_of(unknown, 404, "conversation_not_found")

        async def released() -> bool:
            return await _open_streams(client, who) == 0

        await _until(released)
        fakes.conversation.failure = None
        fakes.conversation.turn = [ACCEPTED, DONE]
        again = await client.post(SEND, json={"content": "c"}, headers=who)
    assert again.status_code == 200


async def test_a_tenant_limit_on_streams_holds_across_its_users(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("streams: {user: 5, tenant: 1}") as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, *[_delta(f"{n} ") for n in range(4)], DONE]
        fakes.conversation.pace = 0.1
        tenant = _tenant()
        ann, bob = bearer(tenant, "ann"), bearer(tenant, "bob")
        async with client.stream("POST", SEND, json={"content": "a"}, headers={**STREAM, **ann}):
            refused = await client.post(SEND, json={"content": "b"}, headers={**STREAM, **bob})
            elsewhere = await client.post(
                SEND, json={"content": "c"}, headers={**STREAM, **bearer(_tenant(), "bob")}
            )
    assert "tenant" in error_of(refused, 429, "too_many_streams")["message"]
    assert refused.headers["ratelimit-policy"] == '1;name="streams.tenant"'
    assert elsewhere.status_code == 200


# -- token quotas ----------------------------------------------------------------------------


async def _tokens(client: httpx.AsyncClient, who: dict[str, str]) -> dict[str, Any]:
    tokens: dict[str, Any] = (await client.get("/v1/limits", headers=who)).json()["tokens"]
    return tokens


def _seconds_to_midnight() -> float:
    now = time.time()
    return 86_400 - now % 86_400


async def test_the_send_after_a_spent_quota_is_refused_with_its_headers(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("tokens: {user: {day: 100}}") as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty-five days."), _usage(60, 50), DONE]
        who = bearer(_tenant(), "ann")
        first = await client.post(SEND, json={"content": "a"}, headers={**STREAM, **who})
        assert first.status_code == 200
        assert "event: done" in first.text

        async def counted() -> bool:
            return bool((await _tokens(client, who))["user"]["day"]["used"] == 110)

        await _until(counted)
        refused = await client.post(SEND, json={"content": "b"}, headers={**STREAM, **who})
        tokens = await _tokens(client, who)
    error = error_of(refused, 429, "quota_exceeded")
    assert "100 tokens" in error["message"]
    assert "day" in error["message"]
    retry = int(refused.headers["retry-after"])
    assert abs(retry - _seconds_to_midnight()) <= 5
    assert _headers(refused) == (100, 0, retry)
    assert refused.headers["ratelimit-policy"] == '100;w=86400;name="tokens.user.day"'
    assert tokens["user"]["day"] | {"resets_at": None} == {
        "limit": 100,
        "used": 110,
        "remaining": 0,
        "resets_at": None,
    }
    assert tokens["user"]["day"]["resets_at"].endswith("T00:00:00Z")
    # Without a quota the month is counted all the same; the tenant's too.
    assert tokens["user"]["month"]["used"] == 110
    assert tokens["user"]["month"]["limit"] is None
    assert tokens["tenant"]["month"]["used"] == 110
    assert [c.request.content for c in fakes.conversation.calls] == ["a"]


@pytest.mark.parametrize("ending", ["usage event", "usage in done"])
async def test_the_usage_is_counted_and_streamed_once_however_it_comes(
    limited: Limited, parse_sse: ParseSse, ending: str
) -> None:
    # A conversation service of before ``usage_with_done`` sends a usage event; one of after
    # puts the usage in the done. The client sees the same stream either way.
    last = [_usage(60, 50), DONE] if ending == "usage event" else [_done_with(60, 50)]
    async with limited("tokens: {user: {day: 1000}}") as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty-five days."), *last]
        who = bearer(_tenant(), "ann")
        sent = await client.post(SEND, json={"content": "a"}, headers={**STREAM, **who})

        async def counted() -> bool:
            return bool((await _tokens(client, who))["user"]["day"]["used"] == 110)

        await _until(counted)
    events = parse_sse(sent.text)
    assert [name for _, name, _ in events] == ["accepted", "delta", "usage", "done"]
    usage = events[2][2]
    assert (usage["input_tokens"], usage["output_tokens"]) == (60, 50)
    assert fakes.conversation.calls[0].request.usage_with_done


async def test_streams_that_started_finish_and_the_next_is_refused(
    limited: Limited, error_of: ErrorOf
) -> None:
    async with limited("tokens: {tenant: {month: 100}}") as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty-five"), _usage(40, 30), DONE]
        fakes.conversation.pace = 0.2
        tenant = _tenant()
        ann, bob = bearer(tenant, "ann"), bearer(tenant, "bob")
        # Both start inside the quota; together they pass it, and both are answered whole.
        both = await asyncio.gather(
            client.post(SEND, json={"content": "a"}, headers={**STREAM, **ann}),
            client.post(SEND, json={"content": "b"}, headers={**STREAM, **bob}),
        )
        assert all(r.status_code == 200 and "event: done" in r.text for r in both)

        async def counted() -> bool:
            return bool((await _tokens(client, ann))["tenant"]["month"]["used"] == 140)

        await _until(counted)
        refused = await client.post(SEND, json={"content": "c"}, headers=bob)
    assert "tenant" in error_of(refused, 429, "quota_exceeded")["message"]
    assert refused.headers["ratelimit-limit"] == "100"


async def test_a_replayed_turn_uses_no_tokens(limited: Limited) -> None:
    async with limited("tokens: {user: {day: 100}}") as (client, fakes):
        # A replay (same Idempotency-Key) answers from the store: no usage event.
        replayed = conv.TurnEvent(
            accepted=conv.MessageAccepted(
                user_message_id="u1", assistant_message_id="a1", replayed=True
            )
        )
        fakes.conversation.turn = [replayed, DONE]
        who = bearer(_tenant(), "ann")
        for _ in range(3):
            response = await client.post(SEND, json={"content": "a"}, headers=who)
            assert response.status_code == 200
        tokens = await _tokens(client, who)
    assert tokens["user"]["day"]["used"] == 0


# -- what a caller has left ------------------------------------------------------------------


async def test_limits_show_the_tier_what_is_left_and_what_is_open(limited: Limited) -> None:
    # Slow rates: nothing comes back while the test runs.
    tier = """
chat: {user: 30/hour, tenant: 600/day}
reads: {user: {rate: 10/second, burst: 50}}
streams: {user: 2}
tokens: {user: {day: 1000}, tenant: {month: 50000}}
"""
    async with limited(tier) as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _usage(100, 20), DONE]
        who = bearer(_tenant(), "ann")
        assert (await client.post(SEND, json={"content": "a"}, headers=who)).status_code == 200

        async def counted() -> bool:
            return bool((await _tokens(client, who))["user"]["day"]["used"] == 120)

        await _until(counted)
        response = await client.get("/v1/limits", headers=who)
    assert response.status_code == 200
    limits = response.json()
    assert limits["tier"] == "test"
    chat = limits["rates"]["chat"]
    # No API key was used: no API key limit is shown.
    assert set(chat) == {"user", "tenant"}
    assert chat["user"] | {"reset_seconds": 0} == {
        "limit": 30,
        "per_period": 30,
        "period_seconds": 3600.0,
        "remaining": 29,
        "reset_seconds": 0,
    }
    assert 100 < chat["user"]["reset_seconds"] <= 120  # one request back every 120 s
    assert chat["tenant"]["remaining"] == 599
    assert limits["rates"]["documents"] == {"user": None, "tenant": None}
    reads = limits["rates"]["reads"]["user"]
    # The polls above and this request took some of the 50.
    assert reads["limit"] == 50
    assert 0 < reads["remaining"] < 50
    assert limits["streams"] == {"user": {"limit": 2, "open": 0}, "tenant": None}
    assert limits["tokens"]["user"]["day"]["remaining"] == 880
    assert limits["tokens"]["tenant"]["month"]["remaining"] == 49_880
    assert limits["tokens"]["tenant"]["day"]["limit"] is None
    assert response.headers["ratelimit-policy"] == '10;w=1;burst=50;name="reads.user"'


async def test_limits_of_an_api_key_are_its_own(limited: Limited, error_of: ErrorOf) -> None:
    async with limited("reads: {api_key: 2/minute, user: 100/minute}") as (client, _):
        tenant = _tenant()
        admin = issue_token(
            DEV_SECRET, "parley", tenant=tenant, user="ann", scopes=("read", "admin")
        )
        made = await client.post(
            "/v1/admin/api-keys",
            json={"name": "sync", "scopes": ["read"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert made.status_code == 201, made.text
        key = {"Authorization": f"Bearer {made.json()['key']}"}
        by_key = [await client.get("/v1/conversations", headers=key) for _ in range(3)]
        # The same user with a token is not held by the key's limit.
        by_token = await client.get("/v1/conversations", headers=bearer(tenant, "ann"))
        shown = (await client.get("/v1/limits", headers=bearer(tenant, "ann"))).json()
    assert [r.status_code for r in by_key] == [200, 200, 429]
    assert "for this API key" in error_of(by_key[2], 429, "rate_limited")["message"]
    assert by_key[0].headers["ratelimit-policy"] == (
        '2;w=60;name="reads.api_key", 100;w=60;name="reads.user"'
    )
    assert by_token.status_code == 200
    assert "api_key" not in shown["rates"]["reads"]


# -- a turn's call and its lease -------------------------------------------------------------


class _Turns(conversation_pb2_grpc.ConversationServiceServicer):
    """A conversation service whose every turn is accepted, uses 70 tokens, and is done."""

    async def SendMessage(
        self, request: conv.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conv.TurnEvent]:
        for event in (ACCEPTED, _delta("Twenty-five days."), _usage(40, 30), DONE):
            yield event


@pytest.mark.parametrize("reading", ["to_the_end", "never"])
async def test_a_lease_ends_with_its_call_read_or_not(reading: str) -> None:
    policy = load_policy(None, "standard")
    limiter = Limiter(
        policy, MemoryStore(), fail_open=False, stream_lease_seconds=300, prefix="test:"
    )
    who = Principal(_tenant(), "ann", frozenset({"chat"}))
    registration = Registration(
        "parley.conversation.v1.ConversationService",
        lambda server: conversation_pb2_grpc.add_ConversationServiceServicer_to_server(
            _Turns(), server
        ),
    )
    async with grpc_server([registration]) as address, grpc.aio.insecure_channel(address) as chan:
        stub = conversation_pb2_grpc.ConversationServiceStub(chan)
        lease = await limiter.admit_turn(who)
        call = lease.watch(stub.SendMessage(conv.SendMessageRequest(content="hi"), timeout=0.5))
        if reading == "to_the_end":
            events = [event async for event in call]
            assert len(events) == 4
        else:  # held while the call is open
            snapshot = await limiter.snapshot(who, None)
            assert snapshot["streams"]["user"]["open"] == 1
        # gRPC holds a call nobody reads open until its deadline; a grace later, the slot is
        # given back.
        for _ in range(60):
            snapshot = await limiter.snapshot(who, None)
            if snapshot["streams"]["user"]["open"] == 0:
                break
            await asyncio.sleep(0.05)
    assert snapshot["streams"]["user"]["open"] == 0
    # Tokens are counted from what was read: nothing, when nobody read the usage.
    used = snapshot["tokens"]["user"]["day"]["used"]
    assert used == (70 if reading == "to_the_end" else 0)
    await limiter.close()
