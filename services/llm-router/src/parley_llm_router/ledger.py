"""The usage ledger's port: what the router records after every answered request."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One answered (or broken) request, billed to a tenant and user."""

    tenant_id: str
    user_id: str
    alias: str
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    cached: bool
    outcome: str  # "ok", or the failure code of a stream that broke after starting


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """One user's usage of one model over a window, as GetUsage reports it."""

    user_id: str
    model: str  # "provider/model"
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class UsageLedger(Protocol):
    """Where usage is recorded and summed."""

    def record(self, entry: UsageEntry) -> None:
        """Queue an entry; never blocks the request that produced it."""

    async def totals(
        self, tenant_id: str, user_id: str | None, start: datetime, end: datetime
    ) -> list[UsageTotal]: ...

    async def delete_user(self, tenant_id: str, user_id: str) -> int:
        """Forget every entry of one user, written or not; return how many rows went."""
        ...

    async def close(self) -> None: ...
