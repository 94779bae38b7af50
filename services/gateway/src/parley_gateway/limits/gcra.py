"""The generic cell rate algorithm (GCRA), on integer microseconds.

One number per limit, its theoretical arrival time (TAT): when the limit would be whole again
if no request came. A request at ``now`` moves it to ``max(TAT, now) + interval`` and passes
when that is at most ``burst * interval`` ahead of ``now``. So ``burst`` requests may go at
once, then one per ``interval``; nothing is stored per request and nothing needs a sweep.

The requests of several limits at once (an API key's, its user's, its tenant's) pass all or
none: a request one limit refuses uses nothing of the others. The Redis store runs the same
steps in Lua (``redis_store.py``); this module is the in-process store's, and the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MICROS = 1_000_000


@dataclass(frozen=True, slots=True)
class Meter:
    """A rate as GCRA reads it: microseconds between requests, and how many may go at once."""

    interval: int
    burst: int

    @property
    def tolerance(self) -> int:
        return self.interval * self.burst


@dataclass(frozen=True, slots=True)
class Tally:
    """Where one limit stands after a request: requests left now, microseconds until it is
    whole again, and until the refused request would pass (0 when it passed)."""

    remaining: int
    reset: int
    retry_after: int


def take(
    tats: Sequence[int | None], meters: Sequence[Meter], now: int
) -> tuple[bool, list[int], list[Tally]]:
    """One request against every meter: whether it passes, the TATs to store when it does,
    and each meter's tally."""
    current = [now if tat is None or tat < now else tat for tat in tats]
    after = [tat + m.interval for tat, m in zip(current, meters, strict=True)]
    passed = all(new - m.tolerance <= now for new, m in zip(after, meters, strict=True))
    tallies = []
    for tat, new, m in zip(current, after, meters, strict=True):
        if passed:
            tallies.append(Tally((m.tolerance - (new - now)) // m.interval, new - now, 0))
        else:
            left = max(0, (m.tolerance - (tat - now)) // m.interval)
            tallies.append(Tally(left, tat - now, max(0, new - m.tolerance - now)))
    return passed, after, tallies


def peek(tat: int | None, meter: Meter, now: int) -> Tally:
    """Where one limit stands, without a request."""
    current = now if tat is None or tat < now else tat
    return Tally(max(0, (meter.tolerance - (current - now)) // meter.interval), current - now, 0)
