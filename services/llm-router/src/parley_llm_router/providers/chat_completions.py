"""OpenAI's Chat Completions on the wire: the request body, and the streamed answer read as
server-sent events into the router's events. Shared by the OpenAI provider (through the SDK)
and the OpenAI-compatible one (over aiohttp)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    ProviderEvent,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from parley_llm_router.providers.failures import FailureKind, ProviderFailure
from parley_llm_router.providers.sse import sse_data
from parley_llm_router.tokens import estimate_messages, estimate_text

DRAIN_SECONDS = 0.5
_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def to_openai_message(message: Message) -> dict[str, Any]:
    """One router message in Chat Completions form."""
    if message.role == Role.TOOL:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.text}
    out: dict[str, Any] = {"role": message.role.value}
    if all(p.text is not None for p in message.parts):
        out["content"] = message.text
    else:
        out["content"] = [
            {"type": "text", "text": p.text}
            if p.text is not None
            else {"type": "image_url", "image_url": {"url": p.image_url}}
            for p in message.parts
        ]
    if message.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in message.tool_calls
        ]
        if not message.text:
            out["content"] = None
    if message.name and message.role == Role.USER:
        out["name"] = message.name
    return out


def request_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The Chat Completions parameters for ``request`` (without ``stream``)."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [to_openai_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": json.loads(t.parameters_json or "{}"),
                },
            }
            for t in request.tools
        ]
        if request.tool_choice in ("auto", "none", "required"):
            body["tool_choice"] = request.tool_choice
        elif request.tool_choice:
            body["tool_choice"] = {"type": "function", "function": {"name": request.tool_choice}}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    return body


@dataclass(slots=True)
class Body:
    """A provider's response body as it arrives.

    ``close(True)`` after the whole body was read (the connection may be reused),
    ``close(False)`` otherwise (it must not). ``on_end``, where the HTTP client can tell,
    registers a callback run as soon as the whole body has arrived, read or not.
    """

    chunks: AsyncIterator[bytes]
    close: Callable[[bool], Awaitable[None]]
    on_end: Callable[[Callable[[], None]], None] | None = None


# Paced reads wake on a grid of this step (see :class:`_Ticks`).
TICK_SECONDS = 0.01


class _Ticks:
    """The wake-ups of every paced stream of one event loop, on a grid of ``TICK_SECONDS``:
    one timer for all the streams whose hold ends in the same tick, and one wake-up of the
    loop for them, instead of a timer and a wake-up per stream and window."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[int, list[asyncio.Future[None]]] = {}

    def at(self, when: float) -> asyncio.Future[None]:
        """A future done at the first tick at or after ``when`` (loop time)."""
        tick = math.ceil(when / TICK_SECONDS)
        waiter: asyncio.Future[None] = self._loop.create_future()
        waiters = self._due.get(tick)
        if waiters is None:
            waiters = self._due[tick] = []
            self._loop.call_at(tick * TICK_SECONDS, self._fire, tick)
        waiters.append(waiter)
        return waiter

    def _fire(self, tick: int) -> None:
        for waiter in self._due.pop(tick, ()):
            _release(waiter)  # one released early (the body ended) or cancelled is skipped


_TICKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Ticks] = weakref.WeakKeyDictionary()


def _ticks(loop: asyncio.AbstractEventLoop) -> _Ticks:
    ticks = _TICKS.get(loop)
    if ticks is None:
        ticks = _TICKS[loop] = _Ticks(loop)
    return ticks


class _Hold:
    """Waits until a time (on the grid of :class:`_Ticks`), or less when the body has ended
    (see :func:`chat_stream`)."""

    def __init__(self, body: Body) -> None:
        self._loop = asyncio.get_running_loop()
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None
        if body.on_end is not None:
            body.on_end(self._end)

    def _end(self) -> None:
        self._ended = True
        _release(self._waiter)

    @property
    def ended(self) -> bool:
        """Whether the whole body has arrived."""
        return self._ended

    async def until(self, when: float) -> None:
        if self._ended or self._loop.time() >= when:
            return
        self._waiter = waiter = _ticks(self._loop).at(when)
        try:
            await waiter
        finally:
            self._waiter = None


