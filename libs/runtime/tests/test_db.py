"""``db.transaction``, ``db.brief_transaction`` and ``db.reading``: one transaction as a plain
function, committed or rolled back whole, on a SQLite file (in a thread; brief writes and reads
on the loop), in-memory SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextvars
import shutil
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from parley_runtime import db

MARK: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="")


def _setup(conn: Connection) -> None:
    conn.execute(text("CREATE TABLE notes (body TEXT NOT NULL, at INTEGER NOT NULL)"))


def _add(conn: Connection, body: str) -> int:
    conn.execute(
        text("INSERT INTO notes (body, at) VALUES (:body, (SELECT count(*) FROM notes))"),
        {"body": body},
    )
    return int(conn.scalar(text("SELECT count(*) FROM notes")) or 0)


def _add_then_fail(conn: Connection, body: str) -> None:
    _add(conn, body)
    raise LookupError("after the insert")


def _bodies(conn: Connection) -> list[str]:
    return [row.body for row in conn.execute(text("SELECT body FROM notes ORDER BY at"))]


Run = Callable[..., Awaitable[Any]]


@pytest.mark.asyncio
@pytest.mark.parametrize("run", [db.transaction, db.brief_transaction])
async def test_a_transaction_commits_when_its_work_returns_and_not_when_it_raises(
    database_url: str, run: Run
) -> None:
    engine = db.create_engine(database_url)
    try:
        await db.transaction(engine, _setup)
        assert await run(engine, _add, "kept") == 1
        with pytest.raises(LookupError, match="after the insert"):
            await run(engine, _add_then_fail, "rolled back")
        assert await db.reading(engine, _bodies) == ["kept"]
    finally:
        await db.dispose(engine)


@pytest.mark.asyncio
async def test_on_a_sqlite_file_writes_run_in_a_thread_with_the_callers_context(
    tmp_path: Path,
) -> None:
    engine = db.create_engine(f"sqlite:///{tmp_path}/notes.db")
    seen: list[tuple[str, str]] = []

    def where(conn: Connection) -> None:
        seen.append((threading.current_thread().name, MARK.get()))

    token = MARK.set("the caller's")
    try:
        await db.transaction(engine, where)
        await db.reading(engine, where)
    finally:
        MARK.reset(token)
        await db.dispose(engine)
    (writer, writer_mark), (reader, reader_mark) = seen
    assert writer.startswith("sqlite")
    assert reader == threading.current_thread().name
    assert writer_mark == reader_mark == "the caller's"


@pytest.mark.asyncio
async def test_in_memory_sqlite_keeps_its_one_connection() -> None:
    engine = db.create_engine("sqlite:///:memory:")
    try:
        await db.transaction(engine, _setup)
        await db.transaction(engine, _add, "one")
        # The table is there only if every call used the same (the only) connection.
        assert await db.reading(engine, _bodies) == ["one"]
    finally:
        await db.dispose(engine)


def _add_where(conn: Connection, body: str, seen: list[str]) -> None:
    _add(conn, body)
    seen.append(threading.current_thread().name)


@pytest.mark.asyncio
async def test_on_a_sqlite_file_a_brief_write_runs_on_the_loop_unless_the_lock_is_taken(
    tmp_path: Path,
) -> None:
    path = tmp_path / "notes.db"
    engine = db.create_engine(f"sqlite:///{path}")
    other = sqlite3.connect(path, isolation_level=None)
    seen: list[str] = []
    try:
        await db.transaction(engine, _setup)
        await db.brief_transaction(engine, _add_where, "at once", seen)
        assert seen == [threading.current_thread().name]

        other.execute("BEGIN IMMEDIATE")  # another process writing
        waiting = asyncio.create_task(db.brief_transaction(engine, _add_where, "later", seen))
        await asyncio.sleep(0.2)  # the loop goes on meanwhile: the write waits in a thread
        assert not waiting.done()
        other.execute("INSERT INTO notes (body, at) VALUES ('theirs', 1)")
        other.execute("COMMIT")
        await asyncio.wait_for(waiting, 10)
        assert seen[1].startswith("sqlite")
        assert await db.reading(engine, _bodies) == ["at once", "theirs", "later"]
    finally:
        other.close()
        await db.dispose(engine)


@pytest.mark.asyncio
async def test_the_log_of_brief_writes_reaches_the_database_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "CHECKPOINT_EVERY", 5)
    path = tmp_path / "notes.db"
    engine = db.create_engine(f"sqlite:///{path}")
    try:
        await db.transaction(engine, _setup)
        for n in range(5):
            await db.brief_transaction(engine, _add, f"note {n}")
        writer = db._ON_LOOP[engine.sync_engine]
        async with asyncio.timeout(10):
            while writer.checkpointing:  # noqa: ASYNC110 - the checkpoint runs in a thread
                await asyncio.sleep(0.01)
        # The database file alone, without its log, holds every write.
        alone = tmp_path / "alone.db"
        shutil.copyfile(path, alone)
        copy = sqlite3.connect(alone)
        try:
            assert copy.execute("SELECT count(*) FROM notes").fetchone() == (5,)
        finally:
            copy.close()
    finally:
        await db.dispose(engine)
