"""The router's events as LlmRouter messages: stream events, the unary answer, failures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley_llm_router import wire
from parley_llm_router.config import parse
from parley_llm_router.dispatch import Failed, RouterEvent, Started
from parley_llm_router.messages import Finish, FinishReason, TextDelta, ToolCallDelta, Usage
from parley_llm_router.providers.failures import FailureKind
from parley_llm_router.routing import Candidate, RouteTable
from parley_runtime.errors import ParleyError

START = Started(Candidate("oa", "gpt"))


async def events(*items: RouterEvent) -> AsyncIterator[RouterEvent]:
    for item in items:
        yield item


async def test_start_rides_with_the_first_message_only() -> None:
    source = events(
        START, TextDelta("Hel"), TextDelta("lo"), Finish(FinishReason.STOP, Usage(3, 2))
    )
    messages = [m async for m in wire.chat_events(source)]
    assert [m.WhichOneof("event") for m in messages] == ["text_delta", "text_delta", "finish"]
    assert [m.HasField("start") for m in messages] == [True, False, False]
    assert messages[0].start == pb.ChatStart(provider="oa", model="gpt")
    assert messages[-1].finish.finish_reason == common_pb2.FINISH_REASON_STOP
    assert messages[-1].finish.usage.output_tokens == 2


@pytest.mark.parametrize("kind", list(FailureKind))
def test_a_broken_stream_tells_the_caller_whether_to_send_it_again(kind: FailureKind) -> None:
    message = wire.chat_event(Failed(kind, "the provider's stream broke", Usage(3, 2)))
    error = message.error.error
    assert (error.code, error.message) == (kind.value, "the provider's stream broke")
    assert error.retryable == (kind not in (FailureKind.AUTH, FailureKind.BAD_REQUEST))
    assert message.error.partial_usage.output_tokens == 2


async def test_chat_gathers_text_and_tool_calls() -> None:
    answer = await wire.chat_response(
        events(
            START,
            TextDelta("Let me look. "),
            ToolCallDelta(0, "call_1", "lookup", '{"q":'),
            ToolCallDelta(0, arguments_delta=' "leave"}'),
            Finish(FinishReason.TOOL_CALLS, Usage(10, 4)),
        )
    )
    assert (answer.provider, answer.model) == ("oa", "gpt")
    assert answer.message.content[0].text == "Let me look. "
    assert answer.message.tool_calls[0] == pb.ToolCall(
        id="call_1", name="lookup", arguments_json='{"q": "leave"}'
    )
    assert answer.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS


async def test_chat_reports_a_broken_answer_as_the_error_of_its_kind() -> None:
    broken = events(
        START,
        TextDelta("Hel"),
        Failed(FailureKind.STREAM_BROKEN, "the provider's stream broke", Usage()),
    )
    with pytest.raises(ParleyError) as raised:
        await wire.chat_response(broken)
    assert raised.value.status == grpc.StatusCode.UNAVAILABLE
    assert raised.value.code == "provider_stream_broken"


def test_an_alias_is_local_when_its_providers_are_all_the_local_type_whatever_their_names() -> None:
    routes = RouteTable.from_config(
        parse(
            """
default_model: mixed
providers:
  here: {type: local}
  vllm: {type: openai_compatible, base_url: "http://127.0.0.1:9/v1"}
models:
  housekeeping: {candidates: [{provider: here, model: extractive-v1}]}
  mixed:
    candidates:
      - {provider: here, model: extractive-v1}
      - {provider: vllm, model: llama}
"""
        )
    )
    local = {m.alias: m.local for m in wire.models(routes).models}
    assert local == {"housekeeping": True, "mixed": False}
