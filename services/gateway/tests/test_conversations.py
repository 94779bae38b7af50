"""Conversation routes against a conversation peer that speaks real gRPC: the strings clients
read for enums, citations as sent, and which failures invite a retry."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as conv
from parley.conversation.v1 import conversation_pb2_grpc
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings
from parley_runtime.errors import FailedPrecondition, ParleyError, ResourceExhausted
from parley_runtime.grpc_server import Registration
from parley_testkit import grpc_server

# The ``serve_gateway`` fixture (conftest.py).
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]

CITATION = common_pb2.Citation(
    marker="1",
    document_id="doc-1",
    chunk_id="doc-1:0",
    title="Leave policy",
    source_uri="leave.md",
    snippet="Employees have 25 days of leave a year.",
    score=0.876543,
    page=3,
)
PUBLIC_CITATION = {
    "marker": "1",
    "document_id": "doc-1",
    "chunk_id": "doc-1:0",
    "title": "Leave policy",
    "source_uri": "leave.md",
    "snippet": "Employees have 25 days of leave a year.",
    "score": 0.8765,
    "page": 3,
}
FINISH_REASONS = [
    (common_pb2.FINISH_REASON_STOP, "stop"),
    (common_pb2.FINISH_REASON_LENGTH, "length"),
    (common_pb2.FINISH_REASON_TOOL_CALLS, "tool_calls"),
    (common_pb2.FINISH_REASON_CONTENT_FILTER, "content_filter"),
    (common_pb2.FINISH_REASON_ERROR, "error"),
    (common_pb2.FINISH_REASON_CANCELLED, "cancelled"),
    (common_pb2.FINISH_REASON_UNSPECIFIED, None),
]


def _answer(finish_reason: common_pb2.FinishReason.ValueType, n: int = 0) -> conv.Message:
    return conv.Message(
        id=f"a{n}",
        conversation_id="c1",
        role=conv.MESSAGE_ROLE_ASSISTANT,
        content="You have 25 days [1].",
        status=conv.MESSAGE_STATUS_COMPLETE,
        model="local",
        finish_reason=finish_reason,
        citations=[CITATION],
    )


@dataclass
class FakeConversation(conversation_pb2_grpc.ConversationServiceServicer):
    """Stored messages, and a turn that yields ``turn`` then fails with ``failure`` if set."""

    messages: list[conv.Message] = field(default_factory=list)
    turn: list[conv.TurnEvent] = field(default_factory=list)
    failure: ParleyError | None = None

    async def ListMessages(
        self, request: conv.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> conv.ListMessagesResponse:
        return conv.ListMessagesResponse(messages=self.messages)

    async def CreateConversation(
        self, request: conv.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> conv.Conversation:
        if self.failure is not None:
            raise self.failure
        return conv.Conversation(id="c1", title=request.title)

    async def SendMessage(
        self, request: conv.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conv.TurnEvent]:
        for event in self.turn:
            yield event
        if self.failure is not None:
            raise self.failure


def _dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def fake() -> FakeConversation:
    return FakeConversation()


@pytest.fixture
async def client(serve_gateway: Serve, fake: FakeConversation) -> AsyncIterator[httpx.AsyncClient]:
    registration = Registration(
        "parley.conversation.v1.ConversationService",
        lambda server: conversation_pb2_grpc.add_ConversationServiceServicer_to_server(
            fake, server
        ),
    )
    dead = _dead_address()
    async with grpc_server([registration]) as address:
        settings = Settings(conversation_addr=address, ingest_addr=dead, llm_router_addr=dead)
        token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="acme", user="ann")
        async with serve_gateway(settings) as http:
            http.headers["Authorization"] = f"Bearer {token}"
            yield http


def _sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event, data) pairs of a Server-Sent Events body."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            events.append((lines["event"], json.loads(lines["data"])))
    return events


ACCEPTED = conv.TurnEvent(
    accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
)


async def test_stored_answers_show_finish_reasons_as_public_strings(
    client: httpx.AsyncClient, fake: FakeConversation
) -> None:
    question = conv.Message(
        id="u1", conversation_id="c1", role=conv.MESSAGE_ROLE_USER, content="How many days?"
    )
    fake.messages = [
        question,
        *(_answer(reason, n) for n, (reason, _) in enumerate(FINISH_REASONS)),
    ]
    response = await client.get("/v1/conversations/c1/messages")
    assert response.status_code == 200
    asked, *answers = response.json()["messages"]
    assert asked["role"] == "user"
    assert "finish_reason" not in asked
    assert [a["finish_reason"] for a in answers] == [public for _, public in FINISH_REASONS]
    assert {(a["role"], a["status"]) for a in answers} == {("assistant", "complete")}
    assert answers[0]["citations"] == [PUBLIC_CITATION]


async def test_a_streamed_turn_shows_citations_and_the_stored_answer(
    client: httpx.AsyncClient, fake: FakeConversation
) -> None:
    fake.turn = [
        ACCEPTED,
        conv.TurnEvent(citations=conv.CitationsEvent(citations=[CITATION])),
        conv.TurnEvent(delta=conv.TextDelta(text="You have 25 days [1].")),
        conv.TurnEvent(done=conv.TurnDone(message=_answer(common_pb2.FINISH_REASON_STOP))),
    ]
    response = await client.post(
        "/v1/conversations/c1/messages",
        json={"content": "How many days?"},
        headers={"Accept": "text/event-stream"},
    )
    events = _sse(response.text)
    assert [name for name, _ in events] == ["accepted", "citations", "delta", "done"]
    assert events[1][1] == {"citations": [PUBLIC_CITATION]}
    done = events[-1][1]["message"]
    assert done["finish_reason"] == "stop"
    assert done["citations"] == [PUBLIC_CITATION]


@pytest.mark.parametrize(
    ("failure", "retryable"),
    [
        (ResourceExhausted("the provider is rate limiting", code="provider_rate_limited"), True),
        (FailedPrecondition("the model refused", code="provider_refused"), False),
    ],
)
async def test_a_turn_failing_midstream_says_whether_to_retry(
    client: httpx.AsyncClient, fake: FakeConversation, failure: ParleyError, retryable: bool
) -> None:
    fake.turn, fake.failure = [ACCEPTED], failure
    streamed = await client.post(
        "/v1/conversations/c1/messages",
        json={"content": "hi"},
        headers={"Accept": "text/event-stream"},
    )
    name, data = _sse(streamed.text)[-1]
    assert (name, data["code"], data["retryable"]) == ("error", failure.code, retryable)
    assert data["request_id"] == streamed.headers["x-request-id"]

    gathered = await client.post("/v1/conversations/c1/messages", json={"content": "hi"})
    assert gathered.status_code == 502
    assert gathered.json()["error"]["code"] == failure.code
    assert ("retry-after" in gathered.headers) is retryable


async def test_a_stream_that_ends_without_a_result_is_a_retryable_error(
    client: httpx.AsyncClient, fake: FakeConversation
) -> None:
    fake.turn = [ACCEPTED]
    response = await client.post(
        "/v1/conversations/c1/messages",
        json={"content": "hi"},
        headers={"Accept": "text/event-stream"},
    )
    name, data = _sse(response.text)[-1]
    assert (name, data["code"], data["retryable"]) == ("error", "stream_incomplete", True)


async def test_a_rate_limited_request_is_429_with_the_peers_retry_after(
    client: httpx.AsyncClient, fake: FakeConversation
) -> None:
    fake.failure = ResourceExhausted("too many conversations", code="rate_limited", retry_after=3)
    response = await client.post("/v1/conversations", json={})
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["code"] == "rate_limited"


async def test_a_refused_request_has_no_retry_after(
    client: httpx.AsyncClient, fake: FakeConversation
) -> None:
    fake.failure = FailedPrecondition("the knowledge base is being deleted", code="kb_deleting")
    response = await client.post("/v1/conversations", json={})
    assert response.status_code == 409
    assert "retry-after" not in response.headers


async def test_readiness_names_the_peer_that_is_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "conversation": True,
        "ingest": False,
        "llm-router": False,
    }
