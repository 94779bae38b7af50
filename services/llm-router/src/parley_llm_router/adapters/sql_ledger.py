"""The usage ledger in the router's own database (SQLite by default, PostgreSQL in
production).

Entries are queued in memory and written in batches by one background task, so recording
never adds database latency to a request. One write at a time (the background task, a
``GetUsage`` read and shutdown share a lock); on shutdown the write in flight finishes and the
rest of the queue is written.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from sqlalchemy import func, insert, select

from parley_llm_router.ledger import UsageEntry, UsageTotal
from parley_llm_router.models import UsageRecord
from parley_runtime.db import create_engine, sessions

log = logging.getLogger("parley.llm_router.ledger")
_INSERT = insert(UsageRecord)


class SqlLedger:
    """Batched writes of usage entries; totals by user and model for GetUsage."""

    # A write runs on the event loop (about 1 ms for 64 rows on SQLite here): small
    # batches keep every pause short, where 500 rows held all streams up for 7 ms.
    def __init__(self, url: str, *, flush_interval: float = 0.5, batch_size: int = 64) -> None:
        self.engine = create_engine(url)
        self.sessions = sessions(self.engine)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._pending: list[dict[str, object]] = []
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    def record(self, entry: UsageEntry) -> None:
        self._pending.append(
            {
                "tenant_id": entry.tenant_id,
                "user_id": entry.user_id,
                "alias": entry.alias,
                "provider": entry.provider,
                "model": entry.model,
                "input_tokens": entry.input_tokens,
                "output_tokens": entry.output_tokens,
                "cost_usd": entry.cost_usd,
                "cached": entry.cached,
                "outcome": entry.outcome,
                "created_at": datetime.now(UTC),
            }
        )
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued so far."""
        async with self._writing:
            while self._pending:
                batch, self._pending = (
                    self._pending[: self.batch_size],
                    self._pending[self.batch_size :],
                )
                try:
                    # Core, not the ORM's bulk path: 1.0 ms instead of 1.4 for 64 rows on
                    # SQLite.
                    async with self.engine.begin() as connection:
                        await connection.execute(_INSERT, batch)
                except BaseException:
                    # Failed or cancelled, the transaction was rolled back: keep the entries
                    # for the next flush rather than losing them.
                    self._pending[:0] = batch
                    raise

    async def _run(self) -> None:
        while not self._closing:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("writing usage entries failed; retrying on the next flush")

    async def totals(
        self, tenant_id: str, user_id: str | None, start: datetime, end: datetime
    ) -> list[UsageTotal]:
        await self.flush()
        query = (
            select(
                UsageRecord.user_id,
                UsageRecord.provider,
                UsageRecord.model,
                func.count(),
                func.sum(UsageRecord.input_tokens),
                func.sum(UsageRecord.output_tokens),
                func.sum(UsageRecord.cost_usd),
            )
            .where(
                UsageRecord.tenant_id == tenant_id,
                UsageRecord.created_at >= start,
                UsageRecord.created_at < end,
            )
            .group_by(UsageRecord.user_id, UsageRecord.provider, UsageRecord.model)
            .order_by(UsageRecord.user_id, UsageRecord.provider, UsageRecord.model)
        )
        if user_id is not None:
            query = query.where(UsageRecord.user_id == user_id)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            UsageTotal(
                user_id=user,
                model=f"{provider}/{model}",
                requests=int(count),
                input_tokens=int(tokens_in or 0),
                output_tokens=int(tokens_out or 0),
                cost_usd=float(cost or 0.0),
            )
            for user, provider, model, count, tokens_in, tokens_out, cost in rows
        ]

    async def close(self) -> None:
        """Stop the background task after its write in flight, then write what is left."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.flush()
        finally:
            await self.engine.dispose()
