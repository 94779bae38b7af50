"""The Anthropic provider against the fake Messages API over real sockets: text, tool use,
usage, the stream's own error events, HTTP failures and connection reuse."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from parley_fakes import AnthropicFake, Behaviour
from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    TextDelta,
    Tool,
    ToolCallDelta,
)
from parley_llm_router.providers.anthropic import AnthropicProvider
from parley_llm_router.providers.failures import FailureKind, ProviderFailure
from parley_testkit.provider_streams import (
    HELLO,
    TIMEOUTS,
    assert_stopping_closes_the_stream,
    collect,
    failure,
)

KEY = "sk-ant-test-secret"
MODEL = "claude-fake"
ANSWER = Behaviour(tokens=6).answer_tokens()


@pytest.fixture
def fake() -> Iterator[AnthropicFake]:
    with AnthropicFake(tokens=6) as server:
        yield server


@pytest.fixture
async def claude(fake: AnthropicFake) -> AsyncIterator[AnthropicProvider]:
    provider = AnthropicProvider(name="an", api_key=KEY, base_url=fake.base_url, max_tokens=300)
    yield provider
    await provider.close()


async def test_a_stream_arrives_with_the_servers_usage_and_reuses_its_connection(
    fake: AnthropicFake, claude: AnthropicProvider
) -> None:
    events = await collect(claude, MODEL)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "".join(ANSWER)
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.STOP
    assert finish.usage.output_tokens == len(ANSWER)
    assert finish.usage.input_tokens > 0
    assert not finish.usage.estimated
    await collect(claude, MODEL)
    first, second = fake.requests
    assert KEY in first.headers[first.credential_header or ""]
    assert first.body["stream"] is True
    assert first.body["max_tokens"] == 300
    assert first.client == second.client  # one kept-alive connection


async def test_tool_use_streams_as_one_call_with_its_arguments(
    fake: AnthropicFake, claude: AnthropicProvider
) -> None:
    arguments = {"query": "leave policy", "limit": 3}
    fake.push(Behaviour(tool_name="lookup", tool_arguments=arguments))
    request = ChatRequest(
        messages=HELLO.messages, tools=(Tool("lookup", "", '{"type": "object"}'),)
    )
    events = await collect(claude, MODEL, request)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert {c.index for c in calls} == {0}
    assert calls[0].id.startswith("toolu_")
    assert calls[0].name == "lookup"
    assert json.loads("".join(c.arguments_delta for c in calls)) == arguments
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.TOOL_CALLS


async def test_an_overloaded_event_before_the_first_token_is_a_retryable_failure(
    fake: AnthropicFake, claude: AnthropicProvider
) -> None:
    fake.push(Behaviour(error_after_tokens=0))
    raised = await failure(claude, MODEL)
    assert raised.kind == FailureKind.OVERLOADED
    assert raised.retryable
    assert raised.message == "the provider reported overloaded_error mid-stream"
    assert fake.requests[-1].outcome == "error"


async def test_an_overloaded_event_mid_answer_follows_the_tokens_it_ended(
    fake: AnthropicFake, claude: AnthropicProvider
) -> None:
    fake.push(Behaviour(tokens=6, error_after_tokens=3))
    received: list[str] = []
    with pytest.raises(ProviderFailure) as raised:
        async for event in claude.stream(MODEL, HELLO, TIMEOUTS):
            if isinstance(event, TextDelta):
                received.append(event.text)
    assert raised.value.kind == FailureKind.OVERLOADED
    assert "".join(received) == "".join(ANSWER[:3])


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (529, FailureKind.OVERLOADED),
        (429, FailureKind.RATE_LIMITED),
        (500, FailureKind.UNAVAILABLE),
        (401, FailureKind.AUTH),
        (400, FailureKind.BAD_REQUEST),
    ],
)
async def test_http_failures_keep_their_kind_and_retry_after_and_no_key(
    fake: AnthropicFake, claude: AnthropicProvider, status: int, kind: FailureKind
) -> None:
    fake.push(Behaviour(fail_status=status, retry_after=2))
    raised = await failure(claude, MODEL)
    assert raised.kind == kind
    assert raised.status == status
    assert raised.retry_after == 2
    assert KEY not in raised.message
    assert raised.message == f"the provider answered HTTP {status}"


async def test_a_consumer_that_stops_reading_closes_the_http_stream(
    fake: AnthropicFake, claude: AnthropicProvider
) -> None:
    await assert_stopping_closes_the_stream(claude, fake, MODEL)
