"""llm-router's replies in OpenAI's shapes: a completion, the chunks of a streamed one, the
model list, embeddings.

A completion names the model alias the caller asked for (the provider behind it is the
router's business, shown by Parley's own ``/v1/models``). A streamed completion is a run of
``data:`` lines of ``chat.completion.chunk`` objects, then ``data: [DONE]``: :class:`Chunks`
encodes each from templates built once per stream, as a streamed answer's cost on the way
out is mostly this encoding. The pydantic models at the end document the shapes in OpenAPI.
"""

from __future__ import annotations

import base64
import json
import sys
from array import array
from typing import Any, Literal

from pydantic import BaseModel

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as llm
from parley_gateway.openai_errors import body, parley_error_body
from parley_runtime.errors import ParleyError

# Compact and ASCII-escaped: a chunk's JSON never holds a line break, so one ``data:`` line
# carries it whole (as in sse.py).
_json = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode

DONE = b"data: [DONE]\n\n"
# A short streamed completion as it goes on the wire, for OpenAPI.
STREAM_EXAMPLE = (
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,'
    '"model":"default","system_fingerprint":null,"choices":[{"index":0,"delta":'
    '{"role":"assistant","content":"Hello"},"logprobs":null,"finish_reason":null}]}\n\n'
    'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1767225600,'
    '"model":"default","system_fingerprint":null,"choices":[{"index":0,"delta":{},'
    '"logprobs":null,"finish_reason":"stop"}]}\n\n'
    "data: [DONE]\n\n"
)

_FINISH_REASON = {
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_TOOL_CALLS: "tool_calls",
    common_pb2.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def finish_reason(value: common_pb2.FinishReason.ValueType) -> str:
    """OpenAI's finish reason; what OpenAI has no name for ended the answer: ``stop``."""
    return _FINISH_REASON.get(value, "stop")


def usage(value: common_pb2.Usage) -> dict[str, int]:
    return {
        "prompt_tokens": value.input_tokens,
        "completion_tokens": value.output_tokens,
        "total_tokens": value.input_tokens + value.output_tokens,
    }


def completion(
    reply: llm.ChatResponse, text: str, *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """A ``chat.completion`` of one choice: ``text`` (the reply's, as it may be shown) and
    the reply's tool calls."""
    answer = reply.message
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not answer.tool_calls else None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json},
            }
            for call in answer.tool_calls
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(reply.finish_reason),
            }
        ],
        "usage": usage(reply.usage),
    }


def error_data(error: ParleyError) -> bytes:
    """The ``data:`` line of an error that ends a stream once it has started, as OpenAI
    sends it (the SDK raises ``APIError`` on it)."""
    return b"data: " + _json(parley_error_body(error)).encode() + b"\n\n"


def stream_error_data(code: str, message: str) -> bytes:
    """The ``data:`` line of a provider failure that broke a stream (llm-router's event)."""
    return b"data: " + _json(body(502, message, code)).encode() + b"\n\n"


class Chunks:
    """The chunks of one streamed completion, each as the bytes of its ``data:`` line.

    The first chunk carries ``"role": "assistant"``; with ``include_usage`` every chunk has
    ``"usage": null`` and the usage comes in a last chunk whose ``choices`` are empty, as
    OpenAI sends them.
    """

    def __init__(self, completion_id: str, created: int, model: str, include_usage: bool) -> None:
        head = _json(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": None,
            }
        )[:-1]
        self._head = head
        self._open = f'data: {head},"choices":[{{"index":0,"delta":'.encode()
        self._usage = ',"usage":null' if include_usage else ""
        self._close = f',"logprobs":null,"finish_reason":null}}]{self._usage}}}\n\n'.encode()
        self.include_usage = include_usage
        self.opened = False

    def _delta(self, delta: dict[str, Any]) -> bytes:
        if not self.opened:
            self.opened = True
            delta = {"role": "assistant", "content": None, **delta}
        return self._open + _json(delta).encode() + self._close

    def text(self, text: str) -> bytes:
        if self.opened:
            return self._open + b'{"content":' + _json(text).encode() + b"}" + self._close
        return self._delta({"content": text})

    def tool_call(self, piece: llm.ToolCallDelta) -> bytes:
        call: dict[str, Any] = {"index": piece.index}
        if piece.id:
            call["id"] = piece.id
            call["type"] = "function"
        function: dict[str, str] = {}
        if piece.name:
            function["name"] = piece.name
        function["arguments"] = piece.arguments_delta
        call["function"] = function
        return self._delta({"tool_calls": [call]})

    def finish(self, finish: llm.ChatFinish) -> bytes:
        """The last chunks: the finish reason, the usage if asked, and ``[DONE]``."""
        delta = b"{}" if self.opened else b'{"role":"assistant","content":""}'
        reason = finish_reason(finish.finish_reason)
        end = (
            self._open
            + delta
            + f',"logprobs":null,"finish_reason":"{reason}"}}]{self._usage}}}\n\n'.encode()
        )
        if self.include_usage:
            totals = _json(usage(finish.usage))
            end += f'data: {self._head},"choices":[],"usage":{totals}}}\n\n'.encode()
        return end + DONE


def model(info: llm.ModelInfo) -> dict[str, Any]:
    """One alias as an OpenAI ``model``; ``created`` is 0, as an alias has no date."""
    return {
        "id": info.alias,
        "object": "model",
        "created": 0,
        "owned_by": "parley",
        "context_window": info.context_window,
        "max_output_tokens": info.max_output_tokens,
    }


def model_list(listed: llm.ListModelsResponse) -> dict[str, Any]:
    return {"object": "list", "data": [model(m) for m in listed.models]}


def _base64(values: Any) -> str:
    """Little-endian float32, base64-encoded, as OpenAI's ``encoding_format: base64``."""
    packed = array("f", values)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode()


def embeddings(reply: llm.EmbedResponse, *, model: str, encoding_format: str) -> dict[str, Any]:
    """An OpenAI embedding list, vectors in input order."""
    encode = _base64 if encoding_format == "base64" else list
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": index, "embedding": encode(vector.values)}
            for index, vector in enumerate(reply.embeddings)
        ],
        "model": model,
        "usage": {
            "prompt_tokens": reply.usage.input_tokens,
            "total_tokens": reply.usage.input_tokens,
        },
    }


# The shapes above, for OpenAPI.


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str


class ToolCall(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCall


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    tool_calls: list[ToolCall] | None = None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: None = None
    finish_reason: Literal["stop", "length", "tool_calls", "content_filter"]


class ChatCompletion(BaseModel):
    """A completion; streamed (``stream: true``), the same answer comes as
    ``chat.completion.chunk`` objects, one ``data:`` line each, then ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: None = None
    choices: list[Choice]
    usage: Usage


class Model(BaseModel):
    """A model alias."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    context_window: int
    max_output_tokens: int


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[Model]


class Embedding(BaseModel):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
