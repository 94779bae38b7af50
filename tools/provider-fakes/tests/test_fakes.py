"""The fakes against the official SDKs over real sockets: they must look like the real thing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from parley_fakes import AnthropicFake, Behaviour, OpenAIFake


@pytest.fixture
def oa() -> Iterator[OpenAIFake]:
    with OpenAIFake(tokens=5) as fake:
        yield fake


@pytest.fixture
def an() -> Iterator[AnthropicFake]:
    with AnthropicFake(tokens=5) as fake:
        yield fake


def openai_client(fake: OpenAIFake, timeout: float = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=f"{fake.base_url}/v1", api_key="k", max_retries=0, timeout=timeout
    )


def anthropic_client(fake: AnthropicFake) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="k", max_retries=0, timeout=5)


TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


async def test_openai_stream_with_usage(oa: OpenAIFake) -> None:
    client = openai_client(oa)
    stream = await client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = [], None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert "".join(text) == "".join(Behaviour(tokens=5).answer_tokens())
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == 5
    assert oa.requests[-1].body["messages"] == [{"role": "user", "content": "hi"}]
    assert oa.requests[-1].outcome == "complete"


async def test_openai_tool_call_streams_like_openai(oa: OpenAIFake) -> None:
    oa.push(Behaviour(tool_name="lookup", tool_arguments={"q": "leave policy"}))
    stream = await openai_client(oa).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,
        stream=True,  # type: ignore[arg-type]
    )
    name, arguments, finish = "", "", None
    async for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or ():
                name += (call.function.name or "") if call.function else ""
                arguments += (call.function.arguments or "") if call.function else ""
            finish = choice.finish_reason or finish
    assert name == "lookup"
    assert arguments == '{"q": "leave policy"}'
    assert finish == "tool_calls"


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (401, openai.AuthenticationError),
        (529, openai.APIStatusError),
    ],
)
async def test_openai_failures_are_the_sdks_errors(
    oa: OpenAIFake, status: int, error: type[Exception]
) -> None:
    oa.push(Behaviour(fail_status=status, retry_after=2))
    with pytest.raises(error) as raised:
        await openai_client(oa).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == status  # type: ignore[attr-defined]
    assert raised.value.response.headers["retry-after"] == "2"  # type: ignore[attr-defined]
    # The script was used once; the next request gets the default behaviour.
    ok = await openai_client(oa).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.choices[0].finish_reason == "stop"


async def test_a_hang_meets_the_clients_timeout_and_the_fake_sees_it_leave(oa: OpenAIFake) -> None:
    oa.push(Behaviour(hang=True))
    with pytest.raises(openai.APITimeoutError):
        await openai_client(oa, timeout=0.3).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    for _ in range(100):
        if oa.requests[-1].outcome:
            break
        await asyncio.sleep(0.01)
    assert oa.requests[-1].outcome == "disconnected"


async def test_a_dropped_stream_breaks_the_clients_read(oa: OpenAIFake) -> None:
    oa.push(Behaviour(tokens=10, drop_after_tokens=3))
    stream = await openai_client(oa).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        async for chunk in stream:
            received += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(received) == 3
    assert oa.requests[-1].outcome == "dropped"


async def test_an_error_in_the_openai_stream_is_the_sdks_api_error(oa: OpenAIFake) -> None:
    oa.push(Behaviour(tokens=10, error_after_tokens=2))
    stream = await openai_client(oa).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="fake server_error"):
        async for chunk in stream:
            received += [c.delta.content for c in chunk.choices if c.delta.content]
    assert len(received) == 2
    assert oa.requests[-1].outcome == "error"


async def test_an_error_in_the_anthropic_stream_is_the_sdks_overloaded_error(
    an: AnthropicFake,
) -> None:
    an.push(Behaviour(tokens=10, error_after_tokens=2))
    stream = await anthropic_client(an).messages.create(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    texts = []
    with pytest.raises(anthropic.APIStatusError, match="Overloaded") as raised:
        async for event in stream:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                texts.append(event.delta.text)
    assert texts == Behaviour(tokens=10).answer_tokens()[:2]
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert an.requests[-1].outcome == "error"


async def test_an_error_before_a_plain_answer_is_an_error_status(an: AnthropicFake) -> None:
    an.push(Behaviour(error_after_tokens=0))
    with pytest.raises(anthropic.APIStatusError) as raised:
        await anthropic_client(an).messages.create(
            model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 529


async def test_the_fake_sees_a_cancelled_stream_within_100_ms(oa: OpenAIFake) -> None:
    oa.set_behaviour(tokens=1000, token_delay_ms=5)
    stream = await openai_client(oa).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    async for _ in stream:
        break
    await stream.close()
    closed = time.monotonic()
    for _ in range(100):
        if oa.requests[-1].ended_at:
            break
        await asyncio.sleep(0.005)
    record = oa.requests[-1]
    assert record.outcome == "disconnected"
    assert record.ended_at is not None
    assert record.ended_at - closed < 0.1


async def test_admin_endpoints_control_a_fake_in_another_process(oa: OpenAIFake) -> None:
    async with httpx.AsyncClient(base_url=oa.base_url) as admin:
        assert (await admin.post("/_fake/behaviour", json={"tokens": 2})).status_code == 200
        queued = await admin.post("/_fake/script", json={"behaviours": [{"fail_status": 503}]})
        assert queued.json() == {"queued": 1}
        assert (await admin.post("/_fake/behaviour", json={"nope": 1})).status_code == 400
        with pytest.raises(openai.InternalServerError):
            await openai_client(oa).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "a"}]
            )
        ok = await openai_client(oa).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "b"}]
        )
        assert ok.usage is not None
        assert ok.usage.completion_tokens == 2
        stats = (await admin.get("/_fake/stats")).json()
        assert stats["outcomes"] == {"failed": 1, "complete": 1}
        recorded = (await admin.get("/_fake/requests")).json()
        assert [r["body"]["messages"][0]["content"] for r in recorded] == ["a", "b"]


async def test_embeddings_are_unit_vectors(oa: OpenAIFake) -> None:
    response = await openai_client(oa).embeddings.create(model="e", input=["a", "b"])
    assert [len(d.embedding) for d in response.data] == [384, 384]
    assert abs(sum(x * x for x in response.data[0].embedding) - 1) < 1e-6


async def test_anthropic_stream_events_and_usage(an: AnthropicFake) -> None:
    stream = await anthropic_client(an).messages.create(
        model="claude", max_tokens=100, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    kinds, text, stop, output = [], [], None, 0
    async for event in stream:
        kinds.append(event.type)
        if event.type == "content_block_delta" and event.delta.type == "text_delta":
            text.append(event.delta.text)
        if event.type == "message_delta":
            stop, output = event.delta.stop_reason, event.usage.output_tokens
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "".join(text) == "".join(Behaviour(tokens=5).answer_tokens())
    assert (stop, output) == ("end_turn", 5)


async def test_anthropic_tool_use_and_max_tokens(an: AnthropicFake) -> None:
    an.push(Behaviour(tool_name="lookup", tool_arguments={"q": 1}))
    message = await anthropic_client(an).messages.create(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    )
    assert message.stop_reason == "tool_use"
    assert message.content[0].type == "tool_use"
    assert message.content[0].input == {"q": 1}
    cut = await anthropic_client(an).messages.create(
        model="claude", max_tokens=2, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    stops = [e.delta.stop_reason async for e in cut if e.type == "message_delta"]
    assert stops == ["max_tokens"]


async def test_anthropic_overloaded_and_missing_max_tokens(an: AnthropicFake) -> None:
    an.push(Behaviour(fail_status=529))
    with pytest.raises(anthropic.APIStatusError) as raised:
        await anthropic_client(an).messages.create(
            model="claude", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 529
    async with httpx.AsyncClient(base_url=an.base_url) as raw:
        response = await raw.post(
            "/v1/messages",
            json={"model": "c", "messages": []},
            headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


PARALLEL = Behaviour(
    tool_calls=[
        {"name": "lookup", "arguments": {"q": "leave policy for contractors"}},
        {"name": "lookup", "arguments": {"q": "holidays"}},
    ]
)


async def test_openai_parallel_tool_calls_accumulate_in_the_sdk(oa: OpenAIFake) -> None:
    oa.push(PARALLEL)
    async with openai_client(oa).chat.completions.stream(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        tools=TOOLS,  # type: ignore[arg-type]
    ) as stream:
        completion = await stream.get_final_completion()
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("lookup", '{"q": "leave policy for contractors"}'),
        ("lookup", '{"q": "holidays"}'),
    ]
    assert len({c.id for c in calls}) == 2


async def test_anthropic_parallel_tool_use_accumulates_in_the_sdk(an: AnthropicFake) -> None:
    an.push(PARALLEL)
    async with anthropic_client(an).messages.stream(
        model="claude",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        tools=[{"name": "lookup", "input_schema": {"type": "object"}}],
    ) as stream:
        message = await stream.get_final_message()
    assert message.stop_reason == "tool_use"
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", {"q": "leave policy for contractors"}),
        ("tool_use", {"q": "holidays"}),
    ]
