"""``db.transaction`` and ``db.reading``: one transaction as a plain function, committed or
rolled back whole, on a SQLite file (in a thread; reads on the loop), in-memory SQLite and
PostgreSQL."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

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


@pytest.mark.asyncio
async def test_a_transaction_commits_when_its_work_returns_and_not_when_it_raises(
    database_url: str,
) -> None:
    engine = db.create_engine(database_url)
    try:
        await db.transaction(engine, _setup)
        assert await db.transaction(engine, _add, "kept") == 1
        with pytest.raises(LookupError, match="after the insert"):
            await db.transaction(engine, _add_then_fail, "rolled back")
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
