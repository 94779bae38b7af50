"""Conversations and their messages, including the streamed chat turn."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from typing import Annotated, Any, TypeVar

import grpc
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from google.protobuf.field_mask_pb2 import FieldMask
from pydantic import BaseModel, ConfigDict, Field

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway import answers, views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import envelope, responses
from parley_gateway.guardrails import AnswerGuard, Guardrails
from parley_gateway.inputs import (
    IdempotencyKey,
    LastEventId,
    Name,
    PageToken,
    ResourceId,
    Temperature,
    Text,
)
from parley_gateway.limits.http import RATE_LIMITED, admit_turn, route_class
from parley_gateway.settings import Settings
from parley_gateway.sse import EventStream, TurnEncoder
from parley_runtime.context import Principal, request_id_var
from parley_runtime.errors import Internal, InvalidArgument, Unavailable, from_rpc_error

log = logging.getLogger("parley.gateway")
router = APIRouter(
    prefix="/v1", tags=["conversations"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
Reader = Annotated[Principal, require("read")]
Chatter = Annotated[Principal, require("chat")]
Rendered = TypeVar("Rendered")
# The events that end a turn; exactly one of them ends every turn.
TERMINAL = frozenset(("done", "error"))
# OpenAPI examples of a turn's answer, streamed and as JSON.
SSE_EXAMPLE = (
    "id: msg_a1:0\nevent: accepted\ndata: "
    '{"user_message_id":"msg_u1","assistant_message_id":"msg_a1","replayed":false}\n\n'
    'id: msg_a1:1\nevent: delta\ndata: {"text":"Employees have 25 days"}\n\n'
    'id: msg_a1:2\nevent: usage\ndata: {"input_tokens":412,"output_tokens":9,'
    '"cost_usd":0.0001,"estimated":false}\n\n'
    'id: msg_a1:3\nevent: done\ndata: {"message":{"id":"msg_a1","status":"complete"}}\n\n'
)
TURN_EXAMPLE = {
    "user_message_id": "msg_u1",
    "assistant_message_id": "msg_a1",
    "replayed": False,
    "message": {
        "id": "msg_a1",
        "conversation_id": "conv_1",
        "role": "assistant",
        "content": "Employees have 25 days of leave a year [1].",
        "status": "complete",
        "created_at": "2026-12-04T10:00:00.000Z",
        "model": "openai/gpt-4o-mini",
        "usage": {"input_tokens": 412, "output_tokens": 11, "cost_usd": 0.0001, "estimated": False},
        "finish_reason": "stop",
        "citations": [],
        "error_code": None,
        "tool_activity": [],
    },
}


class ConversationSettingsBody(BaseModel):
    """How a conversation answers: its model alias, knowledge base and temperature, and
    whether it uses the user's memories."""

    model_config = ConfigDict(extra="forbid")

    model: Text | None = Field(None, max_length=100, description="Model alias for answers.")
    knowledge_base_id: Name | None = None
    temperature: Temperature | None = None
    memory_enabled: bool | None = Field(
        None,
        strict=True,
        description="Recall what Parley remembers about the user, and remember new facts "
        "they state (on unless false; see /v1/memories).",
    )


class CreateConversationBody(BaseModel):
    """A new conversation."""

    model_config = ConfigDict(extra="forbid")

    title: Text = Field("", max_length=200)
    settings: ConversationSettingsBody = Field(default_factory=ConversationSettingsBody)


class UpdateConversationBody(BaseModel):
    """The fields to change; those left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    title: Text | None = Field(None, max_length=200)
    settings: ConversationSettingsBody | None = None


class SendMessageBody(BaseModel):
    """A user message. There is no role: clients cannot send system messages."""

    model_config = ConfigDict(extra="forbid")

    content: Text = Field(description="The user's text.")
    model: Text | None = Field(None, max_length=100, description="Model alias for this turn.")


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _settings_proto(body: ConversationSettingsBody) -> conv.ConversationSettings:
    settings = conv.ConversationSettings(
        model=body.model or "", knowledge_base_id=body.knowledge_base_id or ""
    )
    if body.temperature is not None:
        settings.temperature = body.temperature
    if body.memory_enabled is not None:
        settings.memory_enabled = body.memory_enabled
    return settings


@router.post(
    "/conversations", status_code=201, responses=responses(400, 401, 403, 413, 422, 429, 500, 503)
)
async def create_conversation(
    body: CreateConversationBody, request: Request, caller: Chatter
) -> dict[str, Any]:
    """Create a conversation for the caller."""
    created = await _peers(request).conversation.CreateConversation(
        conv.CreateConversationRequest(title=body.title, settings=_settings_proto(body.settings))
    )
    return views.conversation(created)


@router.get("/conversations", responses=responses(401, 403, 422, 429, 500, 503))
async def list_conversations(
    request: Request,
    caller: Reader,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """The caller's conversations, newest first."""
    page = await _peers(request).conversation.ListConversations(
        conv.ListConversationsRequest(page_size=page_size, page_token=page_token)
    )
    return {
        "conversations": [views.conversation(c) for c in page.conversations],
        "next_page_token": page.next_page_token or None,
    }


