"""Cutting a stream of router events into messages: deltas within a window leave as one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from parley_llm_router.dispatch import RouterEvent, Started
from parley_llm_router.framing import coalesce, merge
from parley_llm_router.messages import Finish, FinishReason, TextDelta, ToolCallDelta, Usage
from parley_llm_router.routing import Candidate

START = Started(Candidate("openai", "gpt-fake"))
FINISH = Finish(FinishReason.STOP, Usage(3, 4))


async def source(
    *steps: RouterEvent | float, closed: list[bool] | None = None
) -> AsyncIterator[RouterEvent]:
    """Events, with a float meaning: pause that many seconds first."""
    try:
        for step in steps:
            if isinstance(step, float):
                await asyncio.sleep(step)
            else:
                yield step
    finally:
        if closed is not None:
            closed.append(True)


async def timed(events: AsyncIterator[RouterEvent]) -> list[tuple[float, RouterEvent]]:
    started = time.perf_counter()
    return [(time.perf_counter() - started, event) async for event in events]


async def test_deltas_within_the_window_leave_as_one_and_the_first_at_once() -> None:
    steps: list[RouterEvent | float] = [START, TextDelta("Hel")]
    for piece in ("lo", ", ", "wor", "ld"):
        steps += [0.01, TextDelta(piece)]
    got = await timed(coalesce(source(*steps, 0.01, FINISH), 0.1))
    events = [event for _, event in got]
    assert events == [START, TextDelta("Hel"), TextDelta("lo, world"), FINISH]
    assert got[1][0] < 0.05  # the first delta is not held for the 100 ms window
    # the finish is not held for the window either: it leaves with the merged delta
    assert got[3][0] - got[2][0] < 0.01


async def test_a_delta_waits_at_most_the_window_when_the_provider_pauses() -> None:
    got = await timed(
        coalesce(source(START, TextDelta("a"), 0.005, TextDelta("b"), 0.5, FINISH), 0.05)
    )
    assert [e for _, e in got] == [START, TextDelta("a"), TextDelta("b"), FINISH]
    assert 0.03 < got[2][0] < 0.2  # "b" left at the window, not with the finish
    assert got[3][0] > 0.45


async def test_without_a_window_every_event_passes_alone() -> None:
    steps = (START, TextDelta("a"), TextDelta("b"), FINISH)
    assert [e async for e in coalesce(source(*steps), 0.0)] == list(steps)


async def test_events_before_a_failure_arrive_then_the_failure_is_raised() -> None:
    async def failing() -> AsyncIterator[RouterEvent]:
        yield START
        yield TextDelta("partial")
        raise RuntimeError("provider gone")

    received: list[RouterEvent] = []
    with pytest.raises(RuntimeError, match="provider gone"):
        async for event in coalesce(failing(), 0.05):
            received.append(event)
    assert received == [START, TextDelta("partial")]


async def test_a_caller_that_stops_reading_closes_the_source() -> None:
    closed: list[bool] = []
    stream = coalesce(source(START, TextDelta("a"), 30.0, FINISH, closed=closed), 0.05)
    assert await anext(stream) == START
    assert await anext(stream) == TextDelta("a")
    started = time.perf_counter()
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed == [True]
    assert time.perf_counter() - started < 0.1


async def test_a_cancelled_caller_closes_the_source() -> None:
    closed: list[bool] = []

    async def read() -> None:
        async for _ in coalesce(source(START, 30.0, FINISH, closed=closed), 0.05):
            pass

    task = asyncio.create_task(read())
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert closed == [True]


def test_tool_call_pieces_of_one_call_merge_and_a_new_call_does_not() -> None:
    first = ToolCallDelta(0, "call_1", "lookup", '{"q"')
    more = ToolCallDelta(0, "", "", ': "x"}')
    assert merge(first, more) == ToolCallDelta(0, "call_1", "lookup", '{"q": "x"}')
    assert merge(first, ToolCallDelta(1, "call_2", "other", "{}")) is None
    assert merge(TextDelta("a"), first) is None
    assert merge(START, TextDelta("a")) is None
