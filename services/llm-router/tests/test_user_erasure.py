"""Erasing a user from the usage ledger (DeleteUserUsage): written rows and sums not yet
written go, on SQLite and PostgreSQL; other users and tenants keep theirs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.adapters.sql_ledger import SqlLedger
from parley_llm_router.main import build
from parley_llm_router.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server

from .test_ledger import entry, open_ledger


def part(text: str) -> pb.ContentPart:
    return pb.ContentPart(text=text)


async def _users(ledger: SqlLedger, tenant: str) -> dict[str, int]:
    now = datetime.now(UTC)
    rows = await ledger.totals(tenant, None, now - timedelta(hours=1), now + timedelta(hours=1))
    users: dict[str, int] = {}
    for row in rows:
        users[row.user_id] = users.get(row.user_id, 0) + row.requests
    return users


async def test_a_user_is_erased_from_written_rows_and_pending_sums(database_url: str) -> None:
    ledger = await open_ledger(database_url)
    try:
        for item in [entry("ann", 5), entry("ann", 2, model="m2"), entry("bob", 3)]:
            ledger.record(item)
        ledger.record(entry("ann", 9, tenant="globex"))
        await ledger.flush()
        # Recorded after the last write: only in memory when the erasure comes.
        ledger.record(entry("ann", 4))
        deleted = await ledger.delete_user("acme", "ann")
        assert deleted == 2  # one row per model written; the pending sum never becomes one
        assert await _users(ledger, "acme") == {"bob": 1}
        assert await _users(ledger, "globex") == {"ann": 1}
        assert await ledger.delete_user("acme", "ann") == 0
    finally:
        await ledger.close()


async def test_delete_user_usage_erases_the_caller_only(tmp_path: Path) -> None:
    settings = Settings(
        grpc_port=0,
        local_token_delay_ms=0,
        database_url=f"sqlite:///{tmp_path}/router.db",
        redis_url=None,
    )
    wiring = await build(settings, env={})
    ask = pb.ChatRequest(messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[part("hello")])])
    try:
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.llm_router.v1.LlmRouter") as chan,
        ):
            router = pb_grpc.LlmRouterStub(chan)
            for user in ("ann", "bob"):
                with acting_as("acme", user):
                    await router.Chat(ask)
            with acting_as("acme", "ann"):
                # A read writes what was recorded: the erasure finds a row to delete.
                assert len((await router.GetUsage(pb.GetUsageRequest(user_id="ann"))).rows) == 1
                deleted = await router.DeleteUserUsage(pb.DeleteUserUsageRequest())
                assert deleted.records_deleted == 1
                assert list((await router.GetUsage(pb.GetUsageRequest(user_id="ann"))).rows) == []
            with acting_as("acme", "admin", "admin"):
                rows = (await router.GetUsage(pb.GetUsageRequest())).rows
            assert [(r.user_id, r.requests) for r in rows] == [("bob", 1)]
    finally:
        await wiring.close()
