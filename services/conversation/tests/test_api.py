"""ConversationService over real gRPC, on SQLite and PostgreSQL, with fake peers (fakes.py)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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

from .fakes import LEAVE_CHUNK, Peers, Script


@dataclass
class Service:
    stub: pb_grpc.ConversationServiceStub
    peers: Peers


@asynccontextmanager
async def serving(database_url: str, peers: Peers, **settings: Any) -> AsyncIterator[Service]:
    """conversation on ``database_url`` with the fake peers (llm-router elsewhere when
    ``settings`` names another ``llm_router_addr``)."""
    settings.setdefault("llm_router_addr", peers.address)
    wiring = await build(
        Settings(grpc_port=0, database_url=database_url, retrieval_addr=peers.address, **settings)
    )
    async with (
        grpc_server(wiring.registrations) as address,
        channel(address, "parley.conversation.v1.ConversationService") as chan,
    ):
        yield Service(pb_grpc.ConversationServiceStub(chan), peers)
    await wiring.close()


@pytest.fixture
async def service(database_url: str, peers: Peers) -> AsyncIterator[Service]:
    async with serving(database_url, peers) as service:
        yield service


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


async def test_a_caller_that_asks_gets_the_usage_in_the_done_event(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    call = service.stub.SendMessage(
        pb.SendMessageRequest(
            conversation_id=cid, content="How long?", idempotency_key="k-1", usage_with_done=True
        )
    )
    events = [event async for event in call]
    assert [e.WhichOneof("event") for e in events] == [
        "accepted",
        "delta",
        "delta",
        "delta",
        "done",
    ]
    done = events[-1].done
    assert done.usage == done.message.usage
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 3)

    # A replay used nothing: its done carries no usage, as it would have no usage event.
    again = service.stub.SendMessage(
        pb.SendMessageRequest(
            conversation_id=cid, content="How long?", idempotency_key="k-1", usage_with_done=True
        )
    )
    replayed = [event async for event in again]
    assert replayed[0].accepted.replayed
    assert [e.WhichOneof("event") for e in replayed] == ["accepted", "done"]
    assert not replayed[-1].done.HasField("usage")
    assert replayed[-1].done.message == done.message

    regenerated = service.stub.RegenerateMessage(
        pb.RegenerateMessageRequest(conversation_id=cid, usage_with_done=True)
    )
    answered = [event async for event in regenerated]
    assert answered[-1].done.usage == answered[-1].done.message.usage
    assert "usage" not in [e.WhichOneof("event") for e in answered]


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
    service.peers.retrieval.chunks = [LEAVE_CHUNK]
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


async def test_a_citation_of_a_pdf_names_the_page_its_passage_starts_on(
    service: Service,
) -> None:
    on_page = ret.ScoredChunk()
    on_page.CopyFrom(LEAVE_CHUNK)
    on_page.metadata["page"] = "12"  # as ingest sets it on a PDF's chunks
    on_page.metadata["page_end"] = "13"
    service.peers.retrieval.chunks = [on_page]
    created = await service.stub.CreateConversation(
        pb.CreateConversationRequest(settings=pb.ConversationSettings(knowledge_base_id="kb1"))
    )
    events = await send(service, created.id, "How many days of leave?")
    assert [c.page for c in events[1].citations.citations] == [12]
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=created.id))
    assert [c.page for c in listed.messages[1].citations] == [12]


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


def error_code(error: grpc.aio.AioRpcError) -> str:
    return dict(error.trailing_metadata() or ()).get("parley-error-code", "")  # type: ignore[arg-type]


async def refused(call: AsyncIterator[pb.TurnEvent]) -> grpc.aio.AioRpcError:
    """The error a turn was refused with, before any event."""
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for event in call:
            pytest.fail(f"a refused turn streamed {event.WhichOneof('event')}")
    return raised.value


async def stored(service: Service, cid: str) -> list[pb.Message]:
    listed = await service.stub.ListMessages(pb.ListMessagesRequest(conversation_id=cid))
    return list(listed.messages)


async def test_an_unknown_model_alias_is_refused_before_anything_is_stored(
    service: Service,
) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    error = await refused(
        service.stub.SendMessage(
            pb.SendMessageRequest(conversation_id=cid, content="hi", model="gpt-9")
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(error) == "unknown_model"
    assert "'gpt-9'" in (error.details() or "")
    assert await stored(service, cid) == []
    got = await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=cid))
    assert (got.message_count, got.title) == (0, "")
    assert service.peers.router.requests == []


async def test_a_conversation_names_only_a_model_alias_the_router_serves(
    service: Service,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.CreateConversation(
            pb.CreateConversationRequest(settings=pb.ConversationSettings(model="gpt-9"))
        )
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_code(raised.value) == "unknown_model"
    created = await service.stub.CreateConversation(
        pb.CreateConversationRequest(settings=pb.ConversationSettings(model="fast"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await service.stub.UpdateConversation(
            pb.UpdateConversationRequest(
                conversation_id=created.id,
                settings=pb.ConversationSettings(model="gpt-9"),
                update_mask=FieldMask(paths=["settings.model"]),
            )
        )
    assert error_code(raised.value) == "unknown_model"
    got = await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=created.id))
    assert got.settings.model == "fast"


async def test_a_conversations_alias_removed_from_the_router_stores_no_turn(
    database_url: str, peers: Peers
) -> None:
    async with serving(database_url, peers, model_aliases_ttl_seconds=0.1) as service:
        created = await service.stub.CreateConversation(
            pb.CreateConversationRequest(settings=pb.ConversationSettings(model="fast"))
        )
        peers.router.aliases.remove("fast")
        await asyncio.sleep(0.15)  # the list the alias was checked against is old
        error = await refused(
            service.stub.SendMessage(
                pb.SendMessageRequest(conversation_id=created.id, content="hi")
            )
        )
        assert (error.code(), error_code(error)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "unknown_model",
        )
        assert await stored(service, created.id) == []


async def test_a_regeneration_with_an_unknown_alias_keeps_the_last_answer(
    service: Service,
) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    answer = (await send(service, cid, "hi"))[-1].done.message
    error = await refused(
        service.stub.RegenerateMessage(
            pb.RegenerateMessageRequest(conversation_id=cid, model="gpt-9")
        )
    )
    assert error_code(error) == "unknown_model"
    assert [m.id for m in await stored(service, cid)][-1] == answer.id


async def test_a_key_reused_for_another_message_is_refused(service: Service) -> None:
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    first = await send(service, cid, "How many days of leave?", key="k-1")
    for other in (
        pb.SendMessageRequest(conversation_id=cid, content="And sick days?", idempotency_key="k-1"),
        pb.SendMessageRequest(
            conversation_id=cid,
            content="How many days of leave?",
            idempotency_key="k-1",
            model="fast",
        ),
    ):
        error = await refused(service.stub.SendMessage(other))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_code(error) == "idempotency_key_reused"
        assert "used for a different message" in (error.details() or "")
    again = await send(service, cid, "How many days of leave?", key="k-1")
    assert again[0].accepted.replayed
    assert again[-1].done.message == first[-1].done.message
    assert len(await stored(service, cid)) == 2
    assert len(service.peers.router.requests) == 1


@pytest.fixture
async def without_router(database_url: str, peers: Peers) -> AsyncIterator[Service]:
    """conversation whose llm-router is not there (nothing listens on its port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    async with serving(
        database_url, peers, llm_router_addr=dead, model_check_timeout_seconds=0.3
    ) as service:
        yield service


async def test_a_send_while_the_router_is_down_stores_nothing(without_router: Service) -> None:
    service = without_router
    cid = (await service.stub.CreateConversation(pb.CreateConversationRequest())).id
    for _ in range(2):
        error = await refused(
            service.stub.SendMessage(
                pb.SendMessageRequest(conversation_id=cid, content="hi", idempotency_key="k")
            )
        )
        assert (error.code(), error_code(error)) == (
            grpc.StatusCode.UNAVAILABLE,
            "service_unavailable",
        )
    assert await stored(service, cid) == []
    got = await service.stub.GetConversation(pb.GetConversationRequest(conversation_id=cid))
    assert got.message_count == 0
    error = await refused(
        service.stub.RegenerateMessage(pb.RegenerateMessageRequest(conversation_id=cid))
    )
    assert error.code() == grpc.StatusCode.UNAVAILABLE
