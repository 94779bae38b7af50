"""Turns that cannot start store nothing: conversation with the real llm-router (its offline
local provider, routes from a file it reloads), on SQLite and PostgreSQL.

An unknown model alias and an idempotency key reused for another message are refused as
INVALID_ARGUMENT, a router that is down as UNAVAILABLE, before anything is written; a route
added to the file works at once, and a router that comes back is used at once."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley.llm_router.v1 import llm_router_pb2_grpc as llm_grpc
from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime.grpc_client import channel
from parley_runtime.grpc_server import start_server
from parley_runtime.settings import ServiceSettings
from parley_testkit import acting_as

ROUTES = """
default_model: default
providers:
  here: {{type: local}}
models:
{models}
"""


def routes(*aliases: str) -> str:
    models = "\n".join(
        f"  {a}: {{candidates: [{{provider: here, model: extractive-v1}}]}}" for a in aliases
    )
    return ROUTES.format(models=models)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """Calls carry this principal (a sync fixture: its context reaches the test)."""
    with acting_as("acme", "ann"):
        yield


@dataclass
class Platform:
    """conversation, and llm-router on a port of its own that it can leave and come back to."""

    stub: pb_grpc.ConversationServiceStub
    routes_file: Path
    router_port: int
    tmp_path: Path

    @asynccontextmanager
    async def router(self) -> AsyncIterator[llm_grpc.LlmRouterStub]:
        """llm-router serving on its port until the block ends."""
        wiring = await build_router(
            RouterSettings(
                grpc_port=0,
                routes_file=self.routes_file,
                routes_reload_seconds=0.05,
                local_token_delay_ms=1,
                database_url=f"sqlite:///{self.tmp_path}/router.db",
                redis_url=None,
            ),
            env={},
        )
        settings = ServiceSettings(
            grpc_host="127.0.0.1", grpc_port=self.router_port, shutdown_grace_seconds=1
        )
        server, _, _ = await start_server(settings, wiring.registrations)
        try:
            async with channel(
                f"127.0.0.1:{self.router_port}", "parley.llm_router.v1.LlmRouter"
            ) as chan:
                yield llm_grpc.LlmRouterStub(chan)
        finally:
            await server.stop(None)
            await wiring.close()


@pytest.fixture
async def platform(database_url: str, tmp_path: Path) -> AsyncIterator[Platform]:
    routes_file = tmp_path / "routes.yaml"
    routes_file.write_text(routes("default", "fast"))
    router_port = free_port()
    wiring = await build_conversation(
        Settings(
            grpc_port=0,
            database_url=database_url,
            llm_router_addr=f"127.0.0.1:{router_port}",
            # Nothing listens here: a turn answers without documents.
            retrieval_addr=f"127.0.0.1:{free_port()}",
            retrieval_timeout_seconds=0.5,
            model_check_timeout_seconds=0.5,
        )
    )
    settings = ServiceSettings(grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_seconds=1)
    server, _, port = await start_server(settings, wiring.registrations)
    try:
        async with channel(
            f"127.0.0.1:{port}", "parley.conversation.v1.ConversationService"
        ) as chan:
            stub = pb_grpc.ConversationServiceStub(chan)
            yield Platform(stub, routes_file, router_port, tmp_path)
    finally:
        await server.stop(None)
        await wiring.close()


def error_code(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("parley-error-code", "")  # type: ignore[arg-type]


async def refused(call: AsyncIterator[pb.TurnEvent]) -> grpc.aio.AioRpcError:
    """The error a turn was refused with, before any event."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for event in call:
            pytest.fail(f"a refused turn streamed {event.WhichOneof('event')}")
    return raised.value


def send(
    platform: Platform, cid: str, content: str, key: str = "", model: str = ""
) -> AsyncIterator[pb.TurnEvent]:
    return platform.stub.SendMessage(  # type: ignore[no-any-return]
        pb.SendMessageRequest(
            conversation_id=cid, content=content, idempotency_key=key, model=model
        )
    )


