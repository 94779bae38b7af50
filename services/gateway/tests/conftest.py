"""The real gateway app served on a loopback port, for tests that drive it over HTTP, alone
(``serve_gateway``) or in front of fake peers that record what reached them (``api``).

The fakes speak the peers' real gRPC contracts over a socket: ``FakeConversation`` and
``FakeIngest`` answer from fields a test sets (``messages``, ``turn``, ``failure``) and keep
every request they receive in ``calls`` with its request id, so a test can assert that refused
input never reached a peer, or which id did. ``error_of`` reads the error envelope as a client
does.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import httpx
import pytest
import uvicorn

from parley.conversation.v1 import conversation_pb2 as conv
from parley.conversation.v1 import conversation_pb2_grpc
from parley.ingest.v1 import ingest_pb2 as ing
from parley.ingest.v1 import ingest_pb2_grpc
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc
from parley_gateway.app import create_app
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings
from parley_runtime.errors import ParleyError
from parley_runtime.grpc_server import Registration
from parley_testkit import grpc_server

Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]
_DEFAULT_DATABASE = Settings.model_fields["database_url"].default
T = TypeVar("T")


@asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """Serve the gateway on 127.0.0.1 with a free port; yield a client of it. Its tables are
    in a SQLite file of its own unless the test names a database: the run's DATABASE_URL is a
    shared server, not a database to write in."""
    folder = tempfile.mkdtemp(prefix="parley-gateway-")
    if settings.database_url in (os.environ.get("DATABASE_URL"), _DEFAULT_DATABASE):
        settings = settings.model_copy(update={"database_url": f"sqlite:///{folder}/gateway.db"})
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        await task
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def serve_gateway() -> Serve:
    """``async with serve_gateway(settings) as client``: the app, running, and its client."""
    return _serve


@dataclass
class Call:
    """One request a fake received, and the ``x-request-id`` it carried."""

    method: str
    request: Any
    request_id: str | None


def _request_id(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)
    return None


async def _stream(
    events: list[T], cancelled: asyncio.Event, *, pace: float = 0.0, linger: float = 0.0
) -> AsyncIterator[T]:
    """``events``, ``pace`` seconds apart, the stream kept open ``linger`` seconds after the
    last; ``cancelled`` is set when the caller cancels it meanwhile."""
    try:
        for n, event in enumerate(events):
            if n and pace:
                await asyncio.sleep(pace)
            yield event
        if linger:
            await asyncio.sleep(linger)
    except asyncio.CancelledError:
        cancelled.set()
        raise


@dataclass
class FakeConversation(conversation_pb2_grpc.ConversationServiceServicer):
    """Stored messages, and a turn that yields ``turn`` (``pace`` seconds apart), stays open
    ``linger`` seconds after its last event, then fails with ``failure`` if set; ``cancelled``
    is set when the caller cancels a turn."""

    messages: list[conv.Message] = field(default_factory=list)
    turn: list[conv.TurnEvent] = field(default_factory=list)
    pace: float = 0.0
    linger: float = 0.0
    failure: ParleyError | None = None
    calls: list[Call] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def ListMessages(
        self, request: conv.ListMessagesRequest, context: grpc.aio.ServicerContext
    ) -> conv.ListMessagesResponse:
        self.calls.append(Call("ListMessages", request, _request_id(context)))
        return conv.ListMessagesResponse(messages=self.messages)

    async def ListConversations(
        self, request: conv.ListConversationsRequest, context: grpc.aio.ServicerContext
    ) -> conv.ListConversationsResponse:
        self.calls.append(Call("ListConversations", request, _request_id(context)))
        return conv.ListConversationsResponse()

    async def CreateConversation(
        self, request: conv.CreateConversationRequest, context: grpc.aio.ServicerContext
    ) -> conv.Conversation:
        self.calls.append(Call("CreateConversation", request, _request_id(context)))
        if self.failure is not None:
            raise self.failure
        return conv.Conversation(id="c1", title=request.title)

    async def SendMessage(
        self, request: conv.SendMessageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[conv.TurnEvent]:
        self.calls.append(Call("SendMessage", request, _request_id(context)))
        async for event in _stream(self.turn, self.cancelled, pace=self.pace, linger=self.linger):
            yield event
        if self.failure is not None:
            raise self.failure


@dataclass
class FakeIngest(ingest_pb2_grpc.IngestServicer):
    """Creates documents, or fails with ``failure`` if set."""

    failure: ParleyError | None = None
    calls: list[Call] = field(default_factory=list)

    async def CreateDocument(
        self, request: ing.CreateDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ing.CreateDocumentResponse:
        self.calls.append(Call("CreateDocument", request, _request_id(context)))
        if self.failure is not None:
            raise self.failure
        return ing.CreateDocumentResponse(
            document=ing.Document(id="doc_1", knowledge_base_id="kb"),
            job=ing.Job(id="job_1", document_id="doc_1"),
        )


@dataclass
class FakeLlmRouter(llm_router_pb2_grpc.LlmRouterServicer):
    """A streamed answer of ``answer``'s events that stays open ``linger`` seconds after the
    last; ``cancelled`` is set when the caller cancels it."""

    answer: list[llm.ChatEvent] = field(default_factory=list)
    linger: float = 0.0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)

    async def StreamChat(
        self, request: llm.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm.ChatEvent]:
        async for event in _stream(self.answer, self.cancelled, linger=self.linger):
            yield event


@dataclass
class Fakes:
    """The fakes a gateway under test talks to, and their addresses."""

    conversation: FakeConversation = field(default_factory=FakeConversation)
    ingest: FakeIngest = field(default_factory=FakeIngest)
    llm_router: FakeLlmRouter = field(default_factory=FakeLlmRouter)
    address: str = ""
    dead: str = ""

    @property
    def calls(self) -> list[Call]:
        return [*self.conversation.calls, *self.ingest.calls]


@asynccontextmanager
async def serving_fakes() -> AsyncIterator[Fakes]:
    """Conversation, ingest and llm-router fakes on one loopback port (the gateway is
    pointed at this llm-router only when a test asks: ``api(live_router=True)``)."""
    fakes = Fakes(dead=dead_address())
    registrations = [
        Registration(
            "parley.conversation.v1.ConversationService",
            lambda server: conversation_pb2_grpc.add_ConversationServiceServicer_to_server(
                fakes.conversation, server
            ),
        ),
        Registration(
            "parley.ingest.v1.Ingest",
            lambda server: ingest_pb2_grpc.add_IngestServicer_to_server(fakes.ingest, server),
        ),
        Registration(
            "parley.llm_router.v1.LlmRouter",
            lambda server: llm_router_pb2_grpc.add_LlmRouterServicer_to_server(
                fakes.llm_router, server
            ),
        ),
    ]
    async with grpc_server(registrations) as address:
        fakes.address = address
        yield fakes


def dead_address() -> str:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Fakes]]]


@asynccontextmanager
async def _api(
    *, live_router: bool = False, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Fakes]]:
    """The gateway (with ``settings``) in front of fake conversation and ingest peers, and
    llm-router down (or the fake one with ``live_router``); its client carries a bearer
    token of tenant acme."""
    async with serving_fakes() as fakes:
        config = Settings(
            conversation_addr=fakes.address,
            ingest_addr=fakes.address,
            llm_router_addr=fakes.address if live_router else fakes.dead,
            **settings,
        )
        token = issue_token(config.auth_secret, config.auth_issuer, tenant="acme", user="ann")
        async with _serve(config) as client:
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, fakes


@pytest.fixture
def api() -> Api:
    """``async with api(**settings) as (client, fakes)``: the app in front of fake peers."""
    return _api


def _error_of(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope's ``error`` of ``response``, once checked: ``status``, ``code``, and the
    request id the ``X-Request-ID`` header also carries."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"]
    assert error["request_id"] == response.headers["x-request-id"]
    return error


@pytest.fixture
def error_of() -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    """``error_of(response, status, code)``: the envelope's ``error``, checked."""
    return _error_of


def sse_events(body: str) -> list[tuple[str | None, str, dict[str, Any]]]:
    """The (id, event, data) of each event of a Server-Sent Events body; comments skipped."""
    found = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            found.append((fields.get("id"), fields["event"], json.loads(fields["data"])))
    return found


@pytest.fixture
def parse_sse() -> Callable[[str], list[tuple[str | None, str, dict[str, Any]]]]:
    """``parse_sse(body)``: the (id, event, data) of each event."""
    return sse_events
