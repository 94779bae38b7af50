"""conversation with llm-router (its offline local provider): turns over real gRPC, on SQLite
and PostgreSQL. retrieval is a fake that speaks its contract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime.grpc_client import channel
from parley_runtime.grpc_server import Registration
from parley_testkit import acting_as, grpc_server


class FakeRetrieval(ret_grpc.RetrievalServicer):
    """A retrieval that finds ``chunks`` for every question."""

    def __init__(self) -> None:
        self.chunks: list[ret.ScoredChunk] = []

    async def Search(
        self, request: ret.SearchRequest, context: grpc.aio.ServicerContext
    ) -> ret.SearchResponse:
        return ret.SearchResponse(chunks=self.chunks)


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    retrieval: FakeRetrieval


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """Calls carry this principal (a sync fixture: its context reaches the test)."""
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    router = await build_router(
        RouterSettings(
            grpc_port=0,
            local_token_delay_ms=1,
            stream_coalesce_ms=0,  # every token its own delta: the relay is what is tested
            database_url=f"sqlite:///{tmp_path}/router.db",
            redis_url=None,
        ),
        env={},
    )
    retrieval = FakeRetrieval()
    peers = [
        *router.registrations,
        Registration(
            "parley.retrieval.v1.Retrieval",
            lambda s: ret_grpc.add_RetrievalServicer_to_server(retrieval, s),
        ),
    ]
    async with grpc_server(peers) as peers_address:
        wiring = await build_conversation(
            Settings(
                grpc_port=0,
                database_url=database_url,
                llm_router_addr=peers_address,
                retrieval_addr=peers_address,
            )
        )
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.conversation.v1.ConversationService") as chan,
        ):
            yield Service(pb_grpc.ConversationServiceStub(chan), retrieval)
        await wiring.close()
    await router.close()


async def send(service: Service, cid: str, text: str, key: str = "") -> list[pb.TurnEvent]:
    call = service.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=cid, content=text, idempotency_key=key)
    )
    return [event async for event in call]


async def test_a_turn_streams_and_stores_both_messages(service: Service) -> None:
    created = await service.stub.CreateConversation(pb.CreateConversationRequest())
    events = await send(service, created.id, "What is in my documents?")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted"
    assert kinds[-1] == "done"
    assert kinds.count("delta") > 5
    assert "usage" in kinds
    done = events[-1].done.message
    assert done.status == pb.MESSAGE_STATUS_COMPLETE
    assert done.model == "local/extractive-v1"
    assert done.content == "".join(e.delta.text for e in events if e.HasField("delta"))

    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=created.id))
    assert [m.role for m in listed.messages] == [pb.MESSAGE_ROLE_USER, pb.MESSAGE_ROLE_ASSISTANT]
    assert listed.messages[0].content == "What is in my documents?"
    assert listed.messages[1].content == done.content
    got = await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=created.id))
    assert got.message_count == 2
    assert got.title == "What is in my documents?"


async def test_the_same_idempotency_key_stores_the_turn_once(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    first = await send(service, cid, "hello", key="k-1")
    again = await send(service, cid, "hello", key="k-1")
    assert again[0].accepted.replayed
    assert again[0].accepted.user_message_id == first[0].accepted.user_message_id
    assert again[-1].done.message.content == first[-1].done.message.content
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    assert len(listed.messages) == 2


async def test_concurrent_sends_with_one_key_store_one_turn(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    results = await asyncio.gather(*(send(service, cid, "hi", key="same") for _ in range(4)))
    user_ids = {r[0].accepted.user_message_id for r in results}
    assert len(user_ids) == 1
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    assert [m.role for m in listed.messages].count(pb.MESSAGE_ROLE_USER) == 1


async def test_cancelling_mid_stream_keeps_the_partial_answer(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    call = service.stub.SendMessage(pb.SendMessageRequest(conversation_id=cid, content="hello"))
    seen = 0
    async for event in call:
        if event.HasField("delta"):
            seen += 1
            if seen == 3:
                call.cancel()
                break
    for _ in range(100):
        listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
        answer = listed.messages[1]
        if answer.status != pb.MESSAGE_STATUS_IN_PROGRESS:
            break
        await asyncio.sleep(0.02)
    assert answer.status == pb.MESSAGE_STATUS_CANCELLED
    assert answer.content
    assert listed.messages[0].content == "hello"


async def test_regenerate_supersedes_the_last_answer(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    await send(service, cid, "hello")
    call = service.stub.RegenerateMessage(pb.RegenerateMessageRequest(conversation_id=cid))
    events = [e async for e in call]
    assert events[-1].HasField("done")
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    assert len(listed.messages) == 2
    assert listed.messages[1].id == events[-1].done.message.id


async def test_retrieved_passages_reach_the_local_model_and_are_cited(service: Service) -> None:
    service.retrieval.chunks = [
        ret.ScoredChunk(
            chunk_id="leave:v1:0",
            document_id="leave",
            text="Employees have 25 days of leave a year. Requests go to the manager.",
            score=0.5,
            title="Leave policy",
        ),
        ret.ScoredChunk(
            chunk_id="travel:v1:0",
            document_id="travel",
            text="Trains are preferred over planes for trips under 500 km.",
            score=0.4,
            title="Travel policy",
        ),
    ]
    created = await service.stub.CreateConversation(
        pb.CreateConversationRequest(settings=pb.ConversationSettings(knowledge_base_id="kb1"))
    )
    events = await send(service, created.id, "How many days of leave do employees have?")
    assert [c.marker for c in events[1].citations.citations] == ["1", "2"]
    done = events[-1].done.message
    assert done.status == pb.MESSAGE_STATUS_COMPLETE
    assert "25 days of leave" in done.content
    assert "[1]" in done.content
    assert [c.title for c in done.citations] == ["Leave policy", "Travel policy"]


async def test_without_documents_the_local_model_says_it_has_nothing_to_quote(
    service: Service,
) -> None:
    created = await service.stub.CreateConversation(pb.CreateConversationRequest())
    events = await send(service, created.id, "How many days of leave do employees have?")
    done = events[-1].done.message
    assert not any(e.HasField("citations") for e in events)
    assert "[1]" not in done.content
    assert "found nothing in your documents" in done.content
