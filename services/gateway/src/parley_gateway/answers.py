"""An answer read back from the store as a stream: for a client that lost its connection
mid-answer, or that follows an answer streaming to another tab or device.

The answer's text is saved by conversation as it streams (every ``TURN_FLUSH_SECONDS``,
0.5 s by default), so the store always holds it up to that window, whichever replica writes
it. The stream sends a ``snapshot`` event first (the whole text so far, which replaces what
the client had), a ``delta`` each time the stored text grows (read every
:data:`POLL_SECONDS`), then ``usage`` and ``done``, or the ``error`` the stored answer ended
with. Events carry ids like a live turn's (``<assistant_message_id>:<n>``). The answer's
text passes through the tenant's answer guard (guardrails) as a live stream does.

A stream is read back when a client sends ``GET .../messages/{id}/events``, or sends its
turn again with ``Last-Event-ID`` (what an SSE client does on reconnecting): no new message
is sent then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

import grpc
from starlette.requests import HTTPConnection

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.guardrails import AnswerGuard, Guardrails
from parley_gateway.sse import TURN_END, EventStream, TurnEncoder
from parley_runtime.context import Principal, request_id_var
from parley_runtime.errors import FailedPrecondition, Internal, from_rpc_error

log = logging.getLogger("parley.gateway")

# How often the stored text of an answer in progress is read (conversation saves it every
# 0.5 s by default).
POLL_SECONDS = 0.5

Event = tuple[str, dict[str, Any]]


def answer_of_event_id(event_id: str) -> tuple[str, int]:
    """The answer id and position an event id names (``<assistant_message_id>:<n>``; the
    header's pattern has checked its form)."""
    answer_id, _, position = event_id.rpartition(":")
    return answer_id, int(position)


async def stored_answer(peers: Peers, conversation_id: str, message_id: str) -> conv.Message:
    """The message as stored; FAILED_PRECONDITION ``not_an_answer`` for a user message."""
    found: conv.Message = await peers.conversation.GetMessage(
        conv.GetMessageRequest(conversation_id=conversation_id, message_id=message_id)
    )
    if found.role != conv.MESSAGE_ROLE_ASSISTANT:
        raise FailedPrecondition(
            "only an answer can be read as a stream; this is a user message",
            code="not_an_answer",
        )
    return found


async def read_back(
    connection: HTTPConnection,
    caller: Principal,
    conversation_id: str,
    message_id: str,
    first_position: int = 0,
) -> EventStream:
    """The stream of a stored answer (see the module docstring). The first read happens
    before the stream starts: an unknown id is a plain 404."""
    peers: Peers = connection.app.state.peers
    guardrails: Guardrails = connection.app.state.guardrails
    found = await stored_answer(peers, conversation_id, message_id)
    request_id = request_id_var.get()
    events = answer_events(peers, guardrails.answer(caller.tenant_id), found, request_id)
    return EventStream(
        _encoded(events, TurnEncoder(found.id, first_position)),
        keep_alive=connection.app.state.settings.sse_keep_alive_seconds,
    )


async def _encoded(
    events: AsyncGenerator[Event, None], encoder: TurnEncoder
) -> AsyncGenerator[tuple[bytes, bool], None]:
    try:
        async for name, data in events:
            yield encoder(name, data)
    finally:
        await events.aclose()


def _guarded(guard: AnswerGuard | None, name: str, data: dict[str, Any]) -> list[Event]:
    return [(name, data)] if guard is None else guard.events(name, data)


async def answer_events(
    peers: Peers, guard: AnswerGuard | None, found: conv.Message, request_id: str | None
) -> AsyncGenerator[Event, None]:
    """``snapshot``, ``delta``… as the stored text grows, then the stored ending; exactly one
    ``done`` or ``error`` last. ``found`` is the answer as first read."""
    sent = 0  # characters of the stored text passed to the guard
    first = True
    try:
        while True:
            text = found.content
            pieces = _guarded(guard, "delta", {"text": text[sent:]}) if len(text) > sent else []
            sent = max(sent, len(text))
            if first:
                first = False
                shown = [data["text"] for name, data in pieces if name == "delta"]
                yield "snapshot", {"assistant_message_id": found.id, "text": "".join(shown)}
                pieces = [(name, data) for name, data in pieces if name != "delta"]
            for name, data in pieces:
                yield name, data
                if name in TURN_END:
                    return
            if found.status != conv.MESSAGE_STATUS_IN_PROGRESS:
                for ending in views.stored_ending(found, request_id):
                    for name, data in _guarded(guard, *ending):
                        yield name, data
                        if name in TURN_END:
                            return
                return
            await asyncio.sleep(POLL_SECONDS)
            found = await peers.conversation.GetMessage(
                conv.GetMessageRequest(conversation_id=found.conversation_id, message_id=found.id)
            )
    except grpc.RpcError as error:
        failure = views.turn_failure(from_rpc_error(error), request_id)
    except Exception:
        log.exception("unhandled error reading an answer back")
        failure = views.turn_failure(Internal("internal error"), request_id)
    for name, data in _guarded(guard, "error", failure):
        yield name, data
        if name in TURN_END:
            return
