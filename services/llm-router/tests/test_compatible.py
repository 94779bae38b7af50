"""The OpenAI-compatible provider (aiohttp, no SDK) against the fake over real sockets: it must
answer, fail and reuse connections exactly as the SDK-based OpenAI provider does."""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import AsyncIterator, Iterator

import pytest

from parley_fakes import Behaviour, OpenAIFake
from parley_llm_router.messages import (
    ChatRequest,
    Finish,
    FinishReason,
    ProviderEvent,
    TextDelta,
    Tool,
    ToolCallDelta,
)
from parley_llm_router.providers.compatible import CompatibleProvider
from parley_llm_router.providers.failures import FailureKind, ProviderFailure
from parley_llm_router.providers.openai import OpenAIProvider
from parley_testkit.provider_streams import (
    HELLO,
    TIMEOUTS,
    assert_stopping_closes_the_stream,
    collect,
    failure,
)

KEY = "sk-compatible-secret"
MODEL = "llama-3"
ANSWER = "".join(Behaviour(tokens=5).answer_tokens())


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    with OpenAIFake(tokens=5) as server:
        yield server


@pytest.fixture
async def compatible(fake: OpenAIFake) -> AsyncIterator[CompatibleProvider]:
    provider = CompatibleProvider(name="vllm", api_key=KEY, base_url=f"{fake.base_url}/v1/")
    yield provider
    await provider.close()


@pytest.fixture
async def sdk(fake: OpenAIFake) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(name="oa", api_key=KEY, base_url=f"{fake.base_url}/v1")
    yield provider
    await provider.close()


async def test_a_stream_arrives_with_the_servers_usage_and_the_bearer_key(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    events = await collect(compatible, MODEL)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.STOP
    assert finish.usage.output_tokens == 5
    assert finish.usage.input_tokens > 0
    assert not finish.usage.estimated
    [sent] = fake.requests
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "llama-3"
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}
    assert sent.outcome == "complete"


async def test_without_a_key_no_credential_is_sent(fake: OpenAIFake) -> None:
    provider = CompatibleProvider(name="ollama", api_key=None, base_url=f"{fake.base_url}/v1")
    try:
        await collect(provider, MODEL)
    finally:
        await provider.close()
    assert fake.requests[0].credential_header is None


