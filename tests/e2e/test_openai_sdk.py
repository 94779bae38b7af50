"""OpenAI's own clients against the five services as real processes: the official ``openai``
SDK (async and sync) and LangChain's ``ChatOpenAI``, with ``base_url`` at the gateway's
``/openai/v1`` and a Parley token as the API key. An OpenAI-protocol fake stands in for the
provider; embeddings come from the local model the router ships."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from parley_devstack import Platform
from parley_fakes import Behaviour, OpenAIFake
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANSWER = "Parley answers from the fake provider through the OpenAI surface"
# The dimension of the local embedding model (all-MiniLM-L6-v2).
LOCAL_DIMENSIONS = 384


@dataclass
class Running:
    platform: Platform
    fake: OpenAIFake
    base_url: str
    key: str

    def client(self, key: str | None = None) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=key or self.key, max_retries=0)


def _key(user: str, *scopes: str) -> str:
    settings = GatewaySettings()
    return issue_token(
        settings.auth_secret, settings.auth_issuer, tenant="acme", user=user, scopes=scopes
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("openai-platform")
    with OpenAIFake(text=ANSWER, token_delay_ms=2) as fake:
        platform = Platform(
            data_dir=Path(data),
            env={"OPENAI_BASE_URL": f"{fake.base_url}/v1", "LOCAL_TOKEN_DELAY_MS": "0"},
        )
        await platform.start()
        try:
            yield Running(
                platform,
                fake,
                f"{platform.gateway_url}/openai/v1",
                _key("sdk-user", "read", "chat"),
            )
        finally:
            codes = await platform.stop()
        assert all(code == 0 for code in codes.values()), codes


async def test_the_async_sdk_completes_and_streams(running: Running) -> None:
    async with running.client() as client:
        completion = await client.chat.completions.create(
            model="default",
            messages=[
                {"role": "system", "content": "Answer plainly."},
                {"role": "user", "content": "Say something."},
            ],
        )
        stream = await client.chat.completions.create(
            model="default",
            messages=[{"role": "user", "content": "Say something."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert completion.choices[0].message.content == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens > 0
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == ANSWER
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0
    # The model saw the caller's own system message, and no prompt of Parley's.
    sent = running.fake.requests[-2].body["messages"]
    assert sent == [
        {"role": "system", "content": "Answer plainly."},
        {"role": "user", "content": "Say something."},
    ]


async def test_the_sync_sdk_completes_and_streams(running: Running) -> None:
    def use() -> tuple[str, str]:
        with openai.OpenAI(base_url=running.base_url, api_key=running.key) as client:
            completion = client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}]
            )
            stream = client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        return completion.choices[0].message.content or "", text

    completed, streamed = await asyncio.to_thread(use)
    assert completed == ANSWER
    assert streamed == ANSWER


async def test_langchain_chat_openai_invokes_and_streams(running: Running) -> None:
    chat = ChatOpenAI(
        model="default", base_url=running.base_url, api_key=running.key, stream_usage=True
    )
    answer = await chat.ainvoke([SystemMessage("Answer plainly."), HumanMessage("hi")])
    assert isinstance(answer, AIMessage)
    assert answer.content == ANSWER
    pieces = [piece async for piece in chat.astream("hi")]
    assert len(pieces) > 1
    assert "".join(str(p.content) for p in pieces) == ANSWER
    assert any(p.usage_metadata and p.usage_metadata["output_tokens"] > 0 for p in pieces)


async def test_models_list_returns_the_aliases(running: Running) -> None:
    async with running.client() as client:
        ids = [m.id async for m in await client.models.list()]
        model = await client.models.retrieve("openai")
    assert ids == ["default", "local", "openai"]
    assert model.id == "openai"


async def test_embeddings_come_from_the_local_model(running: Running) -> None:
    texts = [
        "The cat sat on the mat.",
        "A cat is sitting on a mat.",
        "Quarterly revenue grew by four percent.",
    ]
    async with running.client() as client:
        result = await client.embeddings.create(model="local", input=texts)
    vectors = [e.embedding for e in result.data]
    assert [len(v) for v in vectors] == [LOCAL_DIMENSIONS] * 3

    def cosine(a: list[float], b: list[float]) -> float:
        dot = sum(x * y for x, y in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2


async def test_an_unknown_model_and_a_bad_key_raise_the_sdks_errors(running: Running) -> None:
    async with running.client() as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(
                model="gpt-nothing", messages=[{"role": "user", "content": "hi"}]
            )
    assert missing.value.code == "model_not_found"
    async with running.client(key="sk-not-a-parley-key") as stranger:
        with pytest.raises(openai.AuthenticationError):
            await stranger.models.list()


async def test_the_surface_stores_no_conversation(running: Running) -> None:
    key = _key("stateless-user", "read", "chat")
    async with running.client(key=key) as client:
        await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Remember me?"}]
        )
    async with httpx.AsyncClient(
        base_url=running.platform.gateway_url, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        listed = await http.get("/v1/conversations")
    assert listed.status_code == 200
    assert listed.json()["conversations"] == []


async def test_a_stream_whose_router_dies_ends_with_an_error_the_sdk_raises(
    running: Running,
) -> None:
    running.fake.push(Behaviour(tokens=200, token_delay_ms=20))
    received: list[str] = []
    async with running.client() as client:
        stream = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "Talk slowly."}], stream=True
        )
        with pytest.raises(openai.APIError) as raised:
            async for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
                if len(received) == 3:
                    await running.platform.kill("llm-router")
    await running.platform.restart("llm-router")
    assert len(received) >= 3
    assert raised.value.code == "service_unavailable"
    # Once the router is back the platform answers again: the gateway's channel reconnects
    # within a second, and until then its 503 carries Retry-After, which the SDK honours.
    async with openai.AsyncOpenAI(
        base_url=running.base_url, api_key=running.key, max_retries=3
    ) as client:
        completion = await client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content == ANSWER
