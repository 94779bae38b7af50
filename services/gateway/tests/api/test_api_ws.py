"""Chat over a WebSocket, with a real client (``websockets``) against the gateway in front of
the real services: authentication at the handshake (header or subprotocol), a turn's events as
SSE sends them, ping, errors as frames, one answer at a time, and a cancel that stops the
provider's stream and stores the answer cancelled."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from parley_fakes import Behaviour
from parley_gateway.auth import issue_token

Frame = dict[str, Any]


def _url(stack: Any) -> str:
    return stack.base_url.replace("http://", "ws://").rstrip("/") + "/v1/ws"


@asynccontextmanager
async def _socket(stack: Any, token: str | None = None) -> AsyncIterator[ClientConnection]:
    """A socket authenticated the browser's way: the token as a subprotocol."""
    protocols = ["parley.v1", f"bearer.{token or stack.token()}"]
    async with connect(_url(stack), subprotocols=protocols) as socket:  # type: ignore[arg-type]
        yield socket


async def _frame(socket: ClientConnection) -> Frame:
    frame: Frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
    return frame


async def _turn(socket: ClientConnection) -> list[Frame]:
    """Frames until the turn's terminal event."""
    frames = []
    while True:
        frames.append(await _frame(socket))
        if frames[-1]["type"] in ("done", "error"):
            return frames


async def _conversation(stack: Any) -> str:
    return str((await stack.client.post("/v1/conversations", json={})).json()["id"])


def _denied(raised: pytest.ExceptionInfo[InvalidStatus], status: int, code: str) -> None:
    response = raised.value.response
    assert response.status_code == status
    assert json.loads(response.body or b"{}")["error"]["code"] == code


async def test_the_handshake_authenticates(stack: Any) -> None:
    url = _url(stack)
    with pytest.raises(InvalidStatus) as raised:
        async with connect(url):
            pass
    _denied(raised, 401, "missing_credentials")
    with pytest.raises(InvalidStatus) as raised:
        async with connect(url, subprotocols=["parley.v1", "bearer.nonsense"]):  # type: ignore[list-item]
            pass
    _denied(raised, 401, "invalid_token")
    reader = stack.token(scopes=("read",))
    with pytest.raises(InvalidStatus) as raised:
        async with connect(url, additional_headers={"Authorization": f"Bearer {reader}"}):
            pass
    _denied(raised, 403, "missing_scope")
    # A server sends its token as a header; a browser as a subprotocol, answered with parley.v1.
    async with connect(url, additional_headers={"Authorization": f"Bearer {stack.token()}"}) as ws:
        await ws.send(json.dumps({"type": "ping", "ref": "h"}))
        assert await _frame(ws) == {"type": "pong", "ref": "h"}
    async with _socket(stack) as ws:
        assert ws.subprotocol == "parley.v1"


async def test_a_turn_streams_the_same_events_as_sse(stack: Any) -> None:
    cid = await _conversation(stack)
    async with _socket(stack) as ws:
        await ws.send(
            json.dumps({"type": "send", "conversation_id": cid, "content": "Hi", "ref": "t1"})
        )
        frames = await _turn(ws)
        names = [f["type"] for f in frames]
        assert names[0] == "accepted"
        assert names[-2:] == ["usage", "done"]
        assert set(names[1:-2]) == {"delta"}
        answer_id = frames[0]["assistant_message_id"]
        assert [f["id"] for f in frames] == [f"{answer_id}:{n}" for n in range(len(frames))]
        assert {f["ref"] for f in frames} == {"t1"}
        done = frames[-1]["message"]
        assert done["content"] == "".join(f["text"] for f in frames if f["type"] == "delta")
        # The next turn on the same socket: a regeneration.
        stack.provider.push(Behaviour(text="Once more."))
        await ws.send(json.dumps({"type": "regenerate", "conversation_id": cid}))
        again = await _turn(ws)
        assert again[-1]["message"]["content"] == "Once more."
        assert again[0]["ref"] is None
    listed = (await stack.client.get(f"/v1/conversations/{cid}/messages")).json()["messages"]
    assert [m["content"] for m in listed] == ["Hi", "Once more."]


