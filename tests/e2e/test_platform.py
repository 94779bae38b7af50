"""The five services as real processes, driven through the public HTTP API.

One platform is started for the module: an OpenAI-protocol fake stands in for the provider,
and an in-process OTLP receiver collects every service's spans.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_fakes import OpenAIFake
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

from .otlp import SpanSink, otlp_receiver
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

ANSWER_TOKENS = 12


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    fake: OpenAIFake
    spans: SpanSink
    token: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data = tmp_path_factory.mktemp("platform")
    with OpenAIFake(tokens=ANSWER_TOKENS, token_delay_ms=2) as fake:
        async with otlp_receiver() as (endpoint, sink):
            platform = Platform(
                data_dir=Path(data),
                env={
                    "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                    "OPENAI_BASE_URL": f"{fake.base_url}/v1",
                    "LOCAL_TOKEN_DELAY_MS": "0",
                    "LOG_LEVEL": "INFO",
                },
            )
            await platform.start()
            settings = GatewaySettings()
            token = issue_token(
                settings.auth_secret, settings.auth_issuer, tenant="acme", user="ann"
            )
            headers = {"Authorization": f"Bearer {token}"}
            try:
                async with httpx.AsyncClient(
                    base_url=platform.gateway_url, headers=headers, timeout=30
                ) as client:
                    yield Running(platform, client, fake, sink, token)
            finally:
                codes = await platform.stop()
            assert all(code == 0 for code in codes.values()), codes


async def _stream(client: httpx.AsyncClient, conversation_id: str, **body: str) -> list[Event]:
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json=body,
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in events(response)]


async def test_a_streamed_turn_is_stored_and_read_back(running: Running) -> None:
    client = running.client
    created = await client.post("/v1/conversations", json={"title": "e2e"})
    assert created.status_code == 201
    conversation_id = created.json()["id"]

    got = await _stream(client, conversation_id, content="Say something.")
    names = [e.name for e in got]
    assert names[0] == "accepted"
    assert names[-1] == "done"
    assert names.count("done") + names.count("error") == 1
    deltas = [e.data["text"] for e in got if e.name == "delta"]
    # The first delta leaves alone; the router merges the ones that follow within its
    # coalescing window (STREAM_COALESCE_MS), so a streamed answer is at least two pieces.
    assert len(deltas) >= 2
    done = got[-1].data["message"]
    assert done["status"] == "complete"
    assert done["content"] == "".join(deltas)
    assert done["model"].startswith("openai/")
    assert done["usage"]["output_tokens"] > 0

    stored = (await client.get(f"/v1/conversations/{conversation_id}/messages")).json()
    roles = [(m["role"], m["status"]) for m in stored["messages"]]
    assert roles == [("user", "complete"), ("assistant", "complete")]
    assert stored["messages"][0]["content"] == "Say something."
    assert stored["messages"][1]["content"] == done["content"]
    # The provider saw the user's words under the server's own system prompt.
    sent = running.fake.requests[-1].body["messages"]
    assert sent[0]["role"] == "system"
    assert sent[-1] == {"role": "user", "content": "Say something."}


async def test_one_trace_spans_gateway_conversation_and_router(running: Running) -> None:
    client = running.client
    conversation_id = (await client.post("/v1/conversations", json={})).json()["id"]
    response = await client.post(
        f"/v1/conversations/{conversation_id}/messages", json={"content": "Trace me."}
    )
    assert response.status_code == 200
    request_id = response.headers["x-request-id"]

    wanted = {"gateway", "conversation", "llm-router"}
    trace_id = None
    llm: list[Any] = []
    # The exporters batch every 0.5 s, each service on its own: a trace's spans of one
    # service may come in two batches.
    for _ in range(50):
        gateway_spans = [
            s
            for s in running.spans.spans
            if s.service == "gateway" and s.name.startswith("POST /v1/conversations/")
        ]
        if gateway_spans:
            trace_id = gateway_spans[-1].trace_id
            in_trace = [s for s in running.spans.spans if s.trace_id == trace_id]
            llm = [s for s in in_trace if s.name.startswith("chat ")]
            if wanted <= running.spans.services_in_trace(trace_id) and llm:
                break
        await asyncio.sleep(0.1)
    assert trace_id is not None, "the gateway exported no span"
    assert wanted <= running.spans.services_in_trace(trace_id)
    assert llm, "no GenAI span for the model call"
    assert llm[0].attributes["gen_ai.request.model"]
    assert request_id


async def test_documents_ground_the_local_model_with_citations(running: Running) -> None:
    client = running.client
    created = await client.post(
        "/v1/knowledge-bases/handbook/documents",
        json={
            "title": "Leave policy",
            "content": "# Leave\n\nEmployees have 25 days of paid leave a year. "
            "Unused days expire in March.\n\n# Travel\n\nBook trains for trips under 500 km.",
        },
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    for _ in range(200):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.05)
    assert job["state"] == "succeeded", job

    conversation_id = (
        await client.post(
            "/v1/conversations",
            json={"settings": {"knowledge_base_id": "handbook", "model": "local"}},
        )
    ).json()["id"]
    got = await _stream(client, conversation_id, content="How many days of paid leave?")
    citations = next(e for e in got if e.name == "citations").data["citations"]
    assert citations
    assert citations[0]["title"] == "Leave policy"
    done = got[-1].data["message"]
    assert "25 days of paid leave" in done["content"]
    assert "[1]" in done["content"]
    assert done["model"] == "local/extractive-v1"


async def test_errors_reach_the_client_in_the_envelope(running: Running) -> None:
    client = running.client
    missing = await client.get("/v1/conversations/conv_does_not_exist")
    assert missing.status_code == 404
    assert missing.json()["error"]["request_id"] == missing.headers["x-request-id"]
    anonymous = await client.get("/v1/conversations", headers={"Authorization": "Bearer nope"})
    assert anonymous.status_code == 401


async def test_another_tenant_sees_nothing(running: Running) -> None:
    client = running.client
    conversation_id = (await client.post("/v1/conversations", json={})).json()["id"]
    settings = GatewaySettings()
    other = issue_token(settings.auth_secret, settings.auth_issuer, tenant="globex", user="ann")
    response = await client.get(
        f"/v1/conversations/{conversation_id}", headers={"Authorization": f"Bearer {other}"}
    )
    assert response.status_code == 404
