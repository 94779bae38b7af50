"""Background work after a turn: a title after the first answer, tasks retried with backoff
and kept failed when their tries run out, and a task whose process is killed (-9) mid-run
taken over by another replica once its lease runs out (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from typing import Any

import pytest
from prometheus_client import REGISTRY

from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_conversation.adapters.tasks import RUNNING
from parley_conversation.background import TaskKind
from parley_conversation.titles import cleaned

from .fakes import Peers
from .replicas import ANN, Replica, replica


def _ran(kind: str, outcome: str) -> float:
    labels = {"kind": kind, "outcome": outcome}
    return REGISTRY.get_sample_value("parley_background_tasks_total", labels) or 0.0


async def _settled(node: Replica, cid: str) -> None:
    for _ in range(200):
        if not await node.tasks.unfinished(cid):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("background work did not settle")


def test_a_title_is_cleaned_from_the_models_answer() -> None:
    assert cleaned('Title: "Parental leave questions."\n') == "Parental leave questions"
    assert cleaned("") is None
    assert cleaned("x" * 200) is None


async def test_a_conversation_without_a_title_gets_one_after_its_first_answer(
    database_url: str, peers: Peers
) -> None:
    peers.router.chat_answer = lambda request: "Parental leave"
    async with replica(database_url, peers) as node:
        cid = (await node.store.create(ANN, "", "", "", None)).id
        await node.send(cid, "How long is parental leave for new fathers here?")
        await _settled(node, cid)
        titled = await node.store.get(ANN, cid)
        named = (await node.store.create(ANN, "Mine", "", "", None)).id
        await node.send(named, "How long is parental leave?")
        await _settled(node, named)
        kept = await node.store.get(ANN, named)
        await node.send(cid, "And for adoptions?")
        await _settled(node, cid)
    assert titled.title == "Parental leave"
    assert kept.title == "Mine"
    (asked,) = peers.router.chats  # one title, for the first answer only
    assert "User: How long is parental leave for new fathers here?" in (
        asked.messages[1].content[0].text
    )


async def test_with_the_local_model_the_first_words_stay_the_title(
    database_url: str, peers: Peers
) -> None:
    peers.router.local_aliases = {"default"}
    async with replica(database_url, peers) as node:
        cid = (await node.store.create(ANN, "", "", "", None)).id
        await node.send(cid, "How long is parental leave?")
        await _settled(node, cid)
        assert (await node.store.get(ANN, cid)).title == "How long is parental leave?"
    assert not peers.router.chats


async def test_a_failing_task_is_retried_then_kept_failed(database_url: str, peers: Peers) -> None:
    calls = 0

    def flaky(request: llm.ChatRequest) -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the provider fell over")
        return "Leave questions"

    peers.router.chat_answer = flaky
    retried = _ran("title", "retried")
    fast: dict[str, Any] = {"background_retry_seconds": 0.05, "background_max_attempts": 2}
    async with replica(database_url, peers, **fast) as node:
        cid = (await node.store.create(ANN, "", "", "", None)).id
        await node.send(cid, "How long is leave?")
        await _settled(node, cid)
        assert (await node.store.get(ANN, cid)).title == "Leave questions"
        assert _ran("title", "retried") == retried + 1

        def broken(request: llm.ChatRequest) -> str:
            raise RuntimeError("down for good")

        peers.router.chat_answer = broken
        other = (await node.store.create(ANN, "", "", "", None)).id
        await node.send(other, "And sick days?")
        await _settled(node, other)
        (failed,) = await node.tasks.failed(other)
        assert (await node.store.get(ANN, other)).title == "And sick days?"  # first words stay
    assert (failed.kind, failed.attempts) == (TaskKind.TITLE, 2)
    assert "Internal" in failed.last_error


# A replica's worker that claims a task and is killed (-9) while it runs it.
DOOMED = textwrap.dedent(
    """
    import asyncio, sys
    from parley_conversation.adapters.tasks import TaskStore
    from parley_conversation.background import Pacing, TaskKind, Worker
    from parley_runtime import db

    async def main():
        engine = db.create_engine(sys.argv[1])
        tasks = TaskStore(engine, "replica-doomed", lease_seconds=1.0)

        async def hang(task):
            print("running", task.kind.value, flush=True)
            await asyncio.Event().wait()

        worker = Worker(tasks, {TaskKind.TITLE: hang}, Pacing(lease_seconds=1.0))
        worker.start()
        await asyncio.Event().wait()

    asyncio.run(main())
    """
)


async def test_a_task_whose_process_is_killed_is_taken_over_by_another_replica(
    database_url: str, peers: Peers
) -> None:
    peers.router.chat_answer = lambda request: "Parental leave"
    lease: dict[str, Any] = {"background_lease_seconds": 1.0, "background_poll_seconds": 0.1}
    async with replica(database_url, peers, "replica-a", work=False, **lease) as node:
        cid = (await node.store.create(ANN, "", "", "", None)).id
        await node.send(cid, "How long is parental leave?")
        assert await node.tasks.unfinished(cid) == [TaskKind.TITLE]
        doomed = await asyncio.create_subprocess_exec(
            sys.executable, "-c", DOOMED, database_url, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert doomed.stdout is not None
            line = await asyncio.wait_for(doomed.stdout.readline(), 30)
            assert line.decode().strip() == "running title"
        finally:
            os.kill(doomed.pid, signal.SIGKILL)
            await doomed.wait()
        async with node.store.engine.connect() as conn:
            from sqlalchemy import text

            state, owner, attempts = (
                await conn.execute(text("SELECT state, owner, attempts FROM background_tasks"))
            ).one()
        assert (state, owner, attempts) == (RUNNING, "replica-doomed", 1)
        assert (await node.store.get(ANN, cid)).title == "How long is parental leave?"
        node.worker.start()  # replica-a takes it over once the dead one's lease runs out
        await _settled(node, cid)
        assert (await node.store.get(ANN, cid)).title == "Parental leave"
    assert doomed.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", [TaskKind.SUMMARY])
async def test_one_unfinished_task_per_subject(
    database_url: str, peers: Peers, kind: TaskKind
) -> None:
    from parley_conversation.background import TaskRequest

    async with replica(database_url, peers, work=False) as node:
        cid = (await node.store.create(ANN, "", "", "", None)).id
        await node.tasks.enqueue(ANN, [TaskRequest(kind, cid), TaskRequest(kind, cid)])
        await node.tasks.enqueue(ANN, [TaskRequest(kind, cid)])
        assert await node.tasks.unfinished(cid) == [kind]