async def stored(platform: Platform, cid: str) -> list[pb.Message]:
    listed = await platform.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    return list(listed.messages)


async def test_an_unknown_alias_is_refused_naming_the_valid_ones(platform: Platform) -> None:
    async with platform.router():
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await platform.stub.CreateConversation(
                pb.CreateConversationRequest(settings=pb.ConversationSettings(model="gpt-9"))
            )
        assert error_code(raised.value) == "unknown_model"
        cid = (await platform.stub.CreateConversation(pb.CreateConversationRequest())).id
        error = await refused(send(platform, cid, "How many days of leave?", model="gpt-9"))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_code(error) == "unknown_model"
        assert error.details() == "unknown model 'gpt-9'; valid models: default, fast"
        assert await stored(platform, cid) == []
        # The same message with a served alias is answered.
        events = [e async for e in send(platform, cid, "How many days of leave?", model="fast")]
        assert events[-1].done.message.status == pb.MESSAGE_STATUS_COMPLETE


async def test_an_alias_added_to_the_routes_works_at_once(platform: Platform) -> None:
    async with platform.router() as router:
        cid = (await platform.stub.CreateConversation(pb.CreateConversationRequest())).id
        await refused(send(platform, cid, "hi", model="new"))  # conversation now holds a list
        platform.routes_file.write_text(routes("default", "fast", "new"))
        for _ in range(100):
            listed = await router.ListModels(llm.ListModelsRequest())
            if "new" in [m.alias for m in listed.models]:
                break
            await asyncio.sleep(0.05)
        events = [e async for e in send(platform, cid, "hi", model="new")]
        assert events[-1].done.message.status == pb.MESSAGE_STATUS_COMPLETE


async def test_a_key_reused_for_another_message_is_refused_and_the_same_one_replays(
    platform: Platform,
) -> None:
    async with platform.router():
        cid = (await platform.stub.CreateConversation(pb.CreateConversationRequest())).id
        first = [e async for e in send(platform, cid, "How many days of leave?", key="k-1")]
        error = await refused(send(platform, cid, "And sick days?", key="k-1"))
        assert (error.code(), error_code(error)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "idempotency_key_reused",
        )
        error = await refused(send(platform, cid, "How many days of leave?", "k-1", "fast"))
        assert error_code(error) == "idempotency_key_reused"
        again = [e async for e in send(platform, cid, "How many days of leave?", key="k-1")]
        assert again[0].accepted.replayed
        assert again[-1].done.message == first[-1].done.message
        assert [m.content for m in await stored(platform, cid)] == [
            "How many days of leave?",
            first[-1].done.message.content,
        ]


async def test_a_send_while_the_router_is_down_stores_nothing_and_works_once_it_is_back(
    platform: Platform,
) -> None:
    async with platform.router():
        cid = (await platform.stub.CreateConversation(pb.CreateConversationRequest())).id
        [e async for e in send(platform, cid, "hello")]
    await asyncio.sleep(0.2)  # conversation's channel sees the router go

    began = time.monotonic()
    error = await refused(send(platform, cid, "are you there?", key="k-2"))
    assert (error.code(), error_code(error)) == (
        grpc.StatusCode.UNAVAILABLE,
        "service_unavailable",
    )
    assert time.monotonic() - began < 2.0
    assert len(await stored(platform, cid)) == 2  # the first turn only
    got = await platform.stub.GetConversation(pb.GetConversationRequest(conversation_id=cid))
    assert got.message_count == 2

    async with platform.router():
        # The router is serving: the retry of the refused message is answered at once.
        began = time.monotonic()
        events = [e async for e in send(platform, cid, "are you there?", key="k-2")]
        assert time.monotonic() - began < 1.5
        assert not events[0].accepted.replayed
        assert events[-1].done.message.status == pb.MESSAGE_STATUS_COMPLETE
    assert [m.content for m in await stored(platform, cid)][2:3] == ["are you there?"]
