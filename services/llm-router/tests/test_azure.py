"""Azure OpenAI against the fake's deployment paths over real sockets: the provider on its
own, and the router from a routes file declaring an ``azure_openai`` provider."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest

from parley.common.v1 import common_pb2
from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_fakes import Behaviour, OpenAIFake
from parley_llm_router import config
from parley_llm_router.main import build
from parley_llm_router.messages import (
    Finish,
    FinishReason,
    TextDelta,
)
from parley_llm_router.providers.failures import FailureKind, ProviderFailure
from parley_llm_router.providers.openai import OpenAIProvider
from parley_llm_router.settings import Settings
from parley_runtime.grpc_client import channel
from parley_testkit import acting_as, grpc_server
from parley_testkit.provider_streams import collect, failure

API_VERSION = "2024-10-21"
KEY = "azure-test-secret"
DEPLOYMENT = "gpt-4o-prod"
EMBEDDING_DEPLOYMENT = "embed-small-prod"
ANSWER = "".join(Behaviour(tokens=5).answer_tokens())

ROUTES = """
default_model: default
providers:
  az: {{type: azure_openai, base_url: "{endpoint}", api_version: "{version}",
        api_key_env: AZ_KEY}}
models:
  default:
    candidates:
      - {{provider: az, model: {deployment}, max_attempts: 1,
          timeouts: {{connect: 1, first_token: 1, between_tokens: 1, total: 5}}}}
embedding_models:
  small: {{provider: az, model: {embedding}}}
