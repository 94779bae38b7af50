"""Anthropic's Messages API through the official ``anthropic`` SDK (retries off).

The Messages format differs from the router's in three ways handled here: the system prompt
is a separate parameter, ``max_tokens`` is required, and tool calls and results are content
blocks (``tool_use`` in assistant turns, ``tool_result`` in user turns) rather than fields.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import orjson

from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    Message,
    Part,
    ProviderEvent,
    Role,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from parley_llm_router.providers.base import Timeouts
from parley_llm_router.providers.failures import (
    FailureKind,
    ProviderFailure,
    failure_from_sdk,
    failure_mid_stream,
)
from parley_llm_router.providers.sse import sse_data

DEFAULT_MAX_TOKENS = 4096

_STOP = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}


def _image_block(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0] or "image/png"
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == Role.TOOL:
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}
        ]
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": p.text} if p.text is not None else _image_block(p.image_url or "")
        for p in message.parts
        if p.text or p.image_url
    ]
    for call in message.tool_calls:
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": json.loads(call.arguments_json or "{}"),
            }
        )
    return blocks


def to_anthropic(request: ChatRequest, model: str, max_tokens: int) -> dict[str, Any]:
    """The Messages API parameters for ``request`` (without ``stream``)."""
    system = "\n\n".join(m.text for m in request.messages if m.role == Role.SYSTEM)
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == Role.SYSTEM:
            continue
        role = "assistant" if message.role == Role.ASSISTANT else "user"
        blocks = _blocks(message)
        if turns and turns[-1]["role"] == role:
            # Tool results and the user text that follows them share one user turn.
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": request.max_tokens or max_tokens,
    }
    if system:
        body["system"] = system
    if request.tools:
        body["tools"] = [
            {
                "name": t.name,
                "description": t.description,
                "input_schema": json.loads(t.parameters_json or '{"type": "object"}'),
            }
            for t in request.tools
        ]
        choice = request.tool_choice
        if choice in ("", "auto"):
            body["tool_choice"] = {"type": "auto"}
        elif choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif choice == "none":
            body["tool_choice"] = {"type": "none"}
        else:
            body["tool_choice"] = {"type": "tool", "name": choice}
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)  # Anthropic's range is 0 to 1
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    return body


def from_anthropic(message: dict[str, Any]) -> tuple[Message, FinishReason, Usage]:
    """A complete Messages API response as the router's assistant message."""
    parts: list[Part] = []
    calls: list[ToolCall] = []
    for block in message.get("content", []):
        if block.get("type") == "text":
            parts.append(Part(text=block["text"]))
        elif block.get("type") == "tool_use":
            calls.append(ToolCall(block["id"], block["name"], json.dumps(block.get("input", {}))))
    usage = message.get("usage", {})
    return (
        Message(Role.ASSISTANT, tuple(parts), tuple(calls)),
        _STOP.get(message.get("stop_reason") or "end_turn", FinishReason.STOP),
        Usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0)),
    )


class AnthropicProvider:
    """Claude models over the Messages streaming API (see the module docstring)."""

    pace = 0.0  # every delta as it comes

    def __init__(
        self,
        *,
        name: str,
        api_key: str | None,
        base_url: str | None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.name = name
        self.max_tokens = max_tokens
        # aiohttp's C HTTP parser, as for OpenAI: cheaper per chunk than the pure-Python
        # HTTP/1.1 stack.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key or "not-set",
            base_url=base_url,
            max_retries=0,
            http_client=anthropic.DefaultAioHttpClient(
                limits=httpx2.Limits(max_connections=4096, max_keepalive_connections=512)
            ),
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]:
        # The SDK sends the request and raises its typed errors; the events are read as
        # plain JSON, as for OpenAI: an SDK object per event cost more CPU than the rest of
        # the router's work on a stream.
        body = to_anthropic(request, model, self.max_tokens)
        body["stream"] = True
        try:
            response = await self._client.post(
                "/v1/messages",
                cast_to=httpx2.Response,
                body=body,
                options={"timeout": httpx2.Timeout(timeouts.total, connect=timeouts.connect)},
                stream=True,
            )
        except Exception as error:
            raise failure_from_sdk(error, anthropic) from None
        usage = Usage()
        reason = FinishReason.STOP
        tool_index: dict[int, int] = {}  # content block index -> tool call index
        try:
            async for batch in sse_data(response.aiter_bytes()):
                text: list[str] = []
                for data in batch:
                    event = orjson.loads(data)
                    kind = event["type"]
                    if kind == "content_block_delta":
                        delta = event["delta"]
                        if delta["type"] == "text_delta":
                            text.append(delta["text"])
                        elif delta["type"] == "input_json_delta" and event["index"] in tool_index:
                            if text:
                                yield TextDelta("".join(text))
                                text = []
                            yield ToolCallDelta(
                                tool_index[event["index"]], arguments_delta=delta["partial_json"]
                            )
                    elif kind == "message_start":
                        started = event["message"].get("usage") or {}
                        usage.input_tokens = int(started.get("input_tokens") or 0)
                        usage.output_tokens = int(started.get("output_tokens") or 0)
                    elif kind == "content_block_start":
                        block = event["content_block"]
                        if block["type"] == "tool_use":
                            if text:
                                yield TextDelta("".join(text))
                                text = []
                            tool_index[event["index"]] = len(tool_index)
                            yield ToolCallDelta(
                                tool_index[event["index"]], block["id"], block["name"], ""
                            )
                    elif kind == "message_delta":
                        stop = (event.get("delta") or {}).get("stop_reason")
                        if stop:
                            reason = _STOP.get(stop, FinishReason.STOP)
                        counted = event.get("usage") or {}
                        if counted.get("input_tokens"):
                            usage.input_tokens = int(counted["input_tokens"])
                        usage.output_tokens = int(counted.get("output_tokens") or 0)
                    elif kind == "error":
                        if text:  # what arrived before the error still reaches the caller
                            yield TextDelta("".join(text))
                        raise _stream_error(event.get("error") or {})
                if text and (joined := "".join(text)):
                    yield TextDelta(joined)
        except ProviderFailure:
            raise
        except (ValueError, TypeError, KeyError, AttributeError):  # not the events' shape
            raise ProviderFailure(
                FailureKind.STREAM_BROKEN, "the provider sent a malformed stream"
            ) from None
        except Exception as error:
            raise failure_mid_stream(error, anthropic) from None
        finally:
            # Closing the response closes the HTTP stream: a cancelled caller frees the
            # provider at once.
            await response.aclose()
        yield Finish(reason, usage)


# The ``error`` event's types (Anthropic's error reference) as failure kinds.
_ERRORS = {
    "overloaded_error": FailureKind.OVERLOADED,
    "rate_limit_error": FailureKind.RATE_LIMITED,
    "api_error": FailureKind.UNAVAILABLE,
    "timeout_error": FailureKind.TIMEOUT,
    "authentication_error": FailureKind.AUTH,
    "permission_error": FailureKind.AUTH,
    "invalid_request_error": FailureKind.BAD_REQUEST,
    "request_too_large": FailureKind.BAD_REQUEST,
    "not_found_error": FailureKind.BAD_REQUEST,
}


def _stream_error(error: dict[str, Any]) -> ProviderFailure:
    """An ``error`` event in the stream; its message is not copied (it may echo input)."""
    kind = error.get("type")
    if kind not in _ERRORS:
        return ProviderFailure(
            FailureKind.STREAM_BROKEN, "the provider reported an error mid-stream"
        )
    return ProviderFailure(_ERRORS[kind], f"the provider reported {kind} mid-stream")