@router.get(
    "/conversations/{conversation_id}", responses=responses(401, 403, 404, 422, 429, 500, 503)
)
async def get_conversation(
    conversation_id: ResourceId, request: Request, caller: Reader
) -> dict[str, Any]:
    """One conversation of the caller."""
    found = await _peers(request).conversation.GetConversation(
        conv.GetConversationRequest(conversation_id=conversation_id)
    )
    return views.conversation(found)


@router.patch(
    "/conversations/{conversation_id}",
    responses=responses(400, 401, 403, 404, 413, 422, 429, 500, 503),
)
async def update_conversation(
    conversation_id: ResourceId, body: UpdateConversationBody, request: Request, caller: Chatter
) -> dict[str, Any]:
    """Change a conversation's title or settings."""
    paths = []
    update = conv.UpdateConversationRequest(conversation_id=conversation_id)
    if body.title is not None:
        update.title = body.title
        paths.append("title")
    if body.settings is not None:
        update.settings.CopyFrom(_settings_proto(body.settings))
        paths += [f"settings.{name}" for name in sorted(body.settings.model_fields_set)]
    if not paths:
        raise InvalidArgument("nothing to update: send title or settings", code="empty_update")
    update.update_mask.CopyFrom(FieldMask(paths=paths))
    updated = await _peers(request).conversation.UpdateConversation(update)
    return views.conversation(updated)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    responses=responses(401, 403, 404, 422, 429, 500, 503),
)
async def delete_conversation(
    conversation_id: ResourceId, request: Request, caller: Chatter
) -> Response:
    """Delete a conversation and its messages."""
    await _peers(request).conversation.DeleteConversation(
        conv.DeleteConversationRequest(conversation_id=conversation_id)
    )
    return Response(status_code=204)


@router.get(
    "/conversations/{conversation_id}/messages",
    responses=responses(401, 403, 404, 422, 429, 500, 503),
)
async def list_messages(
    conversation_id: ResourceId,
    request: Request,
    caller: Reader,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """A conversation's messages, oldest first."""
    page = await _peers(request).conversation.ListMessages(
        conv.ListMessagesRequest(
            conversation_id=conversation_id, page_size=page_size, page_token=page_token
        )
    )
    guardrails = _guardrails(request)
    return {
        "messages": [guardrails.shown(caller.tenant_id, views.message(m)) for m in page.messages],
        "next_page_token": page.next_page_token or None,
    }


@router.post(
    "/conversations/{conversation_id}/messages",
    response_model=None,
    responses=responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503),
    openapi_extra=route_class("chat"),
)
async def send_message(
    conversation_id: ResourceId,
    body: SendMessageBody,
    request: Request,
    caller: Chatter,
    idempotency_key: IdempotencyKey = None,
    accept: Annotated[str, Header()] = "application/json",
    last_event_id: LastEventId = None,
) -> Response:
    """Send a user message; the answer streams as SSE, or returns as JSON when not asked to.
    A stream sent again with ``Last-Event-ID`` (a client reconnecting) reads back the answer
    that id names instead: no message is sent."""
    if last_event_id is not None and "text/event-stream" in accept:
        answer_id, position = answers.answer_of_event_id(last_event_id)
        return await answers.read_back(request, caller, conversation_id, answer_id, position + 1)
    settings = _settings(request)
    if not body.content.strip():
        raise InvalidArgument("body.content: must not be empty", code="empty_message")
    if len(body.content) > settings.max_message_chars:
        raise InvalidArgument(
            f"body.content: at most {settings.max_message_chars} characters",
            code="message_too_long",
        )
    guardrails = _guardrails(request)
    content = await guardrails.check_input(caller.tenant_id, body.content)
    guard = guardrails.answer(caller.tenant_id)
    # A stream slot and the token quotas (429 when spent); the lease ends with the call.
    lease = await admit_turn(request, caller)
    call = lease.watch(
        _peers(request).conversation.SendMessage(
            conv.SendMessageRequest(
                conversation_id=conversation_id,
                content=content,
                idempotency_key=idempotency_key or "",
                model=body.model or "",
                usage_with_done=True,
            ),
            timeout=settings.stream_timeout_seconds,
        )
    )
    first = await _first_event(call)
    if "text/event-stream" in accept:
        return EventStream(
            _turn_events(call, first, TurnEncoder(), guard),
            keep_alive=settings.sse_keep_alive_seconds,
        )
    return await _gathered(call, first, guard)


