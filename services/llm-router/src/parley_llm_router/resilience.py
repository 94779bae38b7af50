"""Retry decisions, per-candidate concurrency limits, and the watchdog on a running stream.
The retry policy is pure.

Retries use exponential backoff with full jitter (a uniform draw between zero and the capped
exponential), honour a provider's ``Retry-After`` when it fits, and never sleep past the
caller's deadline: a wait that would not fit means moving on to the next candidate.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from parley_llm_router.providers.failures import ProviderFailure


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff with full jitter before trying the same candidate again (see the module
    docstring)."""

    base: float = 0.1
    cap: float = 2.0
    # Longest wait worth spending on the same candidate before trying the next one.
    max_wait: float = 2.0

    def wait_before_retry(
        self,
        failure: ProviderFailure,
        attempt: int,
        attempts_allowed: int,
        remaining: float | None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before trying the same candidate again, or None to move on.

        ``attempt`` counts from 1 (the attempt that just failed).
        """
        if not failure.retryable or attempt >= attempts_allowed:
            return None
        jitter = (rng or random).uniform(0, min(self.cap, self.base * 2 ** (attempt - 1)))
        wait = max(failure.retry_after, jitter) if failure.retry_after is not None else jitter
        if wait > self.max_wait:
            return None
        if remaining is not None and wait >= remaining * 0.5:
            # Leave at least half of what is left for the attempt itself.
            return None
        return wait


class Saturated(Exception):
    """Every slot of a candidate stayed busy for its whole queue timeout."""


class Bulkhead:
    """At most ``limit`` calls in flight to one candidate; others queue briefly."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)
        self.in_flight = 0

    async def acquire(self, queue_timeout: float) -> None:
        if self._slots.locked():  # a free slot is taken at once, without a timer
            try:
                async with asyncio.timeout(queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise Saturated from None
        else:
            await self._slots.acquire()
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()


class Watchdog:
    """Cuts a stream whose provider goes quiet.

    Between :meth:`waiting` and :meth:`received`, the task that made the watchdog (the one
    reading the stream) is cancelled once ``gap`` seconds pass, or at ``deadline`` (loop
    time), whichever is first; :meth:`expired` then tells that cancellation from any other.
    Time spent away from the provider (handing an event on) does not count towards the gap.

    One timer per stream, moved only when it fires: a token costs a clock read, not the
    timer ``asyncio.timeout`` would make and cancel around every read.
    """

    def __init__(self, gap: float, deadline: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None, "a watchdog watches the task that reads the stream"
        self._task = task
        self._cancelling = task.cancelling()
        self._gap = gap
        self._deadline = deadline
        self._since: float | None = None
        self._fired = False
        self._timer = self._loop.call_at(min(self._loop.time() + gap, deadline), self._check)

    def waiting(self) -> None:
        """A read from the provider begins; raises TimeoutError past the deadline."""
        now = self._loop.time()
        if now >= self._deadline:
            raise TimeoutError
        self._since = now

    def received(self) -> None:
        self._since = None

    def expired(self) -> bool:
        """Whether the current cancellation is this watchdog's (and not also another's)."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def close(self) -> None:
        self._timer.cancel()

    def _check(self) -> None:
        now = self._loop.time()
        if self._since is None:
            due = min(now + self._gap, self._deadline)
        else:
            due = min(self._since + self._gap, self._deadline)
            if now >= due:
                self._fired = True
                self._task.cancel()
                return
        self._timer = self._loop.call_at(due, self._check)
