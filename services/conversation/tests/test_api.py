"""ConversationService over real gRPC, on SQLite and PostgreSQL, with fake peers (fakes.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from parley.common.v1 import common_pb2
from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_conversation.main import MIGRATIONS, VERSION_TABLE, build
from parley_conversation.settings import Settings
from parley_runtime import db
from parley_runtime.errors import Unavailable
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server

from .fakes import Peers, Script


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    peers: Peers


@pytest.fixture
async def service(database_url: str, peers: Peers) -> AsyncIterator[Service]:
    wiring = await build(
        Settings(
            grpc_port=0,
            database_url=database_url,
            llm_router_addr=peers.address,
            retrieval_addr=peers.address,
        )
    )
    async with (
        grpc_server(wiring.registrations) as address,
        channel(address, "parley.conversation.v1.ConversationService") as chan,
    ):
        yield Service(pb_grpc.ConversationServiceStub(chan), peers)
    await wiring.close()


async def test_migrations_go_up_and_down(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.downgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)


async def send(service: Service, cid: str, text: str, key: str = "") -> list[pb.TurnEvent]:
    call = service.stub.SendMessage(
        pb.SendMessageRequest(conversation_id=cid, content=text, idempotency_key=key)
    )
    return [event async for event in call]


async def test_a_turn_streams_and_stores_both_messages(service: Service) -> None:
    created = await service.stub.CreateConversation(pb.CreateConversationRequest())
    events = await send(service, created.id, "What is in my documents?")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds == ["accepted", "delta", "delta", "delta", "usage", "done"]
    done = events[-1].done.message
    assert (done.status, done.finish_reason) == (
        pb.MESSAGE_STATUS_COMPLETE,
        common_pb2.FINISH_REASON_STOP,
    )
    assert done.model == "fake/scripted-1"
    assert done.content == "".join(e.delta.text for e in events if e.HasField("delta"))
    assert done.usage == events[-2].usage.usage
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 3)
    assert events[0].accepted.assistant_message_id == done.id

    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=created.id))
    user, answer = listed.messages
    assert (user.role, user.content) == (pb.MESSAGE_ROLE_USER, "What is in my documents?")
    assert user.finish_reason == common_pb2.FINISH_REASON_UNSPECIFIED
    assert not user.HasField("usage")
    assert answer == done
    got = await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=created.id))
    assert got.message_count == 2
    assert got.title == "What is in my documents?"


async def test_a_failed_turn_ends_with_an_error_event_and_a_stored_failure(
    service: Service,
) -> None:
    service.peers.router.script = Script([], then=Unavailable("busy", code="no_provider"))
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    events = await send(service, cid, "hi")
    assert [e.WhichOneof("event") for e in events] == ["accepted", "error"]
    error = events[-1].error
    assert (error.error.code, error.error.retryable) == ("no_provider", True)
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    answer = listed.messages[1]
    assert answer.id == error.assistant_message_id
    assert (answer.status, answer.error_code, answer.finish_reason) == (
        pb.MESSAGE_STATUS_FAILED,
        "no_provider",
        common_pb2.FINISH_REASON_ERROR,
    )


async def test_citations_are_streamed_and_stored_with_the_answer(service: Service) -> None:
    service.peers.retrieval.chunks = [
        ret.ScoredChunk(
            chunk_id="doc1:v1:0",
            document_id="doc1",
            text="Employees have 25 days of leave a year.",
            score=0.5,
            title="Leave policy",
            source_uri="leave.md",
        )
    ]
    created = await service.stub.CreateConversation(
        pb.CreateConversationRequest(settings=pb.ConversationSettings(knowledge_base_id="kb1"))
    )
    events = await send(service, created.id, "How many days of leave?")
    assert [e.WhichOneof("event") for e in events][:2] == ["accepted", "citations"]
    expected = common_pb2.Citation(
        marker="1",
        document_id="doc1",
        chunk_id="doc1:v1:0",
        title="Leave policy",
        source_uri="leave.md",
        snippet="Employees have 25 days of leave a year.",
        score=0.5,
    )
    assert list(events[1].citations.citations) == [expected]
    assert list(events[-1].done.message.citations) == [expected]
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=created.id))
    assert list(listed.messages[1].citations) == [expected]


async def test_pages_of_conversations_and_messages(service: Service) -> None:
    ids = [
        (await service.stub.CreateConversation(pb.CreateConversationRequest(title=f"c{i}"))).id
        for i in range(5)
    ]
    seen: list[str] = []
    token = ""
    while True:
        page = await service.stub.ListConversations(
            pb.ListConversationsRequest(page_size=2, page_token=token)
        )
        seen += [c.id for c in page.conversations]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    for _ in range(3):
        await send(service, ids[0], "hi")
    first = await service.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=ids[0], page_size=4)
    )
    rest = await service.stub.ListMessages(
        pb.ListMessagesRequest(conversation_id=ids[0], page_token=first.next_page_token)
    )
    assert len(first.messages) == 4
    assert len(rest.messages) == 2
    assert not rest.next_page_token


async def test_update_with_a_mask(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest(title="a"))).id
    updated = await service.stub.UpdateConversation(
        pb.UpdateConversationRequest(
            conversation_id=cid,
            title="b",
            settings=pb.ConversationSettings(knowledge_base_id="kb1", model="ignored"),
            update_mask=FieldMask(paths=["title", "settings.knowledge_base_id"]),
        )
    )
    assert updated.title == "b"
    assert updated.settings.knowledge_base_id == "kb1"
    assert updated.settings.model == ""


async def test_another_user_sees_nothing(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    for tenant, user in [("acme", "bob"), ("globex", "ann")]:
        with acting_as(tenant, user):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=cid))
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
            with pytest.raises(grpc.aio.AioRpcError):
                await send(service, cid, "hi")
            listed = await service.stub.ListConversations(pb.ListConversationsRequest())
            assert list(listed.conversations) == []


async def test_feedback_export_and_deleting_a_users_data(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    events = await send(service, cid, "hi")
    answer = events[-1].done.message.id
    await service.stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(conversation_id=cid, message_id=answer, rating=pb.RATING_DOWN)
    )
    again = await service.stub.SubmitFeedback(
        pb.SubmitFeedbackRequest(
            conversation_id=cid, message_id=answer, rating=pb.RATING_UP, comment="better"
        )
    )
    assert again.rating == pb.RATING_UP
    exported = [e async for e in service.stub.ExportUserData(pb.ExportUserDataRequest())]
    assert len(exported) == 1
    assert len(exported[0].messages) == 2
    assert [(f.rating, f.comment) for f in exported[0].feedback] == [(pb.RATING_UP, "better")]
    deleted = await service.stub.DeleteUserData(pb.DeleteUserDataRequest())
    assert (deleted.conversations_deleted, deleted.messages_deleted) == (1, 2)
    assert (
        list((await service.stub.ListConversations(pb.ListConversationsRequest())).conversations)
        == []
    )


async def test_feedback_needs_a_rating(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    answer = (await send(service, cid, "hi"))[-1].done.message.id
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.SubmitFeedback(
            pb.SubmitFeedbackRequest(conversation_id=cid, message_id=answer)
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (pb.SendMessageRequest(content="  "), "content: must not be empty"),
        (pb.SendMessageRequest(content="x" * 32_001), "at most 32000 characters"),
    ],
)
async def test_bad_messages_are_invalid_argument(
    service: Service, request_: pb.SendMessageRequest, fragment: str
) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    request_.conversation_id = cid
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in service.stub.SendMessage(request_):
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")


async def test_unknown_conversation_is_not_found(service: Service) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in service.stub.SendMessage(
            pb.SendMessageRequest(conversation_id="conv_nope", content="hi")
        ):
            pass
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
