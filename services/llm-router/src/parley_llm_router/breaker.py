"""Circuit breakers, one per provider and model.

A circuit is CLOSED while the candidate works. It OPENS after ``consecutive_failures`` in a
row, or when at least ``min_requests`` in the last ``window_seconds`` failed at
``error_rate`` or more. While OPEN the candidate is skipped; after ``cooldown_seconds`` it is
HALF_OPEN: one probe request at a time is let through; a success CLOSES it, a failure OPENS
it again. A probe that never reports (its caller vanished) frees its place after
``probe_timeout_seconds``.

Only failures that say something about the candidate's health count (timeouts, connection
errors, 429, 5xx, 529, broken streams); a rejected key or request does not.

:class:`Circuit` is the pure state machine; :class:`LocalBreakers` keeps circuits in this
process, and the Redis store (``adapters/redis_state.py``) shares them between replicas
with the same rules.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class BreakerState(StrEnum):
    """Where a circuit stands (see the module docstring)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Admission(StrEnum):
    """A circuit's answer to a call: let it through, let it probe, or skip the candidate."""

    ALLOW = "allow"
    PROBE = "probe"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    """When a circuit opens and how long it stays open (the ``BREAKER_*`` settings)."""

    consecutive_failures: int = 5
    window_seconds: float = 30.0
    min_requests: int = 20
    error_rate: float = 0.5
    cooldown_seconds: float = 15.0
    probe_timeout_seconds: float = 30.0


@dataclass
class Circuit:
    """One candidate's breaker (see the module docstring). ``now`` is monotonic seconds."""

    policy: BreakerPolicy
    state: BreakerState = BreakerState.CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probe_started: float | None = None
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)
    failures: int = 0  # failures among ``outcomes``, kept as they come and go

    def admit(self, now: float) -> Admission:
        if self.state == BreakerState.OPEN:
            if now - self.opened_at < self.policy.cooldown_seconds:
                return Admission.REJECT
            self.state = BreakerState.HALF_OPEN
            self.probe_started = None
        if self.state == BreakerState.HALF_OPEN:
            busy = self.probe_started is not None and (
                now - self.probe_started < self.policy.probe_timeout_seconds
            )
            if busy:
                return Admission.REJECT
            self.probe_started = now
            return Admission.PROBE
        return Admission.ALLOW

    def record(self, now: float, ok: bool) -> BreakerState:
        if self.state == BreakerState.HALF_OPEN:
            if ok:
                self._close()
            else:
                self._open(now)
            return self.state
        if self.state == BreakerState.OPEN:
            return self.state  # a straggler from before the circuit opened
        self.outcomes.append((now, ok))
        self.failures += not ok
        horizon = now - self.policy.window_seconds
        while self.outcomes and self.outcomes[0][0] < horizon:
            _, good = self.outcomes.popleft()
            self.failures -= not good
        self.consecutive = 0 if ok else self.consecutive + 1
        failures = self.failures
        total = len(self.outcomes)
        if self.consecutive >= self.policy.consecutive_failures or (
            total >= self.policy.min_requests and failures / total >= self.policy.error_rate
        ):
            self._open(now)
        return self.state

    def _open(self, now: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.probe_started = None

    def _close(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive = 0
        self.probe_started = None
        self.outcomes.clear()
        self.failures = 0


class Breakers(Protocol):
    """Where circuits live: in this process, or shared through Redis."""

    async def admit(self, key: str) -> Admission: ...

    async def record(self, key: str, ok: bool) -> BreakerState: ...

    async def state(self, key: str) -> BreakerState: ...


class LocalBreakers:
    """Circuits kept in this process (the embedded default, and when Redis is not set)."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self._circuits: dict[str, Circuit] = {}

    def _circuit(self, key: str) -> Circuit:
        circuit = self._circuits.get(key)
        if circuit is None:
            circuit = self._circuits[key] = Circuit(self.policy)
        return circuit

    async def admit(self, key: str) -> Admission:
        return self._circuit(key).admit(time.monotonic())

    async def record(self, key: str, ok: bool) -> BreakerState:
        return self._circuit(key).record(time.monotonic(), ok)

    async def state(self, key: str) -> BreakerState:
        circuit = self._circuit(key)
        if (
            circuit.state == BreakerState.OPEN
            and time.monotonic() - circuit.opened_at >= self.policy.cooldown_seconds
        ):
            return BreakerState.HALF_OPEN
        return circuit.state
