"""How a stream of router events is cut into messages.

A provider sends a token every few tens of milliseconds, and every message costs CPU at each
hop it crosses (this router, the conversation service, the gateway, the client). With a
window, deltas that follow one another within it leave as one message: the first delta and
everything that is not a delta (start, finish, failure) leave at once, so time to first
token and the end of an answer are unchanged, and a later token waits at most the window.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from parley_llm_router.dispatch import RouterEvent
from parley_llm_router.messages import TextDelta, ToolCallDelta


def merge(earlier: RouterEvent, later: RouterEvent) -> RouterEvent | None:
    """One delta standing for two consecutive ones, or ``None`` when they cannot merge."""
    if isinstance(earlier, TextDelta) and isinstance(later, TextDelta):
        return TextDelta(earlier.text + later.text)
    if (
        isinstance(earlier, ToolCallDelta)
        and isinstance(later, ToolCallDelta)
        and later.index == earlier.index
        and not later.id
        and not later.name
    ):
        return ToolCallDelta(
            earlier.index, earlier.id, earlier.name, earlier.arguments_delta + later.arguments_delta
        )
    return None


_DELTAS = (TextDelta, ToolCallDelta)


async def coalesce(events: AsyncIterator[RouterEvent], window: float) -> AsyncIterator[RouterEvent]:
    """``events``, with deltas that arrive within ``window`` seconds of the last message
    merged into one (see the module docstring). ``window <= 0`` passes every event through.

    The source is read by a task of its own, so a flush is never held up by a pending read;
    closing this iterator (a cancelled caller) cancels that task and waits for it, which
    closes the provider's stream.
    """
    if window <= 0:
        async for event in events:
            yield event
        return
    loop = asyncio.get_running_loop()
    buffer: deque[RouterEvent] = deque()
    # Set when the buffer has something to send; a bare future wakes the reader of this
    # iterator for less than an ``asyncio.Event`` costs.
    ready = False
    waiter: asyncio.Future[None] | None = None
    last_flush = float("-inf")
    timer: asyncio.TimerHandle | None = None
    failure: BaseException | None = None
    finished = False

    def flush() -> None:
        nonlocal timer, last_flush, ready
        if timer is not None:
            timer.cancel()
            timer = None
        last_flush = loop.time()
        ready = True
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def pump() -> None:
        nonlocal timer, failure, finished
        try:
            async for event in events:
                merged = merge(buffer[-1], event) if buffer else None
                if merged is not None:
                    buffer[-1] = merged
                else:
                    buffer.append(event)
                urgent = not isinstance(event, _DELTAS)
                if urgent or loop.time() - last_flush >= window:
                    flush()
                elif timer is None and not ready:
                    timer = loop.call_at(last_flush + window, flush)
        except Exception as error:
            failure = error
        finally:
            finished = True
            flush()

    reader = asyncio.create_task(pump())
    try:
        while True:
            if not ready:
                waiter = loop.create_future()
                await waiter
                waiter = None
            ready = False
            while buffer:
                yield buffer.popleft()
            if finished and not buffer:
                break
        if failure is not None:
            raise failure
    finally:
        if timer is not None:
            timer.cancel()
        if not reader.done():
            reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