class RegenerateBody(BaseModel):
    """Options of the new answer; the body may be left out."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"model": "fast"}]})

    model: Text | None = Field(None, max_length=100, description="Model alias for this answer.")


@router.post(
    "/conversations/{conversation_id}/regenerate",
    response_model=None,
    responses={
        200: {
            "description": "The new answer: SSE with `Accept: text/event-stream` (as a sent "
            "message's), else the accepted ids and the stored message as JSON.",
            "content": {
                "text/event-stream": {"example": SSE_EXAMPLE},
                "application/json": {"example": TURN_EXAMPLE},
            },
        },
        **responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503),
    },
    openapi_extra=route_class("chat"),
)
async def regenerate(
    conversation_id: ResourceId,
    request: Request,
    caller: Chatter,
    body: RegenerateBody | None = None,
    accept: Annotated[str, Header()] = "application/json",
    last_event_id: LastEventId = None,
) -> Response:
    """Answer the conversation's last user message again. The previous answer is superseded:
    left out of the conversation and of later prompts, kept in exports. 409
    ``nothing_to_regenerate`` when the conversation has no message yet."""
    if last_event_id is not None and "text/event-stream" in accept:
        answer_id, position = answers.answer_of_event_id(last_event_id)
        return await answers.read_back(request, caller, conversation_id, answer_id, position + 1)
    settings = _settings(request)
    guard = _guardrails(request).answer(caller.tenant_id)
    lease = await admit_turn(request, caller)
    call = lease.watch(
        _peers(request).conversation.RegenerateMessage(
            conv.RegenerateMessageRequest(
                conversation_id=conversation_id,
                model=(body.model or "") if body else "",
                usage_with_done=True,
            ),
            timeout=settings.stream_timeout_seconds,
        )
    )
    first = await _first_event(call)
    if "text/event-stream" in accept:
        return EventStream(
            _turn_events(call, first, TurnEncoder(), guard),
            keep_alive=settings.sse_keep_alive_seconds,
        )
    return await _gathered(call, first, guard)


async def _first_event(call: Any) -> Any:
    """The first event of a turn's call, None when it ends without one.

    Waiting for it makes an unknown conversation or a dead service a plain HTTP error, not a
    stream that starts and then fails. The events are read by iterating the call (as the rest
    of the turn is)."""
    try:
        return await anext(aiter(call), None)
    except grpc.RpcError as error:
        call.cancel()
        raise from_rpc_error(error) from None


def _guardrails(request: Request) -> Guardrails:
    guardrails: Guardrails = request.app.state.guardrails
    return guardrails


def _guarded(
    guard: AnswerGuard | None, name: str, data: dict[str, Any]
) -> Iterable[tuple[str, dict[str, Any]]]:
    """The events to send for one of the turn's: itself, or what the answer's guard makes
    of it (guardrails/edge.py)."""
    return ((name, data),) if guard is None else guard.events(name, data)


def _pair(name: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return name, data


async def _turn_events(
    call: Any,
    first: Any,
    render: Callable[[str, dict[str, Any]], Rendered],
    guard: AnswerGuard | None = None,
) -> AsyncGenerator[Rendered, None]:
    """The turn's events, each as ``render(name, data)``, always ending with exactly one done
    or error; through the answer's ``guard`` when there is one."""
    request_id = request_id_var.get()
    # Whether conversation's own terminal event was read: its call then ends on its own (a
    # guard may end the stream earlier, while the answer goes on upstream).
    ended = False

    def relayed(event: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        nonlocal ended
        for seen in views.turn_events(event, request_id):
            ended = seen[0] in TERMINAL
            yield from _guarded(guard, *seen)

    try:
        try:
            if first is not None:
                for name, data in relayed(first):
                    yield render(name, data)
                    if name in TERMINAL:
                        return
                async for event in call:
                    for name, data in relayed(event):
                        yield render(name, data)
                        if name in TERMINAL:
                            return
            incomplete = Unavailable(
                "the answer stream ended without a result", code="stream_incomplete"
            )
            failure = views.turn_failure(incomplete, request_id)
        except grpc.RpcError as error:
            failure = views.turn_failure(from_rpc_error(error), request_id)
        except Exception:
            # The last resort of a stream: its status line is sent, so it ends with an event.
            log.exception("unhandled error in a streamed turn")
            failure = views.turn_failure(Internal("internal error"), request_id)
        # Text the guard still holds goes out before the error; one terminal event, always.
        for name, data in _guarded(guard, "error", failure):
            yield render(name, data)
            if name in TERMINAL:
                return
    finally:
        # Cancelled unless read to its end: a client that went away cancels the chain down
        # to the provider.
        call.close(read_to_end=ended)


async def _gathered(call: Any, first: Any, guard: AnswerGuard | None = None) -> JSONResponse:
    accepted: dict[str, Any] = {}
    async for name, data in _turn_events(call, first, _pair, guard):
        if name == "accepted":
            accepted = data
        elif name == "done":
            return JSONResponse({**accepted, "message": data["message"]}, status_code=200)
        elif name == "error":
            body = envelope(data["code"], data["message"])
            body["error"]["assistant_message_id"] = data.get("assistant_message_id")
            headers = {"Retry-After": "1"} if data.get("retryable") else {}
            # The peer (or the provider behind it) failed the turn; a failure of the
            # gateway's own is a plain internal error; an answer stopped on request (from
            # another connection) is a conflict with the request that waited for it.
            status = {"internal": 500, "cancelled": 409}.get(data["code"], 502)
            return JSONResponse(body, status_code=status, headers=headers)
    raise AssertionError("a turn always ends with done or error")