def _release(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def streaming_body(model: str, request: ChatRequest) -> dict[str, Any]:
    """The Chat Completions body of a streamed request, asking for usage in the stream."""
    body = request_body(model, request)
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


async def chat_stream(
    open_body: Callable[[], Awaitable[Body]],
    request: ChatRequest,
    failure: Callable[[Exception], ProviderFailure],
    pace: float = 0.0,
) -> AsyncIterator[ProviderEvent]:
    """The router's events from a Chat Completions event stream: text and tool-call deltas,
    then one :class:`Finish` with the provider's usage (estimated when it sent none).

    ``open_body`` sends the request when the stream is first read, raising
    :class:`ProviderFailure` itself; ``failure`` translates what reading the body raises.
    Deltas that arrive in one network read leave as one delta: fewer messages downstream.

    With ``pace`` (seconds) and a body that tells its end, the body is read at most once a
    ``pace`` after the first delta (rounded up to the next 10 ms tick, shared by every stream
    of the loop): the tokens that arrive meanwhile wait in the connection's buffer and leave
    as one delta, so the router wakes once per ``pace`` instead of once per token. The first
    delta, and the end of the body, are read as soon as they arrive.
    """
    body = await open_body()
    hold = _Hold(body) if body.on_end is not None else None
    paced = hold if pace > 0 else None
    loop = asyncio.get_running_loop()
    usage: Usage | None = None
    reason = FinishReason.STOP
    produced: list[str] = []
    complete = False
    last_delta: float | None = None
    try:
        batches = sse_data(body.chunks)
        while True:
            if paced is not None and last_delta is not None:
                await paced.until(last_delta + pace)
            batch = await anext(batches, None)
            if batch is None:
                break
            text: list[str] = []
            done = False
            for data in batch:
                if data == b"[DONE]":
                    done = True
                    break
                chunk = orjson.loads(data)
                if "error" in chunk:
                    if text:  # what arrived before the error still reaches the caller
                        produced.extend(text)
                        yield TextDelta("".join(text))
                    raise ProviderFailure(
                        FailureKind.STREAM_BROKEN, "the provider reported an error mid-stream"
                    )
                if chunk.get("usage"):
                    usage = Usage(
                        input_tokens=int(chunk["usage"].get("prompt_tokens") or 0),
                        output_tokens=int(chunk["usage"].get("completion_tokens") or 0),
                    )
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        text.append(content)
                    for call in delta.get("tool_calls") or ():
                        if text:
                            produced.extend(text)
                            yield TextDelta("".join(text))
                            text = []
                        last_delta = loop.time()
                        function = call.get("function") or {}
                        yield ToolCallDelta(
                            index=int(call.get("index", 0)),
                            id=call.get("id") or "",
                            name=function.get("name") or "",
                            arguments_delta=function.get("arguments") or "",
                        )
                    if choice.get("finish_reason"):
                        reason = _FINISH.get(choice["finish_reason"], FinishReason.STOP)
            if text:
                produced.extend(text)
                last_delta = loop.time()
                yield TextDelta("".join(text))
            if done:
                complete = await _drain(batches, ended=hold is not None and hold.ended)
                break
    except ProviderFailure:
        raise
    except (ValueError, TypeError, AttributeError):  # not JSON, or JSON of another shape
        raise ProviderFailure(
            FailureKind.STREAM_BROKEN, "the provider sent a malformed stream"
        ) from None
    except Exception as error:
        raise failure(error) from None
    finally:
        # Closing the response closes the HTTP stream: a cancelled caller frees the
        # provider at once.
        await body.close(complete)
    if usage is None:
        usage = Usage(
            input_tokens=estimate_messages(request.messages, request.tools),
            output_tokens=estimate_text("".join(produced)),
            estimated=True,
        )
    yield Finish(reason, usage)


async def _drain(rest: AsyncIterator[object], *, ended: bool) -> bool:
    """Read what follows ``[DONE]`` (the end of the body, as a rule) so the connection goes
    back to the pool instead of being closed, and a new one, with its TLS handshake, opened
    for the next request; a server that keeps the stream open gets a bounded wait. True when
    the body ended. A body that has ``ended`` already is read without a timer."""
    if ended:
        async for _ in rest:
            pass
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in rest:
                pass
            return True
    return False
