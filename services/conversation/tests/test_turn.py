"""A turn against the store (SQLite) and fake peers: every way it ends is stored and counted once.

The fakes speak llm-router's and retrieval's real gRPC contracts (see conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_conversation.adapters.llm_router import LlmRouter, ModelStream
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore
from parley_conversation.conversations import (
    Citation,
    FinishReason,
    Message,
    Role,
    Status,
    TurnStart,
    Usage,
)
from parley_conversation.events import (
    Accepted,
    CitationsFound,
    Done,
    TextDelta,
    TurnEvent,
    TurnFailed,
    UsageReport,
)
from parley_conversation.main import MIGRATIONS, VERSION_TABLE
from parley_conversation.settings import Settings
from parley_conversation.turn import Begun, TurnRunner
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, NotFound, ParleyError, Unavailable

from .fakes import LEAVE_CHUNK, Peers, Script, answer_events, started, text

ANN = Principal("acme", "ann")
OUTCOMES = ("complete", "failed", "cancelled")


@dataclass
class Turns:
    runner: TurnRunner
    store: ConversationStore
    peers: Peers


@pytest.fixture
async def turns(tmp_path: Path, peers: Peers) -> AsyncIterator[Turns]:
    url = f"sqlite:///{tmp_path}/conversation.db"
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    engine = db.create_engine(url)
    store = ConversationStore(engine)
    router = LlmRouter(peers.address, 30.0)
    retrieval = Retrieval(peers.address, 5.0)
    settings = Settings(
        grpc_port=0, database_url=url, llm_router_addr=peers.address, retrieval_addr=peers.address
    )
    yield Turns(TurnRunner(store, router, retrieval, settings), store, peers)
    await router.close()
    await retrieval.close()
    await engine.dispose()


def counted() -> dict[str, float]:
    return {
        outcome: REGISTRY.get_sample_value("parley_turns_total", {"outcome": outcome}) or 0.0
        for outcome in OUTCOMES
    }


def counted_since(before: dict[str, float]) -> dict[str, float]:
    after = counted()
    return {outcome: after[outcome] - before[outcome] for outcome in OUTCOMES}


async def begin(
    turns: Turns, question: str = "How many days of leave?", **settings: object
) -> Begun:
    """A new turn begun as a send begins it: the model call starts while it is written."""
    conversation = await turns.store.create(
        ANN,
        "",
        str(settings.get("model", "")),
        str(settings.get("knowledge_base_id", "")),
        settings.get("temperature"),  # type: ignore[arg-type]
    )
    return await turns.runner.begin(ANN, conversation.id, question, None, "")


def begun(start: Begun | TurnStart) -> Begun:
    """A turn begun in the store alone builds its prompt when it runs (as a regeneration)."""
    return start if isinstance(start, Begun) else Begun(start)


async def play(turns: Turns, start: Begun | TurnStart, model: str = "") -> list[TurnEvent]:
    return [event async for event in turns.runner.run(begun(start), model)]


async def stored_answer(turns: Turns, start: Begun) -> Message:
    messages = await turns.store.messages(ANN, start.start.conversation.id, 10, 0)
    return messages[-1]


async def test_a_finished_answer_is_streamed_stored_and_counted(turns: Turns) -> None:
    before = counted()
    start = await begin(turns)
    events = await play(turns, start)

    assert [type(e) for e in events] == [
        Accepted,
        TextDelta,
        TextDelta,
        TextDelta,
        UsageReport,
        Done,
    ]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello there."
    done = events[-1]
    assert isinstance(done, Done)
    assert done.message == await stored_answer(turns, start)
    assert done.message.status == Status.COMPLETE
    assert done.message.content == "Hello there."
    assert done.message.model == "fake/scripted-1"
    assert done.message.finish_reason == FinishReason.STOP
    assert done.message.usage == Usage(12, 3, 0.001, False)
    assert events[-2] == UsageReport(done.message.usage)
    assert counted_since(before) == {"complete": 1, "failed": 0, "cancelled": 0}


async def test_a_failure_in_the_stream_keeps_the_partial_text(turns: Turns) -> None:
    failure = llm.ChatEvent(
        error=llm.ChatFailure(
            error=common_pb2.StreamError(
                code="provider_unavailable", message="the provider went away", retryable=True
            ),
            partial_usage=common_pb2.Usage(input_tokens=12, output_tokens=1),
        )
    )
    turns.peers.router.script = Script([started(text("Partial")), failure])
    before = counted()
    start = await begin(turns)
    events = await play(turns, start)

    end = events[-1]
    assert isinstance(end, TurnFailed)
    assert (end.failure.code, end.failure.message, end.failure.retryable) == (
        "provider_unavailable",
        "the provider went away",
        True,
    )
    stored = await stored_answer(turns, start)
    assert end.assistant_message_id == stored.id
    assert (stored.status, stored.content, stored.error_code) == (
        Status.FAILED,
        "Partial",
        "provider_unavailable",
    )
    assert stored.finish_reason == FinishReason.ERROR
    assert stored.model == "fake/scripted-1"
    assert stored.usage == Usage(12, 1, 0.0, estimated=True)
    assert counted_since(before) == {"complete": 0, "failed": 1, "cancelled": 0}


async def test_a_stream_that_stops_without_finishing_fails_the_turn(turns: Turns) -> None:
    turns.peers.router.script = Script([started(text("Cut"))])
    before = counted()
    start = await begin(turns)
    events = await play(turns, start)

    end = events[-1]
    assert isinstance(end, TurnFailed)
    assert (end.failure.code, end.failure.retryable) == ("stream_incomplete", True)
    stored = await stored_answer(turns, start)
    assert (stored.status, stored.content, stored.error_code) == (
        Status.FAILED,
        "Cut",
        "stream_incomplete",
    )
    assert counted_since(before) == {"complete": 0, "failed": 1, "cancelled": 0}


@pytest.mark.parametrize(
    ("refusal", "retryable"),
    [
        (Unavailable("no provider could answer", code="no_provider_available"), True),
        (InvalidArgument("unknown model alias", code="unknown_model"), False),
    ],
)
async def test_a_refused_model_call_fails_the_turn_with_the_shared_retry_rule(
    turns: Turns, refusal: ParleyError, retryable: bool
) -> None:
    turns.peers.router.script = Script([], then=refusal)
    before = counted()
    start = await begin(turns)
    events = await play(turns, start)

    end = events[-1]
    assert isinstance(end, TurnFailed)
    assert (end.failure.code, end.failure.message) == (refusal.code, refusal.message)
    assert end.failure.retryable is retryable
    stored = await stored_answer(turns, start)
    assert (stored.status, stored.error_code) == (Status.FAILED, refusal.code)
    assert counted_since(before) == {"complete": 0, "failed": 1, "cancelled": 0}


@pytest.mark.parametrize("how", ["task cancelled", "stream closed"])
async def test_a_caller_going_away_keeps_the_partial_answer_and_stops_the_model(
    turns: Turns, how: str
) -> None:
    turns.peers.router.script = Script(answer_events("one ", "two ")[:-1], hang=True)
    before = counted()
    start = await begin(turns)
    stream = turns.runner.run(start, "")
    two_deltas = asyncio.Event()

    async def read() -> None:
        deltas = 0
        async for event in stream:
            deltas += isinstance(event, TextDelta)
            if deltas == 2:
                two_deltas.set()
                if how == "stream closed":
                    return
        # "task cancelled": the turn waits on the model, which never goes on.

    reading = asyncio.create_task(read())
    await two_deltas.wait()
    if how == "task cancelled":
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
    else:
        await reading
        await stream.aclose()

    stored = await stored_answer(turns, start)
    assert (stored.status, stored.content) == (Status.CANCELLED, "one two ")
    assert stored.finish_reason == FinishReason.CANCELLED
    await asyncio.wait_for(turns.peers.router.cancelled.wait(), 5)
    assert counted_since(before) == {"complete": 0, "failed": 0, "cancelled": 1}


async def test_an_unexpected_error_is_stored_as_failed_and_raised(
    turns: Turns, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: ModelStream) -> AsyncIterator[object]:
        raise RuntimeError("the model's events could not be read")
        yield  # an async generator, as the real one

    monkeypatch.setattr(ModelStream, "__aiter__", broken)
    before = counted()
    start = await begin(turns)
    with pytest.raises(RuntimeError):
        await play(turns, start)

    stored = await stored_answer(turns, start)
    assert (stored.status, stored.error_code) == (Status.FAILED, "internal")
    assert counted_since(before) == {"complete": 0, "failed": 1, "cancelled": 0}


async def test_a_model_call_refused_before_it_is_taken_stores_nothing(turns: Turns) -> None:
    # What a router that went away a moment ago, or refuses the request, answers.
    refusal = Unavailable("the model service is unavailable", code="service_unavailable")
    turns.peers.router.script = Script([], refused=refusal)
    conversation = await turns.store.create(ANN, "", "", "", None)
    before = counted()
    with pytest.raises(Unavailable) as refused:
        await turns.runner.begin(ANN, conversation.id, "hi", "key-1", "")

    assert refused.value.code == "service_unavailable"
    assert len(turns.peers.router.requests) == 1
    assert await turns.store.messages(ANN, conversation.id, 10, 0) == []
    assert counted_since(before) == {"complete": 0, "failed": 0, "cancelled": 0}
    # The same key works once the router takes calls again.
    turns.peers.router.script = Script(answer_events("Hello"))
    again = await turns.runner.begin(ANN, conversation.id, "hi", "key-1", "")
    assert isinstance((await play(turns, again))[-1], Done)


async def test_a_turn_whose_write_fails_stops_its_model_call_and_stores_nothing(
    turns: Turns, monkeypatch: pytest.MonkeyPatch
) -> None:
    turns.peers.router.script = Script([], hang=True)
    conversation = await turns.store.create(ANN, "", "", "", None)
    requested = asyncio.Event()

    async def deleted_meanwhile(*args: object) -> TurnStart:
        # The model call started beside the write: it is under way when the write fails.
        for _ in range(500):
            if turns.peers.router.requests:
                requested.set()
                break
            await asyncio.sleep(0.01)
        raise NotFound("conversation not found", code="conversation_not_found")

    monkeypatch.setattr(turns.store, "begin_turn", deleted_meanwhile)
    with pytest.raises(NotFound):
        await turns.runner.begin(ANN, conversation.id, "hi", None, "")

    assert requested.is_set()
    await asyncio.wait_for(turns.peers.router.cancelled.wait(), 5)
    assert await turns.store.messages(ANN, conversation.id, 10, 0) == []


async def test_retrieved_passages_reach_the_model_in_the_documents_block(turns: Turns) -> None:
    turns.peers.retrieval.chunks = [LEAVE_CHUNK]
    start = await begin(turns, knowledge_base_id="kb1")
    events = await play(turns, start)

    citation = Citation(
        marker="1",
        document_id="doc1",
        chunk_id="doc1:v1:0",
        title="Leave policy",
        source_uri="leave.md",
        snippet="Employees have 25 days of leave a year.",
        score=0.5,
    )
    assert events[1] == CitationsFound((citation,))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.message.citations == (citation,)
    assert turns.peers.retrieval.requests[0].knowledge_base_id == "kb1"
    request = turns.peers.router.requests[0]
    documents, question = request.messages[-2], request.messages[-1]
    assert documents.role == llm.ROLE_USER
    assert documents.content[0].text.endswith(
        "\n\n<documents>\n"
        '<document marker="1" title="Leave policy">\n'
        "Employees have 25 days of leave a year.\n"
        "</document>\n"
        "</documents>"
    )
    assert (question.role, question.content[0].text) == (llm.ROLE_USER, "How many days of leave?")


async def test_the_model_call_carries_history_and_the_conversations_settings(
    turns: Turns,
) -> None:
    first = await begin(turns, "hi", model="fast", temperature=0.3)
    await play(turns, first)
    second = await turns.store.begin_turn(ANN, first.start.conversation.id, "and then?", None)
    await play(turns, second)
    regenerated = await turns.store.begin_regeneration(ANN, first.start.conversation.id)
    await play(turns, regenerated, "slow")

    plain, again, override = turns.peers.router.requests
    assert plain.model == "fast"
    assert plain.temperature == pytest.approx(0.3)
    assert [(m.role, m.content[0].text) for m in again.messages[1:]] == [
        (llm.ROLE_USER, "hi"),
        (llm.ROLE_ASSISTANT, "Hello there."),
        (llm.ROLE_USER, "and then?"),
    ]
    assert again.messages[0].role == llm.ROLE_SYSTEM
    assert override.model == "slow"


async def test_a_replayed_turn_streams_the_stored_answer_without_a_model_call(
    turns: Turns,
) -> None:
    conversation = await turns.store.create(ANN, "", "", "", None)
    first = await turns.store.begin_turn(ANN, conversation.id, "hi", "key-1")
    answered = await play(turns, first)
    again = await turns.store.begin_turn(ANN, conversation.id, "hi", "key-1")
    replayed = await play(turns, again)

    assert replayed[0] == Accepted(first.user.id, answered[0].assistant_message_id, True)  # type: ignore[union-attr]
    assert replayed[1:] == [answered[-1]]
    assert len(turns.peers.router.requests) == 1
    assert [m.role for m in await turns.store.messages(ANN, conversation.id, 10, 0)] == [
        Role.USER,
        Role.ASSISTANT,
    ]
