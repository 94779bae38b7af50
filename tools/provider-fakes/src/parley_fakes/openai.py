"""OpenAI's Chat Completions (and a little of its surface) as a fake provider.

Azure OpenAI's deployment paths answer the same, once the request names an ``api-version``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from parley_fakes.behaviour import Behaviour
from parley_fakes.recording import RecordedRequest
from parley_fakes.streaming import ErrorMidStream, paced_tokens

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    429: "rate_limit_exceeded",
    529: "overloaded",
}


def error_response(status: int, retry_after: float | None) -> JSONResponse:
    kind = ERROR_TYPES.get(status, "server_error")
    headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
    return JSONResponse(
        {"error": {"message": f"fake {kind}", "type": kind, "param": None, "code": kind}},
        status_code=status,
        headers=headers,
    )


def azure_not_found() -> JSONResponse:
    """Azure OpenAI's answer to a deployment path without ``api-version``."""
    return JSONResponse(
        {"error": {"code": "404", "message": "Resource not found"}}, status_code=404
    )


def prompt_tokens(body: dict[str, Any]) -> int:
    text = json.dumps(body.get("messages", []))
    return max(1, len(text) // 4)


def _chunk(cid: str, model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    payload = {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def wants_tool(behaviour: Behaviour, body: dict[str, Any]) -> bool:
    return bool(behaviour.calls()) and bool(body.get("tools"))


async def stream(
    behaviour: Behaviour, body: dict[str, Any], record: RecordedRequest
) -> AsyncIterator[bytes]:
    cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
    model = str(body.get("model", "fake"))
    tool = wants_tool(behaviour, body)
    calls = behaviour.call_pieces() if tool else []
    names = [name for name, _ in behaviour.calls()]
    pieces = [piece for _, piece in calls] if tool else behaviour.answer_tokens()
    first = True
    try:
        async for index, piece in paced_tokens(behaviour, record, pieces):
            if tool:
                number = calls[index][0]
                call: dict[str, Any] = {"index": number, "function": {"arguments": piece}}
                if index == 0 or calls[index - 1][0] != number:
                    call |= {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function"}
                    call["function"]["name"] = names[number]
                delta: dict[str, Any] = {"tool_calls": [call]}
            else:
                delta = {"content": piece}
            if first:
                delta["role"] = "assistant"
                first = False
            yield _chunk(cid, model, delta)
    except ErrorMidStream:
        error = {"message": "fake server_error", "type": "server_error", "param": None}
        yield b"data: " + json.dumps({"error": error | {"code": None}}).encode() + b"\n\n"
        return
    yield _chunk(cid, model, {}, "tool_calls" if tool else "stop")
    options = body.get("stream_options") or {}
    if behaviour.report_usage and options.get("include_usage"):
        usage = {
            "prompt_tokens": prompt_tokens(body),
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens(body) + len(pieces),
        }
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }
        yield b"data: " + json.dumps(payload).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"
    if behaviour.end_delay_ms:
        await asyncio.sleep(behaviour.end_delay_ms / 1000)


async def complete(behaviour: Behaviour, body: dict[str, Any], record: RecordedRequest) -> Response:
    tool = wants_tool(behaviour, body)
    pieces = [p for _, p in behaviour.call_pieces()] if tool else behaviour.answer_tokens()
    async for _ in paced_tokens(behaviour, record, pieces):
        pass
    message: dict[str, Any] = {"role": "assistant", "content": None if tool else "".join(pieces)}
    if tool:
        message["tool_calls"] = [
            {
                "id": f"call_{uuid.uuid4().hex[:8]}",
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(arguments)},
            }
            for name, arguments in behaviour.calls()
        ]
    record.end("complete")
    result: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [
            {"index": 0, "message": message, "finish_reason": "tool_calls" if tool else "stop"}
        ],
    }
    if behaviour.report_usage:
        result["usage"] = {
            "prompt_tokens": prompt_tokens(body),
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens(body) + len(pieces),
        }
    return JSONResponse(result)


def embeddings(body: dict[str, Any], dimensions: int) -> Response:
    """Deterministic unit vectors derived from each text's hash."""
    import hashlib
    import math

    inputs = body.get("input", [])
    texts = [inputs] if isinstance(inputs, str) else list(inputs)
    data = []
    for index, text in enumerate(texts):
        digest = hashlib.sha256(str(text).encode()).digest()
        raw = [digest[i % len(digest)] / 255 - 0.5 for i in range(dimensions)]
        norm = math.sqrt(sum(x * x for x in raw)) or 1.0
        data.append({"object": "embedding", "index": index, "embedding": [x / norm for x in raw]})
    tokens = sum(max(1, len(str(t)) // 4) for t in texts)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body.get("model", "fake-embedding"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def streaming_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream")


async def read_json(request: Request) -> dict[str, Any] | None:
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