async def test_frames_that_cannot_be_served_are_rejected_and_the_socket_stays(
    stack: Any,
) -> None:
    async with _socket(stack) as ws:
        for sent, code, status in [
            ("not json", "invalid_request", 422),
            (json.dumps({"type": "shout"}), "invalid_request", 422),
            (json.dumps({"type": "send", "conversation_id": "c1"}), "invalid_request", 422),
            (
                json.dumps({"type": "send", "conversation_id": "../x", "content": "Hi"}),
                "invalid_request",
                422,
            ),
            (json.dumps({"type": "cancel", "ref": "c"}), "no_turn_running", 409),
            (
                json.dumps({"type": "send", "conversation_id": "conv_nope", "content": "Hi"}),
                "conversation_not_found",
                404,
            ),
            (
                json.dumps({"type": "send", "conversation_id": "c1", "content": "   "}),
                "empty_message",
                422,
            ),
        ]:
            await ws.send(sent)
            frame = await _frame(ws)
            assert (frame["type"], frame["code"], frame["status"]) == ("rejected", code, status)
            assert frame["request_id"]
        await ws.send(b"\x00\x01")
        assert (await _frame(ws))["code"] == "invalid_frame"
        await ws.send(json.dumps({"type": "ping", "ref": 7}))
        assert (await _frame(ws))["code"] == "invalid_request"  # a ref is a string
        await ws.send(json.dumps({"type": "ping"}))
        assert await _frame(ws) == {"type": "pong", "ref": None}


async def test_cancel_stops_the_providers_stream_and_stores_the_answer_cancelled(
    stack: Any,
) -> None:
    cid = await _conversation(stack)
    stack.provider.push(Behaviour(tokens=400, token_delay_ms=10))
    async with _socket(stack) as ws:
        await ws.send(json.dumps({"type": "send", "conversation_id": cid, "content": "Go on."}))
        frames = [await _frame(ws)]
        while sum(f["type"] == "delta" for f in frames) < 3:
            frames.append(await _frame(ws))
        # One answer at a time.
        await ws.send(json.dumps({"type": "send", "conversation_id": cid, "content": "More"}))
        await ws.send(json.dumps({"type": "cancel", "ref": "stop"}))
        rest = await _turn(ws)
        refused = [f for f in rest if f["type"] == "rejected"]
        assert [f["code"] for f in refused] == ["turn_running"]
        ending = rest[-1]
        assert (ending["type"], ending["code"], ending["retryable"]) == (
            "error",
            "cancelled",
            False,
        )
        answer_id = frames[0]["assistant_message_id"]
        assert ending["assistant_message_id"] == answer_id
        text = "".join(f["text"] for f in [*frames, *rest] if f["type"] == "delta")
        # The socket serves the next turn.
        stack.provider.push(Behaviour(text="Short."))
        await ws.send(json.dumps({"type": "send", "conversation_id": cid, "content": "Again"}))
        assert (await _turn(ws))[-1]["type"] == "done"
    stored = await stack.client.get(f"/v1/conversations/{cid}/messages/{answer_id}")
    assert (stored.json()["status"], stored.json()["content"]) == ("cancelled", text)
    stopped = next(
        r for r in stack.provider.requests if r.body["messages"][-1]["content"] == "Go on."
    )
    for _ in range(100):
        if stopped.outcome:
            break
        await asyncio.sleep(0.02)
    assert stopped.outcome == "disconnected"
    assert stopped.tokens_sent < 400


async def test_a_socket_closed_mid_answer_cancels_it(stack: Any) -> None:
    cid = await _conversation(stack)
    stack.provider.push(Behaviour(tokens=400, token_delay_ms=10))
    async with _socket(stack) as ws:
        await ws.send(json.dumps({"type": "send", "conversation_id": cid, "content": "Go on."}))
        accepted = await _frame(ws)
        while (await _frame(ws))["type"] != "delta":
            pass
    answer_id = accepted["assistant_message_id"]
    path = f"/v1/conversations/{cid}/messages/{answer_id}"
    for _ in range(100):
        stored = (await stack.client.get(path)).json()
        if stored["status"] != "in_progress":
            break
        await asyncio.sleep(0.02)
    assert stored["status"] == "cancelled"
    assert stack.provider.requests[-1].tokens_sent < 400


async def test_a_socket_outliving_its_token_is_closed_at_its_next_turn(stack: Any) -> None:
    cid = await _conversation(stack)
    short = issue_token(
        stack.settings.auth_secret,
        stack.settings.auth_issuer,
        tenant="acme",
        user="ann",
        ttl_seconds=3,
    )
    expires = time.time() + 2
    async with _socket(stack, short) as ws:
        await asyncio.sleep(max(0.0, expires - time.time()) + 1.1)
        await ws.send(json.dumps({"type": "send", "conversation_id": cid, "content": "Hi"}))
        frame = await _frame(ws)
        assert (frame["type"], frame["code"], frame["status"]) == (
            "rejected",
            "token_expired",
            401,
        )
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, "token_expired")