async def test_a_server_without_usage_gets_an_estimate(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    fake.set_behaviour(tokens=5, report_usage=False)
    finish = (await collect(compatible, MODEL))[-1]
    assert isinstance(finish, Finish)
    assert finish.usage.estimated
    assert finish.usage.input_tokens > 0
    assert finish.usage.output_tokens > 0


async def test_a_tool_call_arrives_in_pieces_with_its_id_and_name(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    fake.set_behaviour(tool_name="lookup", tool_arguments={"q": "annual leave"})
    request = ChatRequest(
        messages=HELLO.messages,
        tools=(Tool("lookup", "Search the handbook", '{"type": "object"}'),),
    )
    events = await collect(compatible, MODEL, request)
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "lookup"
    assert calls[0].id
    assert "".join(c.arguments_delta for c in calls) == '{"q": "annual leave"}'
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.TOOL_CALLS


@pytest.mark.parametrize(
    ("behaviour", "kind", "retry_after"),
    [
        (Behaviour(fail_status=429, retry_after=2), FailureKind.RATE_LIMITED, 2.0),
        (Behaviour(fail_status=500), FailureKind.UNAVAILABLE, None),
        (Behaviour(fail_status=503, retry_after=1), FailureKind.UNAVAILABLE, 1.0),
        (Behaviour(fail_status=529, retry_after=1), FailureKind.OVERLOADED, 1.0),
        (Behaviour(fail_status=401), FailureKind.AUTH, None),
        (Behaviour(fail_status=400), FailureKind.BAD_REQUEST, None),
    ],
    ids=["429", "500", "503", "529", "401", "400"],
)
async def test_a_failing_server_is_classified_as_the_sdk_classifies_it(
    fake: OpenAIFake,
    compatible: CompatibleProvider,
    sdk: OpenAIProvider,
    behaviour: Behaviour,
    kind: FailureKind,
    retry_after: float | None,
) -> None:
    fake.push(behaviour, behaviour)
    ours = await failure(compatible, MODEL)
    theirs = await failure(sdk, MODEL)
    assert (ours.kind, ours.status, ours.retry_after) == (
        kind,
        behaviour.fail_status,
        retry_after,
    )
    assert (ours.kind, ours.status, ours.retry_after, ours.message) == (
        theirs.kind,
        theirs.status,
        theirs.retry_after,
        theirs.message,
    )
    assert KEY not in ours.message


async def test_a_server_that_is_not_there_is_a_connection_failure() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = CompatibleProvider(name="gone", api_key=None, base_url=f"http://127.0.0.1:{port}/v1")
    try:
        raised = await failure(provider, MODEL)
    finally:
        await provider.close()
    assert raised.kind == FailureKind.CONNECTION
    assert raised.retryable


async def test_a_stream_dropped_midway_is_a_broken_stream(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    fake.set_behaviour(tokens=6, drop_after_tokens=2)
    events: list[ProviderEvent] = []
    with pytest.raises(ProviderFailure) as raised:
        async for event in compatible.stream(MODEL, HELLO, TIMEOUTS):
            events.append(event)
    assert raised.value.kind == FailureKind.STREAM_BROKEN
    assert any(isinstance(e, TextDelta) for e in events)


async def test_a_paced_stream_dropped_midway_keeps_every_token_that_arrived(
    fake: OpenAIFake,
) -> None:
    # Six tokens 5 ms apart, then the connection is cut: with reads 100 ms apart, all six
    # wait in the connection's buffer when the cut is noticed, and must still be delivered.
    fake.set_behaviour(tokens=20, token_delay_ms=5, drop_after_tokens=6)
    provider = CompatibleProvider(
        name="vllm", api_key=None, base_url=f"{fake.base_url}/v1/", pace=0.1
    )
    events: list[ProviderEvent] = []
    try:
        with pytest.raises(ProviderFailure) as raised:
            async for event in provider.stream(MODEL, HELLO, TIMEOUTS):
                events.append(event)
    finally:
        await provider.close()
    assert raised.value.kind == FailureKind.STREAM_BROKEN
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "".join(Behaviour(tokens=6).answer_tokens())


async def test_a_finished_stream_leaves_its_connection_to_the_next_request(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    fake.set_behaviour(tokens=5, end_delay_ms=50)
    for _ in range(3):
        assert isinstance((await collect(compatible, MODEL))[-1], Finish)
    assert len(fake.requests) == 3
    assert len({r.client for r in fake.requests}) == 1


async def test_a_consumer_that_stops_reading_closes_the_http_stream(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    await assert_stopping_closes_the_stream(compatible, fake, MODEL)


async def test_embeddings_come_back_in_input_order(
    fake: OpenAIFake, compatible: CompatibleProvider, sdk: OpenAIProvider
) -> None:
    texts = ["annual leave", "holidays", "parental leave"]
    vectors, tokens = await compatible.embed("embed-small", texts, 5)
    assert len(vectors) == 3
    assert vectors[0] != vectors[1]
    assert tokens > 0
    assert (vectors, tokens) == await sdk.embed("embed-small", texts, 5)
    assert fake.requests[0].path == "/v1/embeddings"
    assert fake.requests[0].body == {"model": "embed-small", "input": texts}


async def test_a_failing_embeddings_call_is_classified(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    fake.push(Behaviour(fail_status=429, retry_after=3))
    with pytest.raises(ProviderFailure) as raised:
        await compatible.embed("embed-small", ["x"], 5)
    assert (raised.value.kind, raised.value.retry_after) == (FailureKind.RATE_LIMITED, 3.0)


async def test_a_paced_stream_is_read_once_a_pace_and_ends_when_the_body_ends(
    fake: OpenAIFake,
) -> None:
    # 20 tokens 20 ms apart: unpaced, about one delta per token; read at most every 60 ms,
    # a third as many, the first at once, and the finish as soon as the body has ended.
    fake.set_behaviour(tokens=20, token_delay_ms=20, ttft_ms=50)
    timings: dict[float, tuple[list[ProviderEvent], list[float]]] = {}
    for pace in (0.0, 0.06):
        provider = CompatibleProvider(
            name="vllm", api_key=None, base_url=f"{fake.base_url}/v1", pace=pace
        )
        await collect(provider, MODEL)  # connect first: the timings below exclude the handshake
        loop = asyncio.get_running_loop()
        started = loop.time()
        events: list[ProviderEvent] = []
        at: list[float] = []
        async for event in provider.stream(MODEL, HELLO, TIMEOUTS):
            events.append(event)
            at.append(loop.time() - started)
        await provider.close()
        timings[pace] = (events, at)
    (unpaced, unpaced_at), (paced, paced_at) = timings[0.0], timings[0.06]
    text = ["".join(e.text for e in run if isinstance(e, TextDelta)) for run in (unpaced, paced)]
    assert text[0] == text[1] == "".join(Behaviour(tokens=20).answer_tokens())
    assert len(unpaced) >= 15
    assert len(paced) <= 10
    assert paced_at[0] < unpaced_at[0] + 0.03  # the first delta is not held
    # deltas at least a pace apart, but the last, read when the body ended with the finish
    gaps = [b - a for a, b in itertools.pairwise(paced_at[:-2])]
    assert min(gaps) >= 0.055, gaps
    assert isinstance(paced[-1], Finish)
    assert paced_at[-1] < unpaced_at[-1] + 0.03  # the end is not held


async def test_a_tool_schema_with_an_integer_wider_than_64_bits_is_still_sent(
    fake: OpenAIFake, compatible: CompatibleProvider
) -> None:
    huge = 123456789012345678901234567890
    parameters = f'{{"type": "object", "properties": {{"n": {{"maximum": {huge}}}}}}}'
    request = ChatRequest(messages=HELLO.messages, tools=(Tool("count", "", parameters),))
    assert isinstance((await collect(compatible, MODEL, request))[-1], Finish)
    sent = fake.requests[-1].body["tools"][0]["function"]["parameters"]
    assert sent["properties"]["n"] == {"maximum": huge}


async def test_an_error_chunk_mid_answer_follows_the_tokens_it_ended(
    fake: OpenAIFake, compatible: CompatibleProvider, sdk: OpenAIProvider
) -> None:
    for provider in (compatible, sdk):
        fake.push(Behaviour(tokens=5, error_after_tokens=3))
        received: list[str] = []
        with pytest.raises(ProviderFailure) as raised:
            async for event in provider.stream(MODEL, HELLO, TIMEOUTS):
                if isinstance(event, TextDelta):
                    received.append(event.text)
        assert raised.value.kind == FailureKind.STREAM_BROKEN
        assert raised.value.message == "the provider reported an error mid-stream"
        assert "".join(received) == "".join(Behaviour(tokens=5).answer_tokens()[:3])
