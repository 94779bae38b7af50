"""The usage ledger in the router's own database (SQLite by default, PostgreSQL in
production).

Entries are summed in memory per tenant, user, alias, model, cache state and outcome, and
each flush (every ``flush_interval``, 0.5 s) writes one row per such key with its count of
requests: a request costs a dictionary update, never database latency, and a busy user's
requests become two rows a second however many there are. A row's ``created_at`` is
when its first request was recorded; its requests follow within one flush interval.

One write at a time (the background task, a ``GetUsage`` read and shutdown share a lock); on
shutdown the write in flight finishes and the rest is written.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, func, insert, select

from parley_llm_router.ledger import UsageEntry, UsageTotal
from parley_llm_router.tables import UsageRecord
from parley_runtime import telemetry
from parley_runtime.db import create_engine, sessions

log = logging.getLogger("parley.llm_router.ledger")
_INSERT = insert(UsageRecord)

# tenant, user, alias, provider, model, cached, outcome
_Key = tuple[str, str, str, str, str, bool, str]


@dataclass(slots=True)
class _Sum:
    """The requests of one key since the last flush."""

    first_at: datetime
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: _Sum) -> None:
        self.first_at = min(self.first_at, other.first_at)
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cost_usd += other.cost_usd


class SqlLedger:
    """Usage summed per key and written in batches; totals by user and model for GetUsage."""

    # A write runs partly on the event loop: at most ``batch_size`` rows a transaction keeps
    # every pause short.
    def __init__(self, url: str, *, flush_interval: float = 0.5, batch_size: int = 64) -> None:
        self.engine = create_engine(url)
        self.sessions = sessions(self.engine)
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self._pending: dict[_Key, _Sum] = {}
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    def record(self, entry: UsageEntry) -> None:
        key = (
            entry.tenant_id,
            entry.user_id,
            entry.alias,
            entry.provider,
            entry.model,
            entry.cached,
            entry.outcome,
        )
        total = self._pending.get(key)
        if total is None:
            total = self._pending[key] = _Sum(datetime.now(UTC))
            if len(self._pending) >= self.batch_size:
                self._wake.set()
        total.requests += 1
        total.input_tokens += entry.input_tokens
        total.output_tokens += entry.output_tokens
        total.cost_usd += entry.cost_usd

    async def flush(self) -> None:
        """Write everything recorded so far."""
        async with self._writing:
            while self._pending:
                keys = list(self._pending)[: self.batch_size]
                batch = {key: self._pending.pop(key) for key in keys}
                try:
                    # Core, not the ORM's bulk path: cheaper for the same rows.
                    async with self.engine.begin() as connection:
                        await connection.execute(_INSERT, [_row(k, s) for k, s in batch.items()])
                except BaseException:
                    # Failed or cancelled, the transaction was rolled back: keep the sums
                    # for the next flush rather than losing them.
                    self._restore(batch)
                    raise

    def _restore(self, batch: dict[_Key, _Sum]) -> None:
        for key, total in batch.items():
            newer = self._pending.get(key)
            if newer is not None:
                total.add(newer)
            self._pending[key] = total

    async def _run(self) -> None:
        while not self._closing:
            try:
                async with asyncio.timeout(self.flush_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                with telemetry.untraced():  # of no request: a trace each would be noise
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
                func.sum(UsageRecord.requests),
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
                requests=int(count or 0),
                input_tokens=int(tokens_in or 0),
                output_tokens=int(tokens_out or 0),
                cost_usd=float(cost or 0.0),
            )
            for user, provider, model, count, tokens_in, tokens_out, cost in rows
        ]

    async def delete_user(self, tenant_id: str, user_id: str) -> int:
        """Forget one user: the sums not yet written are dropped (under the write lock, so
        none is being written meanwhile), then the rows are deleted."""
        async with self._writing:
            for key in [k for k in self._pending if k[0] == tenant_id and k[1] == user_id]:
                del self._pending[key]
            async with self.engine.begin() as connection:
                deleted = await connection.execute(
                    delete(UsageRecord).where(
                        UsageRecord.tenant_id == tenant_id, UsageRecord.user_id == user_id
                    )
                )
        return int(deleted.rowcount)

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


def _row(key: _Key, total: _Sum) -> dict[str, object]:
    tenant, user, alias, provider, model, cached, outcome = key
    return {
        "tenant_id": tenant,
        "user_id": user,
        "alias": alias,
        "provider": provider,
        "model": model,
        "cached": cached,
        "outcome": outcome,
        "requests": total.requests,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "cost_usd": total.cost_usd,
        "created_at": total.first_at,
    }
