"""The usage ledger on SQLite and PostgreSQL, and GetUsage's scoping."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from parley_llm_router.adapters.sql_ledger import SqlLedger
from parley_llm_router.ledger import UsageEntry, UsageTotal
from parley_llm_router.main import MIGRATIONS, VERSION_TABLE
from parley_runtime import db


def entry(user: str, tokens_out: int, *, tenant: str = "acme", model: str = "m1") -> UsageEntry:
    return UsageEntry(
        tenant_id=tenant,
        user_id=user,
        alias="default",
        provider="openai",
        model=model,
        input_tokens=10,
        output_tokens=tokens_out,
        cost_usd=0.001 * tokens_out,
        cached=False,
        outcome="ok",
    )


async def open_ledger(url: str, *, batch_size: int = 64) -> SqlLedger:
    """A started ledger on a migrated database, writing only on a full batch, an explicit
    flush, a read and close (no timed flush within a test)."""
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    ledger = SqlLedger(url, flush_interval=60, batch_size=batch_size)
    ledger.start()
    return ledger


async def recent(ledger: SqlLedger, tenant: str = "acme") -> list[UsageTotal]:
    """The tenant's totals within an hour of now."""
    now = datetime.now(UTC)
    return await ledger.totals(tenant, None, now - timedelta(hours=1), now + timedelta(hours=1))


async def test_migrations_go_up_and_down(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.downgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)


async def test_a_fresh_checkout_gets_its_sqlite_folder(tmp_path: Path) -> None:
    # The default DATABASE_URL names .parley/, which a new clone does not have.
    url = f"sqlite:///{tmp_path}/not/yet/llm-router.db"
    ledger = await open_ledger(url)
    await ledger.close()
    assert (tmp_path / "not" / "yet" / "llm-router.db").is_file()


async def test_totals_group_by_user_and_model_within_the_tenant(database_url: str) -> None:
    ledger = await open_ledger(database_url)
    try:
        for item in [
            entry("ann", 5),
            entry("ann", 7),
            entry("ann", 1, model="m2"),
            entry("bob", 3),
            entry("eve", 100, tenant="globex"),
        ]:
            ledger.record(item)
        now = datetime.now(UTC)
        start, end = now - timedelta(minutes=1), now + timedelta(minutes=1)
        rows = await ledger.totals("acme", None, start, end)
        summary = {(r.user_id, r.model): (r.requests, r.output_tokens) for r in rows}
        assert summary == {
            ("ann", "openai/m1"): (2, 12),
            ("ann", "openai/m2"): (1, 1),
            ("bob", "openai/m1"): (1, 3),
        }
        ann = await ledger.totals("acme", "ann", start, end)
        assert {r.user_id for r in ann} == {"ann"}
        assert sum(r.cost_usd for r in ann) == pytest.approx(0.013)
        assert await ledger.totals("acme", None, end, end + timedelta(hours=1)) == []
    finally:
        await ledger.close()


async def test_queued_entries_are_flushed_on_close(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = await open_ledger(url)
    ledger.record(entry("ann", 1))
    await ledger.close()
    reopened = SqlLedger(url)
    rows = await recent(reopened)
    await reopened.close()
    assert [r.requests for r in rows] == [1]


async def test_closing_during_a_background_write_loses_no_entry(database_url: str) -> None:
    ledger = await open_ledger(database_url, batch_size=64)
    for index in range(200):
        ledger.record(entry(f"user-{index}", 1))  # 200 keys: batches of 64 rows
    for _ in range(5):  # let the background task begin writing the first batch
        await asyncio.sleep(0)
    await ledger.close()  # as on SIGTERM, while that write is in flight
    reopened = SqlLedger(database_url)
    rows = await recent(reopened)
    await reopened.close()
    assert sum(r.requests for r in rows) == 200


async def test_requests_of_one_key_are_summed_into_one_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    ledger = await open_ledger(url)
    for tokens in range(1, 101):
        ledger.record(entry("ann", tokens))
    ledger.record(entry("ann", 1000, model="m2"))
    await ledger.close()
    engine = db.create_engine(url)
    try:
        async with engine.connect() as connection:
            query = "SELECT model, requests, output_tokens FROM usage_records ORDER BY model"
            rows = (await connection.execute(sa.text(query))).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [("m1", 100, 5050), ("m2", 1, 1000)]


async def test_a_failed_write_keeps_the_sums_for_the_next(tmp_path: Path) -> None:
    ledger = await open_ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.record(entry("ann", 1))
    async with ledger.engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE usage_records RENAME TO moved"))
    with pytest.raises(Exception, match="usage_records"):
        await ledger.flush()
    ledger.record(entry("ann", 2))  # recorded while the sums wait for the next write
    async with ledger.engine.begin() as connection:
        await connection.execute(sa.text("ALTER TABLE moved RENAME TO usage_records"))
    rows = await recent(ledger)
    await ledger.close()
    assert [(r.requests, r.output_tokens) for r in rows] == [(2, 3)]
