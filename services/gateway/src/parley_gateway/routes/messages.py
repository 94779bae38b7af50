"""One message of a conversation: read it, read an answer back as a stream, stop an answer,
rate it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway import answers, views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.guardrails import Guardrails
from parley_gateway.inputs import LastEventId, ResourceId, Text
from parley_gateway.limits.http import RATE_LIMITED, route_class
from parley_gateway.sse import EventStream
from parley_runtime.context import Principal

router = APIRouter(
    prefix="/v1/conversations/{conversation_id}/messages/{message_id}",
    tags=["conversations"],
    route_class=CappedRoute,
    dependencies=[RATE_LIMITED],
)
Reader = Annotated[Principal, require("read")]
Chatter = Annotated[Principal, require("chat")]

ANSWER_EXAMPLE = {
    "id": "msg_a1",
    "conversation_id": "conv_1",
    "role": "assistant",
    "content": "Employees have 25 days",
    "status": "cancelled",
    "created_at": "2026-12-04T10:00:00.000Z",
    "model": "openai/gpt-4o-mini",
    "usage": {"input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "estimated": False},
    "finish_reason": "cancelled",
    "citations": [],
    "error_code": "cancelled",
    "tool_activity": [],
}
EVENTS_EXAMPLE = (
    "id: msg_a1:4\nevent: snapshot\n"
    'data: {"assistant_message_id":"msg_a1","text":"Employees have 25 days"}\n\n'
    'id: msg_a1:5\nevent: delta\ndata: {"text":" of leave a year [1]."}\n\n'
    'id: msg_a1:6\nevent: usage\ndata: {"input_tokens":412,"output_tokens":11,'
    '"cost_usd":0.0001,"estimated":false}\n\n'
    'id: msg_a1:7\nevent: done\ndata: {"message":{"id":"msg_a1","status":"complete"}}\n\n'
)


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


def _shown(request: Request, caller: Principal, message: conv.Message) -> dict[str, Any]:
    guardrails: Guardrails = request.app.state.guardrails
    return guardrails.shown(caller.tenant_id, views.message(message))


@router.get(
    "",
    responses={
        200: {"content": {"application/json": {"example": ANSWER_EXAMPLE}}},
        **responses(401, 403, 404, 422, 429, 500, 503),
    },
)
async def get_message(
    conversation_id: ResourceId, message_id: ResourceId, request: Request, caller: Reader
) -> dict[str, Any]:
    """One message as stored, superseded answers included. An answer still streaming shows
    its text saved so far (at most half a second behind) and status ``in_progress``."""
    found = await _peers(request).conversation.GetMessage(
        conv.GetMessageRequest(conversation_id=conversation_id, message_id=message_id)
    )
    return _shown(request, caller, found)


@router.get(
    "/events",
    response_model=None,
    responses={
        200: {
            "description": "The answer as Server-Sent Events: `snapshot` (the whole text so "
            "far), `delta`… while it streams, then `usage` and `done`, or `error`.",
            "content": {"text/event-stream": {"example": EVENTS_EXAMPLE}},
        },
        **responses(401, 403, 404, 409, 422, 429, 500, 503),
    },
)
async def read_answer(
    conversation_id: ResourceId,
    message_id: ResourceId,
    request: Request,
    caller: Reader,
    last_event_id: LastEventId = None,
) -> EventStream:
    """Read an answer back as a stream, from the store: after a lost connection, or to follow
    an answer streaming elsewhere. Ends at once for an answer that has ended; 409
    ``not_an_answer`` for a user message. Event ids go on from ``Last-Event-ID``'s."""
    position = 0
    if last_event_id is not None:
        position = answers.answer_of_event_id(last_event_id)[1] + 1
    return await answers.read_back(request, caller, conversation_id, message_id, position)


@router.post(
    "/cancel",
    response_model=None,
    responses={
        200: {
            "description": "The answer has ended: stopped now (status `cancelled`, its text so "
            "far kept), or it had ended before (returned as it is).",
            "content": {"application/json": {"example": ANSWER_EXAMPLE}},
        },
        202: {
            "description": "Asked, but the replica writing the answer has not stopped it yet "
            "(status still `in_progress`); it will, or its answer is closed once its lease "
            "runs out.",
            "content": {
                "application/json": {"example": {**ANSWER_EXAMPLE, "status": "in_progress"}}
            },
        },
        **responses(401, 403, 404, 409, 422, 429, 500, 503),
    },
    # A `reads` request: a caller at its chat limit can still stop an answer.
)
async def cancel_answer(
    conversation_id: ResourceId, message_id: ResourceId, request: Request, caller: Chatter
) -> JSONResponse:
    """Stop an answer while it streams, wherever its stream is held (this connection, another,
    another gateway). The stream ends with an `error` event of code `cancelled`; the answer is
    stored `cancelled` with its text so far. 409 ``not_an_answer`` for a user message."""
    stopped = await _peers(request).conversation.CancelAnswer(
        conv.CancelAnswerRequest(conversation_id=conversation_id, message_id=message_id)
    )
    status = 202 if stopped.status == conv.MESSAGE_STATUS_IN_PROGRESS else 200
    return JSONResponse(_shown(request, caller, stopped), status_code=status)


class FeedbackBody(BaseModel):
    """A rating of an answer, and an optional comment."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"rating": "down", "comment": "It missed the 2026 rule."}]},
    )

    rating: Literal["up", "down"]
    comment: Text = Field("", max_length=2000)


FEEDBACK_EXAMPLE = {
    "message_id": "msg_a1",
    "rating": "down",
    "comment": "It missed the 2026 rule.",
    "created_at": "2026-12-04T10:01:00.000Z",
}


@router.put(
    "/feedback",
    responses={
        200: {"content": {"application/json": {"example": FEEDBACK_EXAMPLE}}},
        **responses(400, 401, 403, 404, 409, 413, 422, 429, 500, 503),
    },
    openapi_extra=route_class("chat"),
)
async def rate_answer(
    conversation_id: ResourceId,
    message_id: ResourceId,
    body: FeedbackBody,
    request: Request,
    caller: Chatter,
) -> dict[str, Any]:
    """Rate an answer; a new rating replaces the caller's earlier one. 409
    ``feedback_on_user_message`` for a user message."""
    stored = await _peers(request).conversation.SubmitFeedback(
        conv.SubmitFeedbackRequest(
            conversation_id=conversation_id,
            message_id=message_id,
            rating=views.RATINGS[body.rating],
            comment=body.comment,
        )
    )
    return views.feedback(stored)
