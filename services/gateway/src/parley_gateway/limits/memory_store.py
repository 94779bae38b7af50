"""The counters of limits in this process's memory: a gateway running alone (``REDIS_URL``
unset, the embedded run). Every replica counts for itself here, so several replicas need
Redis. Each call runs without an ``await`` inside, so it is atomic on the event loop."""

from __future__ import annotations

import time
from collections.abc import Sequence

from parley_gateway.limits import gcra
from parley_gateway.limits.gcra import Meter, Tally
from parley_gateway.limits.store import Refusal

# Idle entries are dropped by a sweep once this many calls have passed since the last one.
_SWEEP_EVERY = 10_000


def _now() -> int:
    return time.monotonic_ns() // 1000


class MemoryStore:
    """:class:`~parley_gateway.limits.store.LimitStore` in dictionaries."""

    def __init__(self) -> None:
        self._tats: dict[str, int] = {}
        self._slots: dict[str, dict[str, int]] = {}
        self._tokens: dict[str, tuple[int, float]] = {}
        self._calls = 0

    def _sweep(self, now: int) -> None:
        self._calls += 1
        if self._calls < _SWEEP_EVERY:
            return
        self._calls = 0
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        for key in list(self._slots):
            self._open(key, now)
        wall = time.time()
        self._tokens = {key: kept for key, kept in self._tokens.items() if kept[1] > wall}

    async def take(self, keys: Sequence[str], meters: Sequence[Meter]) -> tuple[bool, list[Tally]]:
        now = _now()
        self._sweep(now)
        passed, after, tallies = gcra.take([self._tats.get(k) for k in keys], meters, now)
        if passed:
            self._tats.update(zip(keys, after, strict=True))
        return passed, tallies

    async def peek(self, keys: Sequence[str], meters: Sequence[Meter]) -> list[Tally]:
        now = _now()
        return [gcra.peek(self._tats.get(k), m, now) for k, m in zip(keys, meters, strict=True)]

    def _open(self, key: str, now: int) -> dict[str, int]:
        slots = self._slots.get(key)
        if slots is None:
            return {}
        live = {slot: until for slot, until in slots.items() if until > now}
        if live:
            self._slots[key] = live
        else:
            del self._slots[key]
        return live

    async def admit(
        self,
        quotas: Sequence[tuple[str, int]],
        streams: Sequence[tuple[str, int]],
        slot: str,
        lease_seconds: float,
    ) -> Refusal | None:
        wall = time.time()
        for index, (key, quota) in enumerate(quotas):
            used, until = self._tokens.get(key, (0, 0.0))
            if until > wall and used >= quota:
                return Refusal("quota", index, used)
        now = _now()
        self._sweep(now)
        for index, (key, limit) in enumerate(streams):
            held = len(self._open(key, now))
            if held >= limit:
                return Refusal("streams", index, held)
        until = now + int(lease_seconds * gcra.MICROS)
        for key, _ in streams:
            self._slots.setdefault(key, {})[slot] = until
        return None

    async def settle(
        self, keys: Sequence[str], slot: str, counters: Sequence[tuple[str, float]], tokens: int
    ) -> None:
        for key in keys:
            slots = self._slots.get(key)
            if slots is not None:
                slots.pop(slot, None)
                if not slots:
                    del self._slots[key]
        if tokens <= 0:
            return
        wall = time.time()
        for key, until in counters:
            used, kept_until = self._tokens.get(key, (0, 0.0))
            self._tokens[key] = (used + tokens if kept_until > wall else tokens, until)

    async def streams_open(self, keys: Sequence[str]) -> list[int]:
        now = _now()
        return [len(self._open(key, now)) for key in keys]

    async def tokens_used(self, keys: Sequence[str]) -> list[int]:
        wall = time.time()
        counts = []
        for key in keys:
            used, until = self._tokens.get(key, (0, 0.0))
            counts.append(used if until > wall else 0)
        return counts

    async def close(self) -> None:
        return None
