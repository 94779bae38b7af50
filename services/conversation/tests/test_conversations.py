"""Conversations and turns over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from parley.conversation.v1 import conversation_pb2 as pb
from parley.conversation.v1 import conversation_pb2_grpc as pb_grpc
from parley_conversation.main import MIGRATIONS, VERSION_TABLE
from parley_conversation.main import build as build_conversation
from parley_conversation.settings import Settings
from parley_llm_router.main import build as build_router
from parley_llm_router.settings import Settings as RouterSettings
from parley_runtime import db
from parley_runtime.grpc_client import channel
from parley_runtime.testing import acting_as, grpc_server


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    database_url: str


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    """Calls carry this principal (a sync fixture: its context reaches the test)."""
    with acting_as("acme", "ann"):
        yield


async def start(
    database_url: str, tmp_path: Path, router_env: dict[str, str] | None = None, **settings: object
) -> AsyncIterator[Service]:
    router = await build_router(
        RouterSettings(
            grpc_port=0,
            local_token_delay_ms=1,
            stream_coalesce_ms=0,  # every token its own delta: the relay is what is tested
            database_url=f"sqlite:///{tmp_path}/router.db",
            redis_url=None,
            **{k: v for k, v in (router_env or {}).items()},  # type: ignore[arg-type]
        ),
        env={},
    )
    async with grpc_server(router.registrations) as router_address:
        wiring = await build_conversation(
            Settings(
                grpc_port=0,
                database_url=database_url,
                llm_router_addr=router_address,
                retrieval_addr=str(settings.pop("retrieval_addr", "127.0.0.1:1")),
                **settings,  # type: ignore[arg-type]
            )
        )
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.conversation.v1.ConversationService") as chan,
        ):
            yield Service(pb_grpc.ConversationServiceStub(chan), database_url)
        await wiring.close()
    await router.close()


@pytest.fixture
async def service(database_url: str, tmp_path: Path) -> AsyncIterator[Service]:
    async for running in start(database_url, tmp_path):
        yield running


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
    assert [f.comment for f in exported[0].feedback] == ["better"]
    deleted = await service.stub.DeleteUserData(pb.DeleteUserDataRequest())
    assert (deleted.conversations_deleted, deleted.messages_deleted) == (1, 2)
    assert (
        list((await service.stub.ListConversations(pb.ListConversationsRequest())).conversations)
        == []
    )


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
