"""Every request's id and its last resort: a client's ``X-Request-ID`` is echoed and sent to
peers only when it is safe, and no failure ends as a dropped connection."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from parley.conversation.v1 import conversation_pb2 as conv

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]


FRESH_ID = re.compile(r"[0-9a-f]{32}")

# A peer's bug: a timestamp no calendar holds, which the public view cannot render.
BROKEN = conv.Message(
    id="msg_1",
    conversation_id="c1",
    role=conv.MESSAGE_ROLE_ASSISTANT,
    content="partial",
    create_time=Timestamp(seconds=2**40),
)
ACCEPTED = conv.TurnEvent(
    accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
)


async def test_a_safe_request_id_is_echoed_and_reaches_the_peer(api: Api) -> None:
    async with api() as (client, fakes):
        response = await client.get("/v1/conversations", headers={"X-Request-ID": "web-1.a:B_9"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "web-1.a:B_9"
    assert [c.request_id for c in fakes.calls] == ["web-1.a:B_9"]


@pytest.mark.parametrize(
    "header",
    [
        "café".encode(),  # non-ASCII (UTF-8)
        b"caf\xe9",  # non-ASCII (Latin-1)
        b"a\tb",  # a control character the HTTP parser lets through
        b"a b",
        b"a/b",
        b"x" * 129,
        b"",
    ],
)
async def test_an_unsafe_request_id_is_replaced_and_logged(
    api: Api, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    async with api() as (client, fakes):
        with caplog.at_level(logging.WARNING, logger="parley.gateway"):
            response = await client.get("/v1/conversations", headers={b"X-Request-ID": header})
    assert response.status_code == 200
    fresh = response.headers["x-request-id"]
    assert FRESH_ID.fullmatch(fresh)
    assert [c.request_id for c in fakes.calls] == [fresh]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [getattr(r, "refused_request_id", None) for r in warnings] == [header.decode("latin-1")]


async def test_an_unsafe_request_id_on_a_failing_call_still_gets_the_envelope(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, _):
        response = await client.get("/v1/models", headers={b"X-Request-ID": "café".encode()})
    error = error_of(response, 503, "service_unavailable")
    assert FRESH_ID.fullmatch(error["request_id"])


async def test_an_unexpected_failure_is_a_500_envelope_and_the_connection_lives(
    api: Api,
    error_of: ErrorOf,
) -> None:
    async with api() as (client, fakes):
        fakes.conversation.messages = [BROKEN]
        response = await client.get(
            "/v1/conversations/c1/messages", headers={"X-Request-ID": "req-500"}
        )
        error = error_of(response, 500, "internal")
        assert error == {"code": "internal", "message": "internal error", "request_id": "req-500"}
        assert "Timestamp" not in response.text
        # The same connection serves the next request.
        fakes.conversation.messages = []
        assert (await client.get("/v1/conversations/c1/messages")).status_code == 200


async def test_an_unexpected_failure_mid_stream_ends_it_with_an_error_event(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        fakes.conversation.turn = [
            ACCEPTED,
            conv.TurnEvent(delta=conv.TextDelta(text="partial")),
            conv.TurnEvent(done=conv.TurnDone(message=BROKEN)),
        ]
        streamed = await client.post(
            "/v1/conversations/c1/messages",
            json={"content": "hi"},
            headers={"Accept": "text/event-stream"},
        )
        gathered = await client.post("/v1/conversations/c1/messages", json={"content": "hi"})
    assert streamed.status_code == 200
    events = sse(streamed.text)
    assert [name for name, _ in events] == ["accepted", "delta", "error"]
    assert events[-1][1] == {
        "code": "internal",
        "message": "internal error",
        "retryable": False,
        "request_id": streamed.headers["x-request-id"],
    }
    error_of(gathered, 500, "internal")


def sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Server-Sent Events body."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events