default_embedding_model: small
"""


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
def fake() -> Iterator[OpenAIFake]:
    server = OpenAIFake(tokens=5)
    with server:
        yield server


@pytest.fixture
async def azure(fake: OpenAIFake) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(
        name="az", api_key=KEY, base_url=fake.base_url, api_version=API_VERSION
    )
    yield provider
    await provider.close()


@pytest.fixture
async def plain(fake: OpenAIFake) -> AsyncIterator[OpenAIProvider]:
    provider = OpenAIProvider(name="oa", api_key="sk-test", base_url=f"{fake.base_url}/v1")
    yield provider
    await provider.close()


async def test_a_streamed_chat_reaches_the_deployment_with_the_api_version_and_key(
    fake: OpenAIFake, azure: OpenAIProvider
) -> None:
    events = await collect(azure, DEPLOYMENT)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == ANSWER
    finish = events[-1]
    assert isinstance(finish, Finish)
    assert finish.reason == FinishReason.STOP
    assert finish.usage.output_tokens == 5
    assert finish.usage.input_tokens > 0
    assert not finish.usage.estimated
    [sent] = fake.requests
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.api_version == API_VERSION
    assert sent.credential_header == "api-key"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers
    assert sent.body["stream"] is True
    assert sent.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("behaviour", "kind", "retry_after"),
    [
        (Behaviour(fail_status=429, retry_after=2), FailureKind.RATE_LIMITED, 2.0),
        (Behaviour(fail_status=500), FailureKind.UNAVAILABLE, None),
        (Behaviour(fail_status=529, retry_after=1), FailureKind.OVERLOADED, 1.0),
        (Behaviour(fail_status=401), FailureKind.AUTH, None),
    ],
    ids=["429", "500", "529", "401"],
)
async def test_a_failing_deployment_is_classified_like_openai(
    fake: OpenAIFake,
    azure: OpenAIProvider,
    plain: OpenAIProvider,
    behaviour: Behaviour,
    kind: FailureKind,
    retry_after: float | None,
) -> None:
    fake.push(behaviour, behaviour)
    from_azure = await failure(azure, DEPLOYMENT)
    from_openai = await failure(plain, DEPLOYMENT)
    assert (from_azure.kind, from_azure.status, from_azure.retry_after) == (
        kind,
        behaviour.fail_status,
        retry_after,
    )
    assert (from_openai.kind, from_openai.status, from_openai.retry_after) == (
        from_azure.kind,
        from_azure.status,
        from_azure.retry_after,
    )
    assert KEY not in from_azure.message
    assert [r.path for r in fake.requests] == [
        f"/openai/deployments/{DEPLOYMENT}/chat/completions",
        "/v1/chat/completions",
    ]


async def test_embeddings_through_a_deployment(fake: OpenAIFake, azure: OpenAIProvider) -> None:
    vectors, tokens = await azure.embed(EMBEDDING_DEPLOYMENT, ["annual leave", "holidays"], 5)
    assert [len(v) for v in vectors] == [384, 384]
    assert vectors[0] != vectors[1]
    assert tokens > 0
    [sent] = fake.requests
    assert sent.path == f"/openai/deployments/{EMBEDDING_DEPLOYMENT}/embeddings"
    assert sent.api_version == API_VERSION
    assert sent.credential_header == "api-key"
    assert sent.body["input"] == ["annual leave", "holidays"]


async def test_a_failing_embeddings_deployment_is_classified(
    fake: OpenAIFake, azure: OpenAIProvider
) -> None:
    fake.push(Behaviour(fail_status=429, retry_after=3))
    with pytest.raises(ProviderFailure) as raised:
        await azure.embed(EMBEDDING_DEPLOYMENT, ["x"], 5)
    assert raised.value.kind == FailureKind.RATE_LIMITED
    assert raised.value.retry_after == 3.0


@pytest.mark.parametrize("endpoint", ["chat/completions", "embeddings"])
async def test_the_fake_answers_azures_404_without_an_api_version(
    fake: OpenAIFake, endpoint: str
) -> None:
    fake.push(Behaviour(fail_status=500))
    path = f"/openai/deployments/{DEPLOYMENT}/{endpoint}"
    body = {"model": DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}], "input": "hi"}
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        missing = await client.post(path, json=body, headers={"api-key": KEY})
        bearer = await client.post(
            path,
            params={"api-version": API_VERSION},
            json=body,
            headers={"authorization": "Bearer entra-token"},
        )
    assert missing.status_code == 404
    assert missing.json() == {"error": {"code": "404", "message": "Resource not found"}}
    # The 404 came before the deployment: the scripted failure went to the next request.
    assert bearer.status_code == 500
    first, second = fake.requests
    assert (first.path, first.api_version, first.credential_header) == (path, None, "api-key")
    assert first.outcome == "failed"
    assert (second.api_version, second.credential_header) == (API_VERSION, "authorization")


@dataclass
class Rig:
    router: pb_grpc.LlmRouterStub
    fake: OpenAIFake


@pytest.fixture
async def rig(tmp_path: Path, fake: OpenAIFake) -> AsyncIterator[Rig]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        ROUTES.format(
            endpoint=fake.base_url,
            version=API_VERSION,
            deployment=DEPLOYMENT,
            embedding=EMBEDDING_DEPLOYMENT,
        )
    )
    loaded = config.load(routes)
    assert loaded.providers["az"].type == config.ProviderType.AZURE_OPENAI
    assert loaded.providers["az"].api_version == API_VERSION
    settings = Settings(
        grpc_port=0,
        routes_file=routes,
        routes_reload_seconds=60,
        database_url=f"sqlite:///{tmp_path}/router.db",
        redis_url=None,
    )
    wiring = await build(settings, env={"AZ_KEY": KEY})
    async with (
        grpc_server(wiring.registrations) as address,
        channel(address, "parley.llm_router.v1.LlmRouter") as chan,
    ):
        yield Rig(pb_grpc.LlmRouterStub(chan), fake)
    await wiring.close()


def ask(text: str = "hello") -> pb.ChatRequest:
    return pb.ChatRequest(
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text=text)])]
    )


async def test_a_routes_file_with_an_azure_provider_streams_end_to_end(rig: Rig) -> None:
    events = [e async for e in rig.router.StreamChat(ask())]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-1] == "finish"
    assert set(kinds[:-1]) == {"text_delta"}
    assert events[0].start.provider == "az"
    assert "".join(e.text_delta for e in events[:-1]) == ANSWER
    assert events[-1].finish.finish_reason == common_pb2.FINISH_REASON_STOP
    assert events[-1].finish.usage.output_tokens == 5
    assert not events[-1].finish.usage.estimated
    [sent] = rig.fake.requests
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions"
    assert sent.api_version == API_VERSION
    assert sent.headers.get("api-key") == KEY
    assert "authorization" not in sent.headers


async def test_a_routes_file_with_an_azure_provider_embeds_and_reports_rate_limits(
    rig: Rig,
) -> None:
    embedded = await rig.router.Embed(pb.EmbedRequest(inputs=["a", "b", "c"]))
    assert embedded.model == EMBEDDING_DEPLOYMENT
    assert len(embedded.embeddings) == 3
    assert not embedded.usage.estimated
    assert rig.fake.requests[-1].path == f"/openai/deployments/{EMBEDDING_DEPLOYMENT}/embeddings"
    assert rig.fake.requests[-1].api_version == API_VERSION

    rig.fake.push(Behaviour(fail_status=429, retry_after=2))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        [e async for e in rig.router.StreamChat(ask())]
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    metadata = dict(raised.value.trailing_metadata() or ())
    assert metadata["parley-error-code"] == "provider_rate_limited"
    assert metadata["parley-retry-after"] == "2"
    assert KEY not in (raised.value.details() or "")


async def test_a_finished_stream_leaves_its_connection_to_the_next_request(
    fake: OpenAIFake, azure: OpenAIProvider, plain: OpenAIProvider
) -> None:
    # The body's end comes a while after [DONE], as from a distant server: read up to it,
    # or the connection cannot go back to the pool.
    fake.set_behaviour(tokens=5, end_delay_ms=50)
    for provider in (azure, plain):
        for _ in range(3):
            assert isinstance((await collect(provider, DEPLOYMENT))[-1], Finish)
    azure_peers = {r.client for r in fake.requests if r.api_version}
    plain_peers = {r.client for r in fake.requests if not r.api_version}
    assert len(fake.requests) == 6
    # one connection per client, no new handshake per request
    assert len(azure_peers) == 1, azure_peers
    assert len(plain_peers) == 1, plain_peers
