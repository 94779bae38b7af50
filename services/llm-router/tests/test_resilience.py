"""The router against fake OpenAI and Anthropic servers over real sockets: fallback, retries,
breakers, deadlines, bulkheads, the cache, cancellation and tool calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_fakes import AnthropicFake, Behaviour, OpenAIFake
from parley_llm_router.main import build
from parley_llm_router.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server

ROUTES = """
default_model: chain
providers:
  oa: {{type: {openai_type}, base_url: "{openai}/v1", api_key_env: OA_KEY}}
  an: {{type: anthropic, base_url: "{anthropic}", api_key_env: AN_KEY}}
models:
  chain:
    candidates:
      - {{provider: oa, model: gpt-fake, max_attempts: 1, timeouts: {timeouts}}}
      - {{provider: an, model: claude-fake, timeouts: {timeouts}}}
  retry:
    candidates:
      - {{provider: oa, model: gpt-fake, max_attempts: 2, timeouts: {timeouts}}}
  solo:
    candidates:
      - {{provider: oa, model: gpt-fake, max_attempts: 1, timeouts: {timeouts}}}
  brief:
    candidates:
      - {{provider: oa, model: gpt-fake, max_attempts: 1,
          timeouts: {{connect: 1, first_token: 0.5, between_tokens: 0.5, total: 0.4}}}}
  claude:
    candidates:
      - {{provider: an, model: claude-fake, timeouts: {timeouts}}}
  tight:
    candidates:
      - {{provider: oa, model: gpt-fake, max_concurrency: 1, queue_timeout: 0.05,
          timeouts: {timeouts}}}
      - {{provider: an, model: claude-fake, timeouts: {timeouts}}}
