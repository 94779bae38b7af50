"""Background tasks in the service's own database (``background.py`` runs them).

A task is a row: its kind, the principal and conversation (and message) it acts on, its state
(``pending`` until due, ``running`` under a replica's lease, ``failed`` when its tries ran
out; a task that is done is deleted), its tries and its last error. ``dedup_key`` keeps one
unfinished task per subject: a second request while one waits is dropped (``ON CONFLICT DO
NOTHING``, on SQLite and PostgreSQL alike), so enqueueing never fails the write it rides with.

A claim is one conditional update: the oldest due task (pending and due, or running with its
lease run out, its replica gone) becomes this replica's, with a fresh lease and one more try.
Two replicas that pick the same task race on the update; the loser's condition no longer
holds and it takes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Connection, Row, Table, and_, bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from parley_conversation.background import Task, TaskKind, TaskRequest
from parley_conversation.tables import TaskRow
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.ids import new_id
from parley_runtime.timestamps import utcnow

TASKS = cast(Table, TaskRow.__table__)
_t = TASKS.c
PENDING, RUNNING, FAILED = "pending", "running", "failed"
MAX_ERROR_CHARS = 500

_DUE = or_(
    and_(_t.state == PENDING, _t.run_after <= bindparam("now")),
    and_(_t.state == RUNNING, _t.lease_until < bindparam("now")),
)
_NEXT_DUE = select(_t.id).where(_DUE).order_by(_t.run_after).limit(1).scalar_subquery()
_CLAIM = (
    update(TASKS)
    .where(_t.id == _NEXT_DUE, _DUE)
    .values(
        state=RUNNING,
        owner=bindparam("owner"),
        lease_until=bindparam("lease_until"),
        attempts=_t.attempts + 1,
        updated_at=bindparam("now"),
    )
    .returning(*TASKS.c)
)
_MINE = and_(_t.id == bindparam("task_id"), _t.owner == bindparam("worker"), _t.state == RUNNING)
# The worker's statements, built once; each is one ``db.brief_transaction``.
_RENEW = (
    update(TASKS)
    .where(_MINE)
    .values(lease_until=bindparam("lease_until"), updated_at=bindparam("now"))
)
_FINISH = delete(TASKS).where(_MINE)
_RETRY = (
    update(TASKS)
    .where(_MINE)
    .values(
        state=PENDING,
        owner=None,
        lease_until=None,
        run_after=bindparam("run_after"),
        last_error=bindparam("last_error"),
        updated_at=bindparam("now"),
    )
)
_FAIL = (
    update(TASKS)
    .where(_t.id == bindparam("task_id"))
    .values(
        state=FAILED,
        owner=None,
        lease_until=None,
        dedup_key=None,
        last_error=bindparam("last_error"),
        updated_at=bindparam("now"),
    )
)
_RELEASE = (
    update(TASKS)
    .where(_t.owner == bindparam("worker"), _t.state == RUNNING)
    .values(
        state=PENDING,
        owner=None,
        lease_until=None,
        run_after=bindparam("now"),
        updated_at=bindparam("now"),
    )
)


def _first(conn: Connection, statement: Executable, params: dict[str, Any]) -> Row[Any] | None:
    return conn.execute(statement, params).first()


def _rowcount(conn: Connection, statement: Executable, params: dict[str, Any]) -> int:
    return int(conn.execute(statement, params).rowcount)


@dataclass(frozen=True, slots=True)
class Failed:
    """A task kept failed: what it was and its last error."""

    kind: TaskKind
    conversation_id: str
    attempts: int
    last_error: str


def _dedup_key(request: TaskRequest) -> str:
    # One unfinished summary and title per conversation, one memory task per answer.
    if request.kind == TaskKind.MEMORY:
        return f"{request.kind.value}:{request.message_id}"
    return f"{request.kind.value}:{request.conversation_id}"


class TaskStore:
    """The background tasks' rows (see the module docstring); ``owner`` names this replica."""

    def __init__(self, engine: AsyncEngine, owner: str, lease_seconds: float = 60.0) -> None:
        self.engine = engine
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    def _insert(self, conn: Connection) -> Any:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        return dialect.insert(TASKS).on_conflict_do_nothing(index_elements=["dedup_key"])

    def add(self, conn: Connection, who: Principal, requests: Sequence[TaskRequest]) -> None:
        """Queue ``requests`` for ``who`` inside the caller's transaction (``conn``); one
        whose subject already has an unfinished task is dropped."""
        if not requests:
            return
        now = utcnow()
        rows = [
            {
                "id": new_id("task"),
                "kind": request.kind.value,
                "tenant_id": who.tenant_id,
                "user_id": who.user_id,
                "conversation_id": request.conversation_id,
                "message_id": request.message_id,
                "dedup_key": _dedup_key(request),
                "state": PENDING,
                "attempts": 0,
                "run_after": now,
                "owner": None,
                "lease_until": None,
                "last_error": "",
                "created_at": now,
                "updated_at": now,
            }
            for request in requests
        ]
        conn.execute(self._insert(conn), rows)

    async def enqueue(self, who: Principal, requests: Sequence[TaskRequest]) -> None:
        """Queue ``requests`` in a transaction of their own."""
        await db.brief_transaction(self.engine, self.add, who, requests)

    async def claim(self) -> Task | None:
        """Take the oldest due task for this replica (see the module docstring), or None."""
        now = utcnow()
        params = {"now": now, "owner": self.owner, "lease_until": now + self.lease}
        row = await db.brief_transaction(self.engine, _first, _CLAIM, params)
        if row is None:
            return None
        return Task(
            id=row.id,
            kind=TaskKind(row.kind),
            who=Principal(row.tenant_id, row.user_id),
            conversation_id=row.conversation_id,
            message_id=row.message_id,
            attempts=row.attempts,
        )

    async def renew(self, task_id: str) -> bool:
        """Extend the lease of a task this replica runs; False when it is no longer ours."""
        now = utcnow()
        params = {"task_id": task_id, "worker": self.owner, "lease_until": now + self.lease}
        return bool(
            await db.brief_transaction(self.engine, _rowcount, _RENEW, params | {"now": now})
        )

    async def finish(self, task_id: str) -> None:
        """A task this replica ran is done: it goes."""
        params = {"task_id": task_id, "worker": self.owner}
        await db.brief_transaction(self.engine, _rowcount, _FINISH, params)

    async def retry(self, task_id: str, error: str, pause: float) -> None:
        """Put a task back, due again in ``pause`` seconds, with the error that stopped it."""
        now = utcnow()
        params = {
            "task_id": task_id,
            "worker": self.owner,
            "run_after": now + timedelta(seconds=pause),
            "last_error": error[:MAX_ERROR_CHARS],
            "now": now,
        }
        await db.brief_transaction(self.engine, _rowcount, _RETRY, params)

    async def fail(self, task_id: str, error: str) -> None:
        """Keep a task failed (its tries ran out) with its last error; its subject may be
        queued again."""
        params = {"task_id": task_id, "last_error": error[:MAX_ERROR_CHARS], "now": utcnow()}
        await db.brief_transaction(self.engine, _rowcount, _FAIL, params)

    async def release(self) -> int:
        """Put back the tasks this replica runs (on shutdown), due at once for any replica."""
        params = {"worker": self.owner, "now": utcnow()}
        return await db.brief_transaction(self.engine, _rowcount, _RELEASE, params)

    async def unfinished(self, conversation_id: str) -> list[TaskKind]:
        """The kinds of the conversation's tasks that are pending or running."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_t.kind)
                .where(_t.conversation_id == conversation_id, _t.state.in_([PENDING, RUNNING]))
                .order_by(_t.created_at)
            )
            return [TaskKind(kind) for (kind,) in rows]

    async def failed(self, conversation_id: str) -> list[Failed]:
        """The conversation's tasks kept failed."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(_t.kind, _t.conversation_id, _t.attempts, _t.last_error).where(
                    _t.conversation_id == conversation_id, _t.state == FAILED
                )
            )
            return [Failed(TaskKind(k), c, a, e) for k, c, a, e in rows]
