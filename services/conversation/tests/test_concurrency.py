"""Two sends to one conversation at once, through one replica or two sharing the database:
the second is refused (FAILED_PRECONDITION ``conversation_busy``, with a retry hint) while
the first answers, never interleaved; the first sent again with its key replays; the
conversation takes turns again once the answer has ended (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import pytest

from parley_conversation.conversations import Role, Status
from parley_conversation.events import Done, TurnFailed
from parley_conversation.turn import STILL_ANSWERING
from parley_runtime.errors import FailedPrecondition

from .fakes import Peers, Script, answer_events, started, text
from .replicas import ANN, replica


async def test_a_second_send_waits_for_the_first_answer_across_replicas(
    database_url: str, peers: Peers
) -> None:
    peers.router.scripts = [Script([started(text("Employees "))], hang=True)]
    peers.router.script = Script(answer_events("Second", " answer."))
    async with (
        replica(database_url, peers, "replica-a") as a,
        replica(database_url, peers, "replica-b") as b,
    ):
        cid = (await a.store.create(ANN, "HR", "", "", None)).id
        begun = await a.runner.begin(ANN, cid, "How many days of leave?", "k1", "")
        first = a.runner.run(begun, "")
        await anext(first)  # accepted: the answer streams on replica-a
        with pytest.raises(FailedPrecondition) as refused:
            await b.runner.begin(ANN, cid, "And sick days?", None, "")
        assert (refused.value.code, refused.value.retry_after) == ("conversation_busy", 2.0)
        with pytest.raises(FailedPrecondition):
            await b.runner.begin_regeneration(ANN, cid, "")
        # The first send again, with its key: a replay, not a refusal.
        replayed = await b.send(cid, "How many days of leave?", key="k1")
        assert replayed[-1] == TurnFailed(STILL_ANSWERING, begun.start.assistant.id)  # type: ignore[union-attr]
        assert begun.start.assistant is not None
        await a.runner.cancel(ANN, cid, begun.start.assistant.id)
        rest = [event async for event in first]
        assert isinstance(rest[-1], TurnFailed)
        second = await b.send(cid, "And sick days?")
        assert isinstance(second[-1], Done)
        messages = await a.store.messages(ANN, cid, 10, 0)
    assert [(m.role, m.content) for m in messages][::2] == [
        (Role.USER, "How many days of leave?"),
        (Role.USER, "And sick days?"),
    ]
    assert messages[3].content == "Second answer."
    assert [m.status for m in messages][1::2] == [Status.CANCELLED, Status.COMPLETE]


async def test_sends_at_the_same_moment_never_interleave(database_url: str, peers: Peers) -> None:
    peers.router.script = Script(answer_events("An", " answer."))
    async with (
        replica(database_url, peers, "replica-a") as a,
        replica(database_url, peers, "replica-b") as b,
    ):
        cid = (await a.store.create(ANN, "HR", "", "", None)).id
        outcomes = await asyncio.gather(
            *(node.send(cid, f"Question {i}") for i, node in enumerate([a, b, a, b])),
            return_exceptions=True,
        )
        messages = await a.store.messages(ANN, cid, 20, 0)
    done = [o for o in outcomes if isinstance(o, list)]
    busy = [o for o in outcomes if isinstance(o, FailedPrecondition)]
    assert len(done) + len(busy) == 4
    assert done
    assert all(o.code == "conversation_busy" for o in busy)
    # Each stored question is followed by its own answer.
    assert [m.role for m in messages] == [Role.USER, Role.ASSISTANT] * len(done)
