"""Users' memories in the service's own database (the ``memories`` table).

The store saves and loads :class:`~parley_conversation.memory.Memory`; rows never leave it.
Every method takes the principal and filters on its tenant and user: another user's memory
is indistinguishable from one that does not exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from parley_conversation.memory import Memory
from parley_conversation.tables import MemoryRow
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.errors import NotFound
from parley_runtime.timestamps import utcnow


def _memory(row: MemoryRow) -> Memory:
    return Memory(
        id=row.id,
        content=row.content,
        source_message_id=row.source_message_id,
        created_at=row.created_at,
        conversation_id=row.conversation_id,
        updated_at=row.updated_at,
    )


def _mine(who: Principal) -> ColumnElement[bool]:
    return (MemoryRow.tenant_id == who.tenant_id) & (MemoryRow.user_id == who.user_id)


_COUNT = (
    select(func.count())
    .select_from(MemoryRow)
    .where(MemoryRow.tenant_id == bindparam("tenant"), MemoryRow.user_id == bindparam("user"))
)


class MemoryStore:
    """:class:`~parley_conversation.memory.MemoryRecords` on SQLAlchemy (SQLite or
    PostgreSQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)

    async def _owned(self, session: AsyncSession, who: Principal, memory_id: str) -> MemoryRow:
        row = await session.get(MemoryRow, memory_id)
        if row is None or row.tenant_id != who.tenant_id or row.user_id != who.user_id:
            raise NotFound(f"memory {memory_id!r} not found", code="memory_not_found")
        return row

    async def add(self, who: Principal, memory: Memory) -> bool:
        row = MemoryRow(
            id=memory.id,
            tenant_id=who.tenant_id,
            user_id=who.user_id,
            content=memory.content,
            conversation_id=memory.conversation_id,
            source_message_id=memory.source_message_id,
            created_at=memory.created_at,
            updated_at=memory.updated_at or memory.created_at,
        )
        try:
            async with self.sessions.begin() as session:
                session.add(row)
        except IntegrityError:
            return False  # stored before (the same fact, or the same work run again)
        return True

    async def get(self, who: Principal, memory_id: str) -> Memory:
        async with self.sessions() as session:
            return _memory(await self._owned(session, who, memory_id))

    async def many(self, who: Principal, memory_ids: Sequence[str]) -> dict[str, Memory]:
        if not memory_ids:
            return {}
        query = select(MemoryRow).where(_mine(who), MemoryRow.id.in_(set(memory_ids)))
        async with self.sessions() as session:
            return {row.id: _memory(row) for row in (await session.scalars(query)).all()}

    async def page(
        self, who: Principal, limit: int, after: tuple[datetime, str] | None
    ) -> list[Memory]:
        query = (
            select(MemoryRow)
            .where(_mine(who))
            .order_by(MemoryRow.created_at.desc(), MemoryRow.id.desc())
            .limit(limit)
        )
        if after is not None:
            at, memory_id = after
            query = query.where(
                (MemoryRow.created_at < at)
                | ((MemoryRow.created_at == at) & (MemoryRow.id < memory_id))
            )
        async with self.sessions() as session:
            return [_memory(row) for row in (await session.scalars(query)).all()]

    async def count(self, who: Principal) -> int:
        """The caller's memories (read before a turn's recall: a short read, on SQLite on
        the event loop itself, see ``db.reading``)."""
        params = {"tenant": who.tenant_id, "user": who.user_id}
        return int(await db.reading(self.engine, Connection.scalar, _COUNT, params) or 0)

    async def update(self, who: Principal, memory_id: str, content: str) -> Memory:
        async with self.sessions.begin() as session:
            row = await self._owned(session, who, memory_id)
            row.content, row.updated_at = content, utcnow()
        return _memory(row)

    async def delete(self, who: Principal, memory_id: str) -> None:
        async with self.sessions.begin() as session:
            await session.delete(await self._owned(session, who, memory_id))

    async def delete_all(self, who: Principal) -> int:
        async with self.sessions.begin() as session:
            count = await session.scalar(
                select(func.count()).select_from(MemoryRow).where(_mine(who))
            )
            await session.execute(delete(MemoryRow).where(_mine(who)))
        return int(count or 0)
