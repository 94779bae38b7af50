"""Retry decisions and per-candidate concurrency limits. The retry policy is pure.

Retries use exponential backoff with full jitter (a uniform draw between zero and the capped
exponential), honour a provider's ``Retry-After`` when it fits, and never sleep past the
caller's deadline: a wait that would not fit means moving on to the next candidate.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from parley_llm_router.providers.base import ProviderFailure


@dataclass(frozen=True, slots=True)
class RetryPolicy:
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
        try:
            async with asyncio.timeout(queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise Saturated from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        self._slots.release()
