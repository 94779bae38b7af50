"""Answers whose writer dies: their text is saved as it streams, and they are closed as
interrupted (failed, with that text) once their lease runs out, or at once by the next
process of the same replica; a resend with the same key then replays that outcome."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from parley_conversation.adapters.llm_router import LlmRouter
from parley_conversation.adapters.retrieval import Retrieval
from parley_conversation.adapters.store import ConversationStore, Then
from parley_conversation.conversations import (
    INTERRUPTED,
    AnswerState,
    FinishReason,
    Message,
    Outcome,
    Status,
    TurnStart,
)
from parley_conversation.events import TextDelta, TurnFailed
from parley_conversation.main import MIGRATIONS, VERSION_TABLE
from parley_conversation.settings import Settings
from parley_conversation.turn import Begun, TurnRunner
from parley_runtime import db
from parley_runtime.context import Principal

from .fakes import Peers, Script, started, text

ANN = Principal("acme", "ann")


@pytest.fixture
async def database(database_url: str) -> str:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    return database_url


async def open_store(url: str, owner: str, lease_seconds: float = 30.0) -> ConversationStore:
    return ConversationStore(db.create_engine(url), owner, lease_seconds)


async def begin(store: ConversationStore, key: str | None = "k1") -> TurnStart:
    conversation = await store.create(ANN, "", "", "", None)
    return await store.begin_turn(ANN, conversation.id, "How many days of leave?", key)


async def answer_of(store: ConversationStore, start: TurnStart) -> Message:
    return (await store.messages(ANN, start.conversation.id, 10, 0))[-1]


async def test_an_answer_whose_lease_ran_out_is_closed_with_its_text(database: str) -> None:
    store = await open_store(database, "replica-a", lease_seconds=0.2)
    try:
        start = await begin(store)
        assert start.assistant is not None
        assert await store.save_progress(start.assistant.id, "Employees have 25") == (
            AnswerState.STREAMING
        )
        assert await store.close_interrupted() == 0  # the writer is alive
        await asyncio.sleep(0.3)
        assert await store.close_interrupted() == 1
        closed = await answer_of(store, start)
        assert (closed.status, closed.error_code, closed.finish_reason, closed.content) == (
            Status.FAILED,
            INTERRUPTED,
            FinishReason.ERROR,
            "Employees have 25",
        )
        # Its writer, had it only stalled, can no longer save into a closed answer.
        saved = await store.save_progress(start.assistant.id, "Employees have 25 days")
        assert saved == AnswerState.ENDED
    finally:
        await store.engine.dispose()


async def test_a_restarted_replica_closes_its_predecessors_answers_at_once(
    database: str,
) -> None:
    mine, theirs = await open_store(database, "host-1:50061"), await open_store(database, "host-2")
    try:
        left_by_me = await begin(mine)
        still_theirs = await begin(theirs)
        assert await mine.close_interrupted(include_own=True) == 1
        assert (await answer_of(mine, left_by_me)).error_code == INTERRUPTED
        assert (await answer_of(theirs, still_theirs)).status == Status.IN_PROGRESS

        # The same key sent again replays the interrupted outcome instead of waiting forever.
        again = await mine.begin_turn(ANN, left_by_me.conversation.id, "again", "k1")
        assert again.replayed
        assert again.assistant is not None
        assert again.assistant.status == Status.FAILED
        assert again.assistant.error_code == INTERRUPTED
    finally:
        await mine.engine.dispose()
        await theirs.engine.dispose()


async def test_an_ended_answer_is_never_closed_as_interrupted(database: str) -> None:
    store = await open_store(database, "replica-a", lease_seconds=0.1)
    try:
        start = await begin(store)
        assert start.assistant is not None
        await store.finish_answer(
            start.assistant.id,
            Outcome(status=Status.COMPLETE, content="25 days.", finish_reason=FinishReason.STOP),
        )
        await asyncio.sleep(0.2)
        assert await store.close_interrupted(include_own=True) == 0
        assert (await answer_of(store, start)).status == Status.COMPLETE
    finally:
        await store.engine.dispose()


def test_the_lease_must_outlive_several_saves() -> None:
    with pytest.raises(ValueError, match="TURN_LEASE_SECONDS"):
        Settings(turn_lease_seconds=1.0, turn_flush_seconds=0.5)


async def test_a_streaming_answer_is_saved_as_it_grows(tmp_path: Path, peers: Peers) -> None:
    url = f"sqlite:///{tmp_path}/conversation.db"
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    store = await open_store(url, "replica-a")
    router, retrieval = LlmRouter(peers.address, 30.0), Retrieval(peers.address, 5.0)
    settings = Settings(grpc_port=0, database_url=url, turn_flush_seconds=0.05)
    runner = TurnRunner(store, router, retrieval, settings)
    peers.router.script = Script([started(text("Employees")), text(" have")], hang=True)
    try:
        start = await begin(store)
        turn = runner.run(Begun(start), "")
        seen = ""
        async for event in turn:
            if isinstance(event, TextDelta):
                seen += event.text
            if seen == "Employees have":
                break
        # The model hangs after two deltas: within a few flushes the store has them.
        for _ in range(40):
            if (await answer_of(store, start)).content == "Employees have":
                break
            await asyncio.sleep(0.05)
        saved = await answer_of(store, start)
        assert (saved.status, saved.content) == (Status.IN_PROGRESS, "Employees have")
        await turn.aclose()  # type: ignore[attr-defined]
        assert (await answer_of(store, start)).status == Status.CANCELLED
    finally:
        await router.close()
        await retrieval.close()
        await store.engine.dispose()


async def test_an_interrupted_answer_replays_as_failed(tmp_path: Path, peers: Peers) -> None:
    url = f"sqlite:///{tmp_path}/conversation.db"
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    store = await open_store(url, "replica-a")
    router, retrieval = LlmRouter(peers.address, 30.0), Retrieval(peers.address, 5.0)
    runner = TurnRunner(store, router, retrieval, Settings(grpc_port=0, database_url=url))
    try:
        start = await begin(store)
        assert start.assistant is not None
        await store.save_progress(start.assistant.id, "Employees have")
        await store.close_interrupted(include_own=True)
        again = await store.begin_turn(ANN, start.conversation.id, "?", "k1")
        events = [event async for event in runner.run(Begun(again), "")]
        end = events[-1]
        assert isinstance(end, TurnFailed)
        assert (end.failure.code, end.failure.retryable) == (INTERRUPTED, True)
        assert peers.router.requests == []  # replayed, not answered again
    finally:
        await router.close()
        await retrieval.close()
        await store.engine.dispose()


async def test_a_regenerated_answer_left_in_progress_is_closed_like_any_other(
    database: str,
) -> None:
    store = await open_store(database, "host-1:50061")
    try:
        start = await begin(store)
        assert start.assistant is not None
        await store.finish_answer(
            start.assistant.id,
            Outcome(status=Status.COMPLETE, content="25 days.", finish_reason=FinishReason.STOP),
        )
        again = await store.begin_regeneration(ANN, start.conversation.id)
        assert again.assistant is not None
        assert await store.save_progress(again.assistant.id, "Twenty") == AnswerState.STREAMING
        # The process dies here; the next one of the same replica closes what it left.
        assert await store.close_interrupted(include_own=True) == 1
        shown = await store.messages(ANN, start.conversation.id, 10, 0)
        assert [(m.id, m.status, m.error_code, m.content) for m in shown[1:]] == [
            (again.assistant.id, Status.FAILED, INTERRUPTED, "Twenty")
        ]
    finally:
        await store.engine.dispose()


class FlakyStore(ConversationStore):
    """A store whose database fails the first write of an answer's end."""

    failures = 1

    async def _finish_answer(
        self, message_id: str, outcome: Outcome, then: Then | None = None
    ) -> Message:
        if self.failures:
            self.failures -= 1
            raise OperationalError("UPDATE messages", {}, ConnectionError("connection reset"))
        return await super()._finish_answer(message_id, outcome, then)


async def test_an_answers_end_survives_a_brief_database_failure(database: str) -> None:
    store = FlakyStore(db.create_engine(database), "replica-a")
    try:
        start = await begin(store)
        assert start.assistant is not None
        ended = await store.finish_answer(
            start.assistant.id,
            Outcome(status=Status.COMPLETE, content="25 days.", finish_reason=FinishReason.STOP),
        )
        assert (ended.status, ended.content) == (Status.COMPLETE, "25 days.")
        assert (await answer_of(store, start)).status == Status.COMPLETE
    finally:
        await store.engine.dispose()
