"""Where the counters of limits live: the interface, and the one failure it may report.

Two stores implement it: Redis (``redis_store.py``), shared by every gateway replica, and the
process's memory (``memory_store.py``) for a gateway running alone without Redis. Each call is
one step done atomically: a replica never sees another's half-done request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from parley_gateway.limits.gcra import Meter, Tally


class StoreUnavailable(Exception):
    """The store did not answer (down, slow, or refusing): ``LIMITS_ON_REDIS_ERROR`` decides."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a turn may not start: the ``index``-th quota or stream limit given to
    :meth:`LimitStore.admit` is at ``used``."""

    kind: Literal["quota", "streams"]
    index: int
    used: int


class LimitStore(Protocol):
    """Rates (GCRA), open streams (slots with a lease) and token counters, by key."""

    async def take(self, keys: Sequence[str], meters: Sequence[Meter]) -> tuple[bool, list[Tally]]:
        """One request against each key's meter, all or none (``gcra.take``)."""

    async def peek(self, keys: Sequence[str], meters: Sequence[Meter]) -> list[Tally]:
        """Where each meter stands, using nothing."""

    async def admit(
        self,
        quotas: Sequence[tuple[str, int]],
        streams: Sequence[tuple[str, int]],
        slot: str,
        lease_seconds: float,
    ) -> Refusal | None:
        """Refuse if a token counter has reached its quota or a stream key its limit; else take
        ``slot`` in every stream key for ``lease_seconds`` (the safety net should it never be
        released)."""

    async def settle(
        self, keys: Sequence[str], slot: str, counters: Sequence[tuple[str, float]], tokens: int
    ) -> None:
        """A turn has ended: give ``slot`` back in every stream key, and add ``tokens`` to each
        counter (a counter is dropped at its Unix time: its period's end, with a margin)."""

    async def streams_open(self, keys: Sequence[str]) -> list[int]:
        """Slots held now in each stream key (expired leases not counted)."""

    async def tokens_used(self, keys: Sequence[str]) -> list[int]:
        """Each counter's tokens, 0 when there is none."""

    async def close(self) -> None:
        """Let go of connections."""
