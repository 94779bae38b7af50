"""Anthropic's Messages API (streaming events and plain responses) as a fake provider."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import JSONResponse, Response

from parley_fakes.behaviour import Behaviour
from parley_fakes.recording import RecordedRequest
from parley_fakes.streaming import ErrorMidStream, paced_tokens

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_response(status: int, retry_after: float | None, message: str = "") -> JSONResponse:
    kind = ERROR_TYPES.get(status, "api_error")
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return JSONResponse(
        {"type": "error", "error": {"type": kind, "message": message or f"fake {kind}"}},
        status_code=status,
        headers=headers,
    )


def check(body: dict[str, Any], headers: dict[str, str]) -> JSONResponse | None:
    """Anthropic's own request checks that clients most often trip on."""
    if "x-api-key" not in headers and "authorization" not in headers:
        return error_response(401, None, "x-api-key header is required")
    if "anthropic-version" not in headers:
        return error_response(400, None, "anthropic-version header is required")
    if not isinstance(body.get("max_tokens"), int):
        return error_response(400, None, "max_tokens: Field required")
    if any(m.get("role") == "system" for m in body.get("messages", [])):
        return error_response(400, None, "messages: system is not a valid role; use system")
    return None


def input_tokens(body: dict[str, Any]) -> int:
    return max(1, len(json.dumps([body.get("system"), body.get("messages")])) // 4)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _wants_tool(behaviour: Behaviour, body: dict[str, Any]) -> bool:
    return bool(behaviour.calls()) and bool(body.get("tools"))


def _tool_block(name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:8]}", "name": name, "input": {}}


async def stream(
    behaviour: Behaviour, body: dict[str, Any], record: RecordedRequest
) -> AsyncIterator[bytes]:
    model = str(body.get("model", "fake"))
    tool = _wants_tool(behaviour, body)
    # One content block per tool call, each its arguments' pieces; else one text block.
    calls = behaviour.call_pieces() if tool else []
    names = [name for name, _ in behaviour.calls()]
    pieces = [piece for _, piece in calls] if tool else behaviour.answer_tokens()
    limit = int(body.get("max_tokens", 4096))
    stop = "tool_use" if tool else "end_turn"
    if not tool and len(pieces) > limit:
        pieces, stop = pieces[:limit], "max_tokens"
    yield _event(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": f"msg_{uuid.uuid4().hex[:12]}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens(body), "output_tokens": 1},
            },
        },
    )
    block = _tool_block(names[0]) if tool else {"type": "text", "text": ""}
    yield _event(
        "content_block_start", {"type": "content_block_start", "index": 0, "content_block": block}
    )
    yield _event("ping", {"type": "ping"})
    current = 0
    try:
        async for index, piece in paced_tokens(behaviour, record, pieces):
            if tool and calls[index][0] != current:
                yield _event("content_block_stop", {"type": "content_block_stop", "index": current})
                current = calls[index][0]
                yield _event(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": current,
                        "content_block": _tool_block(names[current]),
                    },
                )
            delta = (
                {"type": "input_json_delta", "partial_json": piece}
                if tool
                else {"type": "text_delta", "text": piece}
            )
            yield _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": current, "delta": delta},
            )
    except ErrorMidStream:
        error = {"type": "overloaded_error", "message": "Overloaded"}
        yield _event("error", {"type": "error", "error": error})
        return
    yield _event("content_block_stop", {"type": "content_block_stop", "index": current})
    yield _event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": {"output_tokens": len(pieces)},
        },
    )
    yield _event("message_stop", {"type": "message_stop"})


async def complete(behaviour: Behaviour, body: dict[str, Any], record: RecordedRequest) -> Response:
    tool = _wants_tool(behaviour, body)
    pieces = [p for _, p in behaviour.call_pieces()] if tool else behaviour.answer_tokens()
    async for _ in paced_tokens(behaviour, record, pieces):
        pass
    content: list[dict[str, Any]] = (
        [_tool_block(name) | {"input": arguments} for name, arguments in behaviour.calls()]
        if tool
        else [{"type": "text", "text": "".join(pieces)}]
    )
    record.end("complete")
    return JSONResponse(
        {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "content": content,
            "stop_reason": "tool_use" if tool else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens(body), "output_tokens": len(pieces)},
        }
    )
