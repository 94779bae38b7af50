"""The router's messages to and from each provider's format, without a network."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

from parley_llm_router.messages import (
    ChatRequest,
    FinishReason,
    Message,
    Part,
    Role,
    Tool,
    ToolCall,
)
from parley_llm_router.providers.anthropic import from_anthropic, to_anthropic
from parley_llm_router.providers.chat_completions import request_body, to_openai_message
from parley_llm_router.providers.sse import sse_data

CALL = ToolCall("call_1", "lookup", '{"q": "leave"}')
CONVERSATION = (
    Message(Role.SYSTEM, (Part(text="Be brief."),)),
    Message(Role.USER, (Part(text="What is this?"), Part(image_url="data:image/png;base64,AAAA"))),
    Message(Role.ASSISTANT, (), (CALL,)),
    Message(Role.TOOL, (Part(text="25 days"),), tool_call_id="call_1"),
    Message(Role.USER, (Part(text="Thanks, and travel?"),)),
)
TOOLS = (Tool("lookup", "Search", '{"type": "object", "properties": {"q": {"type": "string"}}}'),)


def test_openai_messages_keep_parts_tool_calls_and_results() -> None:
    sent = [to_openai_message(m) for m in CONVERSATION]
    assert sent[0] == {"role": "system", "content": "Be brief."}
    assert sent[1]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
    assert sent[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "lookup", "arguments": '{"q": "leave"}'}}
        ],
    }  # fmt: skip
    assert sent[3] == {"role": "tool", "tool_call_id": "call_1", "content": "25 days"}


def test_openai_request_carries_tools_choice_and_sampling() -> None:
    body = request_body(
        "gpt",
        ChatRequest(
            messages=CONVERSATION[:2],
            tools=TOOLS,
            tool_choice="lookup",
            temperature=0.2,
            max_tokens=50,
            stop=("END",),
        ),
    )
    assert body["tools"][0]["function"]["parameters"]["properties"]["q"] == {"type": "string"}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert (body["temperature"], body["max_tokens"], body["stop"]) == (0.2, 50, ["END"])


def test_anthropic_request_moves_the_system_prompt_and_uses_blocks() -> None:
    body = to_anthropic(
        ChatRequest(messages=CONVERSATION, tools=TOOLS, tool_choice="required"), "claude", 4096
    )
    assert body["system"] == "Be brief."
    assert body["max_tokens"] == 4096
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    image = body["messages"][0]["content"][1]
    assert image == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "leave"}}
    ]
    # The tool result and the next user text share one user turn, result first.
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "25 days"},
        {"type": "text", "text": "Thanks, and travel?"},
    ]
    assert body["tools"][0]["input_schema"]["properties"]["q"] == {"type": "string"}
    assert body["tool_choice"] == {"type": "any"}


def test_anthropic_temperature_is_capped_to_its_range() -> None:
    body = to_anthropic(ChatRequest(messages=CONVERSATION[1:2], temperature=1.7), "claude", 10)
    assert body["temperature"] == 1.0


def test_anthropic_responses_come_back_as_router_messages() -> None:
    message, reason, usage = from_anthropic(
        {
            "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 12, "output_tokens": 7},
        }
    )
    assert message.text == "Let me look."
    assert message.tool_calls == (ToolCall("toolu_1", "lookup", json.dumps({"q": "x"})),)
    assert reason == FinishReason.TOOL_CALLS
    assert (usage.input_tokens, usage.output_tokens) == (12, 7)
    for stop, expected in [
        ("end_turn", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("stop_sequence", FinishReason.STOP),
        ("refusal", FinishReason.CONTENT_FILTER),
    ]:
        assert from_anthropic({"content": [], "stop_reason": stop})[1] == expected


async def _reads(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


async def test_server_sent_events_are_split_per_read_whatever_the_framing() -> None:
    batches = [
        batch
        async for batch in sse_data(
            _reads(
                b'data: {"a": 1}\n\ndata: {"b"',  # one event, then half of the next
                b": 2}\r\n\r\n: a comment\n\nevent: x\ndata: line one\ndata: line two\n\n",
                b"data:[DONE]\n",
                b"\n",
            )
        )
    ]
    assert batches == [
        [b'{"a": 1}'],
        [b'{"b": 2}', b"line one\nline two"],
        [b"[DONE]"],
    ]


async def test_an_event_cut_by_the_end_of_the_stream_is_still_delivered() -> None:
    assert [b async for b in sse_data(_reads(b"data: {}\n"))] == [[b"{}"]]


async def test_server_sent_events_read_the_same_however_the_reads_cut_them() -> None:
    stream = (
        b'data: {"a": 1}\r\n\r\n'
        b": a comment\n\n"
        b"event: message_start\ndata: one\ndata:two\n\n"
        b"data: with a\rbare CR\n\n\n\n"
        b"retry: 10\n\n"
        b'data: {"b": 2}\n\n'
        b"data: [DONE]\n"
    )
    expected = [b'{"a": 1}', b"one\ntwo", b"with a\rbare CR", b'{"b": 2}', b"[DONE]"]
    rng = random.Random(7)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 12)))
        reads = [stream[i:j] for i, j in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        data = [item async for batch in sse_data(_reads(*reads)) for item in batch]
        assert data == expected, reads
