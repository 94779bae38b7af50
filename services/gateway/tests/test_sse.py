"""A streamed turn on the wire, in front of a fake conversation peer that speaks real gRPC:
how events are framed, keep-alive comments on a quiet stream, a client that leaves
cancelling the turn at the peer, and a stream read to its end left to close there (as the
OpenAI-compatible stream does with a fake llm-router)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from parley.common.v1 import common_pb2 as common
from parley.conversation.v1 import conversation_pb2 as conv
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
STREAM = {"Accept": "text/event-stream"}

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


async def test_each_event_is_one_block_of_event_and_json_data(api: Api) -> None:
    async with api() as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta('Twenty-five "days"\nof leave.'), DONE]
        response = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-request-id"]
    blocks = response.text.split("\r\n\r\n")
    assert blocks[-1] == ""
    events = [block.split("\r\n") for block in blocks[:-1]]
    # Each carries the answer's id and its position, for a client that reconnects.
    assert [lines[0] for lines in events] == ["id: a1:0", "id: a1:1", "id: a1:2"]
    assert [lines[1] for lines in events] == ["event: accepted", "event: delta", "event: done"]
    # One data line each, whatever the text holds: a line break stays inside the JSON.
    assert all(len(lines) == 3 and lines[2].startswith("data: ") for lines in events)
    data = [json.loads(lines[2].removeprefix("data: ")) for lines in events]
    assert data[1] == {"text": 'Twenty-five "days"\nof leave.'}
    assert data[2]["message"]["content"] == "Twenty-five days."


async def test_a_quiet_stream_sends_keep_alive_comments(api: Api) -> None:
    async with api(sse_keep_alive_seconds=0.1) as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty-five"), DONE]
        fakes.conversation.pace = 0.35
        response = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        )
    body = response.text
    # A comment in each quiet gap, between whole events; a client reading events skips them.
    assert body.count(": keep-alive\r\n\r\n") >= 4
    assert body.startswith("id: a1:0\r\nevent: accepted\r\n")
    assert body.rsplit("\r\n\r\n", 2)[-2].startswith("id: a1:2\r\nevent: done\r\ndata: ")
    names = [line for line in body.split("\r\n") if line.startswith("event: ")]
    assert names == ["event: accepted", "event: delta", "event: done"]


async def test_a_busy_stream_sends_no_keep_alive_comments(api: Api) -> None:
    async with api(sse_keep_alive_seconds=0.5) as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, *[_delta(f"{n} ") for n in range(10)], DONE]
        fakes.conversation.pace = 0.1
        response = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        )
    assert "keep-alive" not in response.text
    assert response.text.count("event: delta") == 10


async def test_a_client_that_leaves_cancels_the_turn_at_the_peer(api: Api) -> None:
    async with api() as (client, fakes):
        # A long answer: 100 deltas 50 ms apart.
        fakes.conversation.turn = [ACCEPTED, *[_delta(f"{n} ") for n in range(100)], DONE]
        fakes.conversation.pace = 0.05
        seen: list[str] = []
        async with client.stream(
            "POST", "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        ) as response:
            async for line in response.aiter_lines():
                seen.append(line)
                if line == "event: delta":
                    break
        left_at = time.monotonic()
        # The gateway notices the closed connection and cancels the call to the peer.
        await asyncio.wait_for(fakes.conversation.cancelled.wait(), timeout=2)
        assert time.monotonic() - left_at < 1.0
        assert "event: accepted" in seen
        # The gateway serves the next request as usual.
        fakes.conversation.turn = [ACCEPTED, DONE]
        fakes.conversation.pace = 0.0
        again = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        )
    assert again.text.count("event: done") == 1


async def test_a_turn_read_to_its_end_is_left_to_close_at_the_peer(api: Api) -> None:
    """Once the peer's last event is read there is nothing to stop: the peer closes the call
    itself, and is not cancelled while it finishes."""
    async with api() as (client, fakes):
        fakes.conversation.turn = [ACCEPTED, _delta("Twenty-five days."), DONE]
        fakes.conversation.linger = 0.3
        streamed = await client.post(
            "/v1/conversations/c1/messages", json={"content": "hi"}, headers=STREAM
        )
        gathered = await client.post("/v1/conversations/c1/messages", json={"content": "hi"})
        await asyncio.sleep(0.5)
        assert not fakes.conversation.cancelled.is_set()
    assert streamed.text.count("event: done") == 1
    assert gathered.json()["message"]["content"] == "Twenty-five days."


async def test_a_completion_read_to_its_end_is_left_to_close_at_llm_router(api: Api) -> None:
    """The OpenAI-compatible stream, likewise: its client gets the whole completion and
    ``[DONE]``, and llm-router, still finishing after its last event, is not cancelled."""
    async with api(live_router=True) as (client, fakes):
        fakes.llm_router.answer = [
            llm.ChatEvent(text_delta="Twenty-five days."),
            llm.ChatEvent(
                finish=llm.ChatFinish(finish_reason=common.FINISH_REASON_STOP, usage=common.Usage())
            ),
        ]
        fakes.llm_router.linger = 0.3
        response = await client.post(
            "/openai/v1/chat/completions",
            json={
                "model": "default",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            },
        )
        await asyncio.sleep(0.5)
        assert not fakes.llm_router.cancelled.is_set()
    assert response.status_code == 200, response.text
    assert "Twenty-five days." in response.text
    assert response.text.rstrip().endswith("data: [DONE]")


async def test_a_token_accepted_before_is_refused_once_it_expires(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        settings = Settings()
        token = issue_token(
            settings.auth_secret, settings.auth_issuer, tenant="acme", user="ann", ttl_seconds=2
        )
        headers = {"Authorization": f"Bearer {token}"}
        fakes.conversation.messages = []
        assert (await client.get("/v1/conversations/c1/messages", headers=headers)).is_success
        await asyncio.sleep(2.1)
        refused = await client.get("/v1/conversations/c1/messages", headers=headers)
    error_of(refused, 401, "token_expired")
