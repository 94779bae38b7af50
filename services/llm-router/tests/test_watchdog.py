"""The watchdog on a running stream: the gap counts only while reading from the provider, the
deadline always, and its cancellation is told apart from any other."""

from __future__ import annotations

import asyncio

import pytest

from parley_llm_router.resilience import Watchdog


async def test_a_silent_read_is_cut_after_the_gap() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(gap=0.05, deadline=loop.time() + 10)
    started = loop.time()
    watchdog.waiting()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.sleep(1)
    assert watchdog.expired()
    assert 0.045 <= loop.time() - started < 0.2
    watchdog.close()


async def test_time_away_from_the_provider_does_not_count() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(gap=0.05, deadline=loop.time() + 10)
    for _ in range(3):
        watchdog.waiting()
        await asyncio.sleep(0.02)  # a token comes within the gap
        watchdog.received()
        await asyncio.sleep(0.08)  # the consumer is slow: longer than the gap, not counted
    watchdog.close()


async def test_the_deadline_cuts_a_stream_that_never_goes_silent() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(gap=0.05, deadline=loop.time() + 0.12)
    reads = 0
    with pytest.raises(asyncio.CancelledError):
        while True:
            watchdog.waiting()
            await asyncio.sleep(0.02)
            watchdog.received()
            reads += 1
    assert watchdog.expired()
    assert 4 <= reads <= 6
    watchdog.close()


async def test_a_read_begun_past_the_deadline_times_out_at_once() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(gap=10, deadline=loop.time() + 0.01)
    await asyncio.sleep(0.02)
    with pytest.raises(TimeoutError):
        watchdog.waiting()
    watchdog.close()


async def test_another_cancellation_is_not_taken_for_a_timeout() -> None:
    async def read() -> bool:
        loop = asyncio.get_running_loop()
        watchdog = Watchdog(gap=0.05, deadline=loop.time() + 10)
        watchdog.waiting()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return watchdog.expired()
        finally:
            watchdog.close()
        return False

    task = asyncio.create_task(read())
    await asyncio.sleep(0.01)
    task.cancel()
    assert await task is False


async def test_a_closed_watchdog_cancels_nothing() -> None:
    loop = asyncio.get_running_loop()
    watchdog = Watchdog(gap=0.02, deadline=loop.time() + 10)
    watchdog.waiting()
    watchdog.close()
    await asyncio.sleep(0.06)
