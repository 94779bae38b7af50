"""Stopping an answer (CancelAnswer) and reading one message (GetMessage), over real gRPC on
SQLite and PostgreSQL: through the replica that writes the answer, through another replica
sharing the database, before its first token, and after its writer died."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import grpc
import pytest

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.main import build
from parley_conversation.settings import Settings
from parley_runtime import db
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server

from .fakes import Peers, Script, answer_events, text


@asynccontextmanager
async def replica(database_url: str, peers: Peers, name: str) -> AsyncIterator[Any]:
    """One conversation replica named ``name`` on ``database_url``; yields its client."""
    wiring = await build(
        Settings(
            grpc_port=0,
            database_url=database_url,
            llm_router_addr=peers.address,
            retrieval_addr=peers.address,
            replica_id=name,
            turn_flush_seconds=0.1,
        )
    )
    try:
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.conversation.v1.ConversationService") as chan,
        ):
            yield pb_grpc.ConversationServiceStub(chan)
    finally:
        await wiring.close()


@pytest.fixture
async def two(database_url: str, peers: Peers) -> AsyncIterator[tuple[Any, Any]]:
    """Two replicas sharing one database and the same fake peers."""
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(replica(database_url, peers, "replica-a"))
        b = await stack.enter_async_context(replica(database_url, peers, "replica-b"))
        yield a, b


async def _started(stub: Any, cid: str, deltas: int) -> tuple[Any, str, list[pb.TurnEvent]]:
    """A turn under way on ``stub``, read until ``deltas`` deltas arrived (0: accepted)."""
    call = stub.SendMessage(pb.SendMessageRequest(conversation_id=cid, content="Tell me more."))
    seen: list[pb.TurnEvent] = []
    async for event in call:
        seen.append(event)
        if sum(e.HasField("delta") for e in seen) >= deltas:
            break
    return call, seen[0].accepted.assistant_message_id, seen


async def _rest(call: Any) -> list[pb.TurnEvent]:
    return [event async for event in call]


@pytest.mark.parametrize("through", ["the replica writing it", "another replica"])
async def test_a_streaming_answer_stops_and_is_stored_cancelled_with_its_text(
    two: tuple[Any, Any], peers: Peers, through: str
) -> None:
    writer, other = two
    peers.router.script = Script(answer_events("Employees ", "have ", "25 ")[:-1], hang=True)
    cid = (await writer.CreateConversation(pb.CreateConversationRequest())).id
    call, answer_id, _ = await _started(writer, cid, deltas=3)
    # The saved text reaches the store within a flush (0.1 s here).
    await asyncio.sleep(0.3)
    canceller = writer if through == "the replica writing it" else other
    loop = asyncio.get_running_loop()
    asked_at = loop.time()
    stopped = await canceller.CancelAnswer(
        pb.CancelAnswerRequest(conversation_id=cid, message_id=answer_id)
    )
    took = loop.time() - asked_at
    assert (stopped.status, stopped.finish_reason, stopped.error_code) == (
        pb.MESSAGE_STATUS_CANCELLED,
        common_pb2.FINISH_REASON_CANCELLED,
        "cancelled",
    )
    assert stopped.content == "Employees have 25 "
    # At once on its writer; within a save or check of the row on another replica.
    assert took < (0.5 if canceller is writer else 2.0), took
    # The provider's stream is closed, and the stream of the turn ends with its terminal event.
    await asyncio.wait_for(peers.router.cancelled.wait(), 2)
    rest = await asyncio.wait_for(_rest(call), 2)
    assert [e.WhichOneof("event") for e in rest] == ["error"]
    assert (rest[0].error.error.code, rest[0].error.error.retryable) == ("cancelled", False)
    assert rest[0].error.assistant_message_id == answer_id
    got = await other.GetMessage(pb.GetMessageRequest(conversation_id=cid, message_id=answer_id))
    assert got == stopped


async def test_an_answer_waiting_for_its_first_token_stops_through_another_replica(
    two: tuple[Any, Any], peers: Peers
) -> None:
    writer, other = two
    peers.router.script = Script([], hang=True)
    cid = (await writer.CreateConversation(pb.CreateConversationRequest())).id
    call, answer_id, _ = await _started(writer, cid, deltas=0)
    stopped = await other.CancelAnswer(
        pb.CancelAnswerRequest(conversation_id=cid, message_id=answer_id)
    )
    assert (stopped.status, stopped.content) == (pb.MESSAGE_STATUS_CANCELLED, "")
    await asyncio.wait_for(peers.router.cancelled.wait(), 2)
    rest = await asyncio.wait_for(_rest(call), 2)
    assert rest[-1].error.error.code == "cancelled"


async def test_an_answer_that_ended_is_returned_unchanged(
    two: tuple[Any, Any], peers: Peers
) -> None:
    writer, _ = two
    cid = (await writer.CreateConversation(pb.CreateConversationRequest())).id
    events = await _rest(
        writer.SendMessage(pb.SendMessageRequest(conversation_id=cid, content="hi"))
    )
    done = events[-1].done.message
    again = await writer.CancelAnswer(
        pb.CancelAnswerRequest(conversation_id=cid, message_id=done.id)
    )
    assert again == done
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await writer.CancelAnswer(
            pb.CancelAnswerRequest(
                conversation_id=cid, message_id=events[0].accepted.user_message_id
            )
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(raised.value.trailing_metadata())["parley-error-code"] == "not_an_answer"


async def test_messages_of_another_user_are_not_found(two: tuple[Any, Any], peers: Peers) -> None:
    writer, _ = two
    cid = (await writer.CreateConversation(pb.CreateConversationRequest())).id
    events = await _rest(
        writer.SendMessage(pb.SendMessageRequest(conversation_id=cid, content="hi"))
    )
    answer_id = events[-1].done.message.id
    mine = await writer.GetMessage(pb.GetMessageRequest(conversation_id=cid, message_id=answer_id))
    assert mine.content == "Hello there."
    for tenant, user in [("acme", "bob"), ("globex", "ann")]:
        with acting_as(tenant, user):
            for rpc in (writer.GetMessage, writer.CancelAnswer):
                request_type = (
                    pb.GetMessageRequest if rpc is writer.GetMessage else pb.CancelAnswerRequest
                )
                with pytest.raises(grpc.aio.AioRpcError) as raised:
                    await rpc(request_type(conversation_id=cid, message_id=answer_id))
                assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await writer.GetMessage(pb.GetMessageRequest(conversation_id=cid, message_id="msg_nope"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_an_answer_whose_writer_died_after_a_cancel_request_is_closed_as_cancelled(
    database_url: str, peers: Peers
) -> None:
    """The cancel is recorded even when nobody is left to act on it; the replica that closes
    the orphaned answer honours it."""
    peers.router.script = Script([text("Employees ")], hang=True)
    async with replica(database_url, peers, "replica-a") as writer:
        cid = (await writer.CreateConversation(pb.CreateConversationRequest())).id
        _, answer_id, _ = await _started(writer, cid, deltas=1)
        store = ConversationStore(db.create_engine(database_url), "replica-b")
        try:
            with acting_as("acme", "ann") as ann:
                asked = await store.request_cancel(ann, cid, answer_id)
            assert asked.status.value == "in_progress"
            # replica-a dies here: its answers are closed by the next process of its name.
            store.owner = "replica-a"
            assert await store.close_interrupted(include_own=True) == 1
            with acting_as("acme", "ann") as ann:
                closed = await store.message(ann, cid, answer_id)
            assert (closed.status.value, closed.error_code) == ("cancelled", "cancelled")
        finally:
            await store.engine.dispose()
