"""The answer loop shared by both protocols: timing, drops, stalls, disconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from starlette.requests import Request

from parley_fakes.behaviour import Behaviour
from parley_fakes.recording import RecordedRequest

MAX_HANG_SECONDS = 600.0


class DroppedStream(Exception):
    """Raised inside a streaming body: the server closes the connection mid-response."""


class ErrorMidStream(Exception):
    """Raised inside a streaming body: the server reports an error in the stream and ends it."""


async def wait_for_disconnect(request: Request, record: RecordedRequest) -> None:
    """Hang until the client goes away (bounded), recording when it did."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MAX_HANG_SECONDS
    while loop.time() < deadline:
        if await request.is_disconnected():
            break
        await asyncio.sleep(0.01)
    record.end("disconnected")


async def paced_tokens(
    behaviour: Behaviour, record: RecordedRequest, tokens: list[str]
) -> AsyncIterator[tuple[int, str]]:
    """Yield (index, token) with the behaviour's timing; drop, stall or fail where it says."""
    if behaviour.ttft_ms:
        await asyncio.sleep(behaviour.ttft_ms / 1000)
    for index, token in enumerate(tokens):
        if behaviour.drop_after_tokens is not None and index >= behaviour.drop_after_tokens:
            record.end("dropped")
            raise DroppedStream
        if behaviour.error_after_tokens is not None and index >= behaviour.error_after_tokens:
            record.end("error")
            raise ErrorMidStream
        if behaviour.stall_after_tokens is not None and index >= behaviour.stall_after_tokens:
            await asyncio.sleep(MAX_HANG_SECONDS)
        if index and behaviour.token_delay_ms:
            await asyncio.sleep(behaviour.token_delay_ms / 1000)
        record.tokens_sent = index + 1
        yield index, token


async def recorded(
    body: AsyncIterator[bytes], record: RecordedRequest, on_end: Callable[[], None]
) -> AsyncIterator[bytes]:
    """Wrap a streaming body so its ending (complete, dropped, disconnected) is recorded."""
    try:
        async for chunk in body:
            yield chunk
        record.end("complete")
    except asyncio.CancelledError:
        record.end("disconnected")
        raise
    finally:
        on_end()
