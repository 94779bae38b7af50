"""A turn's events as its stream's messages (``wire.turn_events``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from parley_conversation import wire
from parley_conversation.conversations import Message, Role, Status, Usage
from parley_conversation.events import Done, Failure, TextDelta, TurnEvent, TurnFailed, UsageReport

ANSWER = Message(
    "msg_2", "conv_1", 2, Role.ASSISTANT, "Hi.", Status.COMPLETE, datetime(2026, 1, 1, tzinfo=UTC)
)
USED = Usage(12, 3, 0.001)


async def _from(*events: TurnEvent) -> AsyncIterator[TurnEvent]:
    for event in events:
        yield event


async def _messages(usage_with_done: bool, *events: TurnEvent) -> list[str]:
    got = [m async for m in wire.turn_events(_from(*events), usage_with_done)]
    return [m.WhichOneof("event") for m in got]


async def test_the_usage_rides_in_the_done_only_when_asked() -> None:
    events = (TextDelta("Hi."), UsageReport(USED), Done(ANSWER))
    assert await _messages(False, *events) == ["delta", "usage", "done"]
    assert await _messages(True, *events) == ["delta", "done"]
    done = [m async for m in wire.turn_events(_from(*events), True)][-1].done
    assert (done.usage.input_tokens, done.usage.output_tokens) == (12, 3)
    assert done.message.id == "msg_2"


async def test_a_usage_not_followed_by_its_done_still_goes_out() -> None:
    failed = TurnFailed(Failure("internal", "internal error", False), "msg_2")
    assert await _messages(True, UsageReport(USED), failed) == ["usage", "error"]