"""
TIMEOUTS = "{connect: 1, first_token: 0.5, between_tokens: 0.5, total: 5}"


@dataclass
class Rig:
    router: pb_grpc.LlmRouterStub
    openai: OpenAIFake
    anthropic: AnthropicFake


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


# The SDK-based OpenAI provider and the aiohttp-based OpenAI-compatible one must behave alike.
@pytest.fixture(params=["openai", "openai_compatible"])
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    with OpenAIFake(tokens=6) as openai, AnthropicFake(tokens=6) as anthropic:
        routes = tmp_path / "routes.yaml"
        routes.write_text(
            ROUTES.format(
                openai_type=request.param,
                openai=openai.base_url,
                anthropic=anthropic.base_url,
                timeouts=TIMEOUTS,
            )
        )
        settings = Settings(
            grpc_port=0,
            routes_file=routes,
            routes_reload_seconds=0.05,
            database_url=f"sqlite:///{tmp_path}/router.db",
            redis_url=None,
            breaker_consecutive_failures=3,
            breaker_cooldown_seconds=0.3,
        )
        wiring = await build(settings, env={"OA_KEY": "sk-test-secret", "AN_KEY": "ant-key"})
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.llm_router.v1.LlmRouter") as chan,
        ):
            yield Rig(pb_grpc.LlmRouterStub(chan), openai, anthropic)
        await wiring.close()


def ask(model: str = "chain", text: str = "hello", **kw: object) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=model,
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])],
        **kw,  # type: ignore[arg-type]
    )


async def stream(
    rig: Rig, request: pb.ChatRequest, deadline: float | None = None
) -> list[pb.ChatEvent]:
    return [e async for e in rig.router.StreamChat(request, timeout=deadline)]


def answered_by(events: list[pb.ChatEvent]) -> str:
    return events[0].start.provider


@pytest.mark.parametrize(
    "failure",
    [
        Behaviour(fail_status=429, retry_after=1),
        Behaviour(fail_status=500),
        Behaviour(fail_status=529),
        Behaviour(hang=True),
        Behaviour(tokens=6, drop_after_tokens=0),
        Behaviour(tokens=6, stall_after_tokens=0),
        Behaviour(tokens=6, error_after_tokens=0),
    ],
    ids=["429", "500", "529", "hang", "dropped-before-first-token", "silent", "error-event"],
)
async def test_a_failing_first_candidate_falls_back(rig: Rig, failure: Behaviour) -> None:
    rig.openai.push(failure)
    events = await stream(rig, ask())
    assert answered_by(events) == "an"
    assert events[-1].HasField("finish")
    assert len(rig.openai.requests) == 1
    assert len(rig.anthropic.requests) == 1


async def test_after_the_first_token_a_failure_ends_the_stream_without_fallback(rig: Rig) -> None:
    rig.openai.push(Behaviour(tokens=6, drop_after_tokens=3))
    events = await stream(rig, ask())
    kinds = [e.WhichOneof("event") for e in events]
    # Three tokens were sent before the connection was cut; under load the last ones may be
    # lost with it, so the count is not exact.
    assert events[0].HasField("start")
    assert kinds[-1] == "error"
    assert 1 <= kinds.count("text_delta") <= 3
    assert set(kinds[:-1]) == {"text_delta"}
    assert events[-1].error.error.code == "provider_stream_broken"
    assert events[-1].error.error.retryable  # the caller may send it again
    assert events[-1].error.partial_usage.output_tokens > 0
    assert rig.anthropic.requests == []


async def test_an_overloaded_event_before_the_first_token_is_retried(rig: Rig) -> None:
    rig.anthropic.push(Behaviour(tokens=6, error_after_tokens=0))
    events = await stream(rig, ask("claude"))
    assert events[-1].WhichOneof("event") == "finish"
    assert "".join(e.text_delta for e in events if e.HasField("text_delta")) == "".join(
        Behaviour(tokens=6).answer_tokens()
    )
    assert [r.outcome for r in rig.anthropic.requests] == ["error", "complete"]


async def test_an_overloaded_event_after_the_first_token_ends_the_stream(rig: Rig) -> None:
    rig.anthropic.push(Behaviour(tokens=6, error_after_tokens=3))
    events = await stream(rig, ask("claude"))
    assert events[0].HasField("start")
    assert events[-1].WhichOneof("event") == "error"
    assert "".join(e.text_delta for e in events if e.HasField("text_delta")) == "".join(
        Behaviour(tokens=6).answer_tokens()[:3]
    )
    assert events[-1].error.error.code == "provider_overloaded"
    assert events[-1].error.partial_usage.output_tokens > 0
    assert len(rig.anthropic.requests) == 1


async def test_a_stream_that_goes_silent_is_cut_by_the_gap_timeout(rig: Rig) -> None:
    rig.openai.push(Behaviour(tokens=6, stall_after_tokens=2))
    started = time.monotonic()
    events = await stream(rig, ask("solo"))
    assert events[-1].error.error.code == "provider_timeout"
    assert time.monotonic() - started < 2


async def test_a_stream_that_never_stops_is_cut_at_its_total_timeout(rig: Rig) -> None:
    rig.openai.push(Behaviour(tokens=100, token_delay_ms=20))
    started = time.monotonic()
    events = await stream(rig, ask("brief"))
    assert 0.35 < time.monotonic() - started < 0.8
    assert events[-1].error.error.code == "provider_timeout"
    assert events[-1].error.partial_usage.output_tokens > 0
    assert sum(1 for e in events if e.WhichOneof("event") == "text_delta") >= 2


async def test_retry_after_is_obeyed_before_retrying_the_same_candidate(rig: Rig) -> None:
    rig.openai.push(Behaviour(fail_status=429, retry_after=0.4))
    events = await stream(rig, ask("retry"))
    assert answered_by(events) == "oa"
    first, second = rig.openai.requests
    assert second.received_at - first.received_at >= 0.4


async def test_when_every_candidate_fails_the_caller_gets_unavailable(rig: Rig) -> None:
    rig.openai.push(Behaviour(fail_status=503))
    rig.anthropic.push(Behaviour(fail_status=529, retry_after=3))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream(rig, ask())
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    metadata = dict(raised.value.trailing_metadata() or ())
    assert metadata["parley-error-code"] == "provider_overloaded"
    assert metadata["parley-retry-after"] == "3"


async def test_an_auth_failure_is_not_retried_and_leaks_no_key(rig: Rig) -> None:
    rig.openai.push(Behaviour(fail_status=401), Behaviour(fail_status=401))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream(rig, ask("retry"))
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (
        dict(raised.value.trailing_metadata() or ())["parley-error-code"] == "provider_auth_failed"
    )
    assert "sk-test-secret" not in (raised.value.details() or "")
    assert len(rig.openai.requests) == 1
    rig.openai.script.queue.clear()
    # It moved no breaker: the candidate still answers.
    for _ in range(3):
        rig.openai.push(Behaviour(fail_status=401))
        with pytest.raises(grpc.aio.AioRpcError):
            await stream(rig, ask("solo"))
    assert answered_by(await stream(rig, ask("solo"))) == "oa"


async def test_the_breaker_opens_half_opens_and_closes(rig: Rig) -> None:
    rig.openai.push(*[Behaviour(fail_status=500)] * 3)
    for _ in range(3):
        assert answered_by(await stream(rig, ask())) == "an"
    # Open: the first candidate is not even called.
    assert answered_by(await stream(rig, ask())) == "an"
    assert len(rig.openai.requests) == 3
    await asyncio.sleep(0.35)
    # Half open: one probe goes through, succeeds, and the circuit closes.
    assert answered_by(await stream(rig, ask())) == "oa"
    assert answered_by(await stream(rig, ask())) == "oa"
    assert len(rig.openai.requests) == 5


async def test_a_call_never_outlives_its_deadline(rig: Rig) -> None:
    rig.openai.set_behaviour(hang=True)
    rig.anthropic.set_behaviour(hang=True)
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream(rig, ask("retry"), deadline=0.3)
    elapsed = time.monotonic() - started
    assert raised.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
    assert elapsed < 0.6


async def test_a_full_candidate_sends_the_next_call_to_the_fallback(rig: Rig) -> None:
    rig.openai.set_behaviour(tokens=5, token_delay_ms=100)
    first = asyncio.create_task(stream(rig, ask("tight")))
    await asyncio.sleep(0.1)
    second = await stream(rig, ask("tight"))
    assert answered_by(second) == "an"
    assert answered_by(await first) == "oa"


async def test_a_cancelled_caller_closes_the_providers_stream_within_100_ms(rig: Rig) -> None:
    rig.openai.set_behaviour(tokens=500, token_delay_ms=10)
    call = rig.router.StreamChat(ask("solo"))
    async for event in call:
        if event.HasField("text_delta"):
            break
    call.cancel()
    cancelled = time.monotonic()
    for _ in range(100):
        if rig.openai.requests[-1].ended_at:
            break
        await asyncio.sleep(0.005)
    record = rig.openai.requests[-1]
    assert record.outcome == "disconnected"
    assert record.ended_at is not None
    assert record.ended_at - cancelled < 0.1


async def test_deterministic_requests_are_answered_from_the_cache(rig: Rig) -> None:
    first = await stream(rig, ask("solo", temperature=0.0))
    again = await stream(rig, ask("solo", temperature=0.0))
    assert not first[0].start.cached
    assert again[0].start.cached
    text = lambda events: "".join(e.text_delta for e in events)  # noqa: E731
    assert text(again) == text(first)
    assert len(rig.openai.requests) == 1
    with acting_as("globex", "eve"):
        other_tenant = await stream(rig, ask("solo", temperature=0.0))
    assert not other_tenant[0].start.cached
    warm = await stream(rig, ask("solo", temperature=0.7))
    assert not warm[0].start.cached


@pytest.mark.parametrize("model", ["solo", "claude"])
async def test_tool_calls_round_trip(rig: Rig, model: str) -> None:
    fake = rig.openai if model == "solo" else rig.anthropic
    fake.push(Behaviour(tool_name="lookup", tool_arguments={"query": "leave policy"}))
    tool = pb.Tool(
        name="lookup",
        description="Search the handbook",
        parameters_json='{"type": "object", "properties": {"query": {"type": "string"}}}',
    )
    response = await rig.router.Chat(ask(model, tools=[tool]))
    assert response.finish_reason == common_pb2.FINISH_REASON_TOOL_CALLS
    [call] = response.message.tool_calls
    assert call.name == "lookup"
    assert call.arguments_json == '{"query": "leave policy"}'
    # Send the result back: the provider sees the call and the result in its own format.
    follow_up = ask(model, tools=[tool])
    follow_up.messages.append(pb.ChatMessage(role=pb.ROLE_ASSISTANT, tool_calls=[call]))
    follow_up.messages.append(
        pb.ChatMessage(
            role=pb.ROLE_TOOL, tool_call_id=call.id, content=[pb.ContentPart(text="25 days")]
        )
    )
    await rig.router.Chat(follow_up)
    sent = fake.requests[-1].body
    if model == "solo":
        assert sent["messages"][1]["tool_calls"][0]["function"]["name"] == "lookup"
        assert sent["messages"][2] == {
            "role": "tool",
            "tool_call_id": call.id,
            "content": "25 days",
        }
        assert sent["tools"][0]["function"]["parameters"]["properties"]["query"]
    else:
        assert sent["messages"][1]["content"][0]["type"] == "tool_use"
        assert sent["messages"][1]["content"][0]["input"] == {"query": "leave policy"}
        assert sent["messages"][2]["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call.id,
            "content": "25 days",
        }
        assert sent["tools"][0]["input_schema"]["properties"]["query"]


async def test_anthropic_gets_its_system_prompt_and_max_tokens(rig: Rig) -> None:
    request = ask("claude")
    request.messages.insert(
        0, pb.ChatMessage(role=pb.ROLE_SYSTEM, content=[pb.ContentPart(text="Be brief.")])
    )
    events = await stream(rig, request)
    assert events[-1].finish.usage.output_tokens == 6
    sent = rig.anthropic.requests[-1].body
    assert sent["system"] == "Be brief."
    assert sent["max_tokens"] == 4096
    assert [m["role"] for m in sent["messages"]] == ["user"]


async def test_usage_cost_and_the_ledger(rig: Rig, tmp_path: Path) -> None:
    events = await stream(rig, ask("solo"))
    usage = events[-1].finish.usage
    assert usage.output_tokens == 6
    assert not usage.estimated
    rows = (await rig.router.GetUsage(pb.GetUsageRequest(user_id="ann"))).rows
    assert [(r.model, r.requests) for r in rows] == [("oa/gpt-fake", 1)]


async def test_embeddings_through_the_local_model_and_a_provider(rig: Rig, tmp_path: Path) -> None:
    local = await rig.router.Embed(pb.EmbedRequest(inputs=["annual leave", "paid holidays"]))
    assert local.model == "all-MiniLM-L6-v2"
    assert local.dimensions == 384
    assert len(local.embeddings) == 2
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.router.Embed(pb.EmbedRequest(model="nope", inputs=["x"]))
    assert "valid models: local" in (raised.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await rig.router.Embed(pb.EmbedRequest(inputs=[]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    routes = tmp_path / "routes.yaml"
    routes.write_text(
        routes.read_text()
        + "embedding_models:\n  small: {provider: oa, model: emb-fake, price: {input: 0.02}}\n"
        + "default_embedding_model: small\n"
    )
    for _ in range(100):
        if "small" in await _embedding_aliases(rig):
            break
        await asyncio.sleep(0.05)
    remote = await rig.router.Embed(pb.EmbedRequest(inputs=["a", "b", "c"]))
    assert remote.model == "emb-fake"
    assert len(remote.embeddings) == 3
    assert remote.usage.input_tokens > 0
    assert not remote.usage.estimated
    assert rig.openai.requests[-1].body["input"] == ["a", "b", "c"]


async def _embedding_aliases(rig: Rig) -> set[str]:
    try:
        await rig.router.Embed(pb.EmbedRequest(model="small", inputs=["probe"]))
    except grpc.aio.AioRpcError:
        return set()
    return {"small"}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_metrics_count_attempts_fallbacks_tokens_cache_and_in_flight(rig: Rig) -> None:
    oa, an = "oa/gpt-fake", "an/claude-fake"
    names = {
        "oa_failed": (
            "parley_llm_requests_total",
            {"candidate": oa, "outcome": "provider_unavailable"},
        ),
        "an_ok": ("parley_llm_requests_total", {"candidate": an, "outcome": "ok"}),
        "fallbacks": ("parley_llm_fallbacks_total", {"alias": "chain"}),
        "an_out": (
            "parley_llm_tokens_total",
            {"candidate": an, "direction": "output", "tenant": "acme"},
        ),
        "an_ttft": ("parley_llm_time_to_first_token_seconds_count", {"candidate": an}),
        "an_tps": ("parley_llm_output_tokens_per_second_count", {"candidate": an}),
        "misses": ("parley_llm_cache_total", {"result": "miss"}),
        "hits": ("parley_llm_cache_total", {"result": "hit"}),
    }
    before = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    rig.openai.push(Behaviour(fail_status=500))
    events = await stream(rig, ask(temperature=0.0))
    assert answered_by(events) == "an"
    await stream(rig, ask(temperature=0.0))  # the same deterministic request: cached
    after = {key: sample(name, **labels) for key, (name, labels) in names.items()}
    grew = {key: after[key] - before[key] for key in names}
    assert grew == {
        "oa_failed": 1,
        "an_ok": 1,
        "fallbacks": 1,
        "an_out": 6,
        "an_ttft": 1,
        "an_tps": 1,
        "misses": 1,
        "hits": 1,
    }
    assert sample("parley_llm_in_flight", candidate=oa) == 0
    assert sample("parley_llm_in_flight", candidate=an) == 0
    assert sample("parley_llm_breaker_state", candidate=an) == 0
