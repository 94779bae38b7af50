"""Traces that explain a turn, collected from the five services as real processes.

The platform exports to an in-process OTLP receiver; the provider is an OpenAI-compatible
fake (two of them: ``primary`` and ``backup`` behind one alias), so llm-router's call to it is
a real HTTP request, traced by the aiohttp instrumentation. Each turn is sent with a
``traceparent`` of the test's own, so its trace id is known in advance:

- a streamed turn on a knowledge base is one trace holding the gateway's, conversation's,
  retrieval's and llm-router's spans, database statements and the provider's HTTP call,
  each span's parent in the trace, the model call with its GenAI attributes and its
  ``first_token`` event;
- a turn whose primary fails before its first token shows the ``retry`` and ``fallback``
  events, and llm-router's warning log line carries the trace's id;
- the ingest job of an upload is a trace of its own, linked to the upload's;
- a latency histogram observed in a sampled trace carries its id as an exemplar.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from parley_devstack import Platform
from parley_devstack.platform import free_port
from parley_fakes import Behaviour, OpenAIFake

from .api import public_api
from .otlp import ReceivedSpan, SpanSink, otlp_receiver
from .sse import Event, events

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

SERVER, CLIENT, CONSUMER = 2, 3, 5
ROUTES = """\
default_model: default
providers:
  primary: {{type: openai_compatible, base_url: "{primary}/v1"}}
  backup: {{type: openai_compatible, base_url: "{backup}/v1"}}
models:
  default:
    candidates:
      - provider: primary
        model: fake-primary
        max_attempts: 2
        timeouts: {{connect: 1, first_token: 5, between_tokens: 5, total: 60}}
      - {{provider: backup, model: fake-backup, max_attempts: 1}}
"""
HANDBOOK = (
    "# Leave\n\nEmployees have 25 days of paid leave a year. Unused days expire in March.\n\n"
    "# Travel\n\nBook trains for trips under 500 km."
)


@dataclass
class Running:
    platform: Platform
    client: httpx.AsyncClient
    primary: OpenAIFake
    spans: SpanSink
    metrics_port: int


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Running]:
    data = Path(tmp_path_factory.mktemp("traces"))
    metrics_port = free_port()
    with (
        OpenAIFake(tokens=8, token_delay_ms=2) as primary,
        OpenAIFake(tokens=8, token_delay_ms=2) as backup,
    ):
        routes = data / "routes.yaml"
        routes.write_text(ROUTES.format(primary=primary.base_url, backup=backup.base_url))
        async with otlp_receiver() as (endpoint, sink):
            platform = Platform(
                data_dir=data,
                env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "LOG_LEVEL": "WARNING"},
                per_service_env={
                    "llm-router": {
                        "ROUTES_FILE": str(routes),
                        "METRICS_PORT": str(metrics_port),
                    }
                },
            )
            async with public_api(platform) as client:
                yield Running(platform, client, primary, sink, metrics_port)


def _traceparent() -> tuple[str, str, str]:
    """A sampled ``traceparent`` of the test's own: the header, its trace id and span id."""
    trace_id, span_id = os.urandom(16).hex(), os.urandom(8).hex()
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


async def _turn(client: httpx.AsyncClient, conversation_id: str, traceparent: str) -> list[Event]:
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": "How many days of leave do employees have?"},
        headers={"Accept": "text/event-stream", "traceparent": traceparent},
    ) as response:
        assert response.status_code == 200, await response.aread()
        return [event async for event in events(response)]


async def _spans_of(
    sink: SpanSink, trace_id: str, services: set[str], names: tuple[str, ...] = ()
) -> list[ReceivedSpan]:
    """The trace's spans once every service in ``services`` and every span named in
    ``names`` arrived (the exporters batch every 0.5 s), then one batch more."""
    for _ in range(100):
        spans = [s for s in sink.spans if s.trace_id == trace_id]
        if services <= {s.service for s in spans} and all(
            any(s.name == name for s in spans) for name in names
        ):
            await asyncio.sleep(1.0)  # the last batches of slower exporters
            return [s for s in sink.spans if s.trace_id == trace_id]
        await asyncio.sleep(0.1)
    got = sorted({(s.service, s.name) for s in sink.spans if s.trace_id == trace_id})
    raise AssertionError(f"trace {trace_id} is missing spans; it has {got}")


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, (service, name, [(s.service, s.name) for s in spans])
    return found[0]


def _ancestors(span: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> list[ReceivedSpan]:
    chain = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        chain.append(span)
    return chain


async def _knowledge_base(client: httpx.AsyncClient, traceparent: str) -> str:
    """Upload the handbook (in the given trace) and wait for its job; the job's id."""
    created = await client.post(
        "/v1/knowledge-bases/handbook/documents",
        json={"title": "Leave policy", "content": HANDBOOK},
        headers={"traceparent": traceparent},
    )
    assert created.status_code == 201, created.text
    job_id: str = created.json()["job"]["id"]
    for _ in range(300):
        job = (await client.get(f"/v1/jobs/{job_id}")).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "succeeded", job
    return job_id


async def test_a_streamed_turn_on_a_knowledge_base_is_one_connected_trace(
    running: Running,
) -> None:
    client = running.client
    upload_parent, _, _ = _traceparent()
    await _knowledge_base(client, upload_parent)
    created = await client.post(
        "/v1/conversations", json={"settings": {"knowledge_base_id": "handbook"}}
    )
    assert created.status_code == 201, created.text
    traceparent, trace_id, caller_span = _traceparent()
    got = await _turn(client, created.json()["id"], traceparent)
    assert got[-1].name == "done", got[-1]
    assert any(e.name == "citations" for e in got), [e.name for e in got]

    spans = await _spans_of(
        running.spans,
        trace_id,
        {"gateway", "conversation", "retrieval", "llm-router"},
        ("chat fake-primary", "search chunks"),
    )
    by_id = {s.span_id: s for s in spans}
    # One root: the gateway's server span, child of the caller's span; every other span's
    # parent is in the trace.
    gateway = _one(spans, "gateway", "POST /v1/conversations/{conversation_id}/messages")
    assert gateway.kind == SERVER
    assert gateway.parent_span_id == caller_span
    orphans = [
        (s.service, s.name) for s in spans if s is not gateway and s.parent_span_id not in by_id
    ]
    assert orphans == []

    send = _one(spans, "conversation", "parley.conversation.v1.ConversationService/SendMessage")
    assert send.kind == SERVER
    assert gateway in _ancestors(send, by_id)
    search = _one(spans, "retrieval", "parley.retrieval.v1.Retrieval/Search")
    assert send in _ancestors(search, by_id)
    vector_search = _one(spans, "retrieval", "search chunks")
    assert by_id[vector_search.parent_span_id] is search
    assert vector_search.attributes["db.system.name"] == "qdrant"
    # The search's wait for its query's vector; the batch that embedded it links to it.
    waits = [s for s in spans if s.name == "embed query" and search in _ancestors(s, by_id)]
    assert len(waits) == 1
    batches = [s for s in spans if s.service == "retrieval" and s.name == "embed queries"]
    assert any((trace_id, waits[0].span_id) in s.links for s in batches)
    stream = _one(spans, "llm-router", "parley.llm_router.v1.LlmRouter/StreamChat")
    assert send in _ancestors(stream, by_id)

    # The model call, with OpenTelemetry's GenAI attributes and its first token.
    chat = _one(spans, "llm-router", "chat fake-primary")
    assert by_id[chat.parent_span_id] is stream
    assert chat.kind == CLIENT
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "primary"
    assert chat.attributes["gen_ai.request.model"] == "fake-primary"
    assert chat.attributes["gen_ai.response.model"] == "fake-primary"
    assert chat.attributes["gen_ai.usage.input_tokens"] > 0
    assert chat.attributes["gen_ai.usage.output_tokens"] == 8
    assert chat.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert [name for name, _ in chat.events] == ["first_token"]
    # The provider's HTTP request, inside the model call (beside Redis's breaker calls when
    # REDIS_URL is set).
    http = [
        s
        for s in spans
        if by_id.get(s.parent_span_id) is chat
        and s.attributes.get("http.request.method", s.attributes.get("http.method")) == "POST"
    ]
    assert len(http) == 1, [(s.name, s.attributes) for s in spans if s.service == "llm-router"]
    assert http[0].kind == CLIENT
    assert str(http[0].attributes.get("url.full", http[0].attributes.get("http.url"))).endswith(
        "/v1/chat/completions"
    )

    # Database statements of conversation, inside its handling of the turn.
    statements = [s for s in spans if s.service == "conversation" and "db.system" in s.attributes]
    assert statements, sorted({(s.service, s.name) for s in spans})
    assert all(send in _ancestors(s, by_id) for s in statements)
    assert {s.attributes["db.system"] for s in statements} == {"sqlite"}


async def test_a_failing_primary_shows_its_retry_and_the_fallback(running: Running) -> None:
    client = running.client
    created = await client.post("/v1/conversations", json={})
    assert created.status_code == 201, created.text
    running.primary.push(Behaviour(fail_status=500), Behaviour(fail_status=500))
    traceparent, trace_id, _ = _traceparent()
    got = await _turn(client, created.json()["id"], traceparent)
    assert got[-1].name == "done", got[-1]
    assert got[-1].data["message"]["model"] == "backup/fake-backup"

    spans = await _spans_of(
        running.spans, trace_id, {"gateway", "llm-router"}, ("chat fake-backup",)
    )
    stream = _one(spans, "llm-router", "parley.llm_router.v1.LlmRouter/StreamChat")
    events = dict(stream.events)
    assert events["retry"] == {
        "parley.candidate": "primary/fake-primary",
        "parley.attempt": 2,
        "error.type": "provider_unavailable",
    }
    assert events["fallback"] == {
        "parley.candidate": "backup/fake-backup",
        "parley.previous_candidate": "primary/fake-primary",
        "error.type": "provider_unavailable",
    }
    failed = [s for s in spans if s.name == "chat fake-primary"]
    assert len(failed) == 2
    assert all(s.attributes["error.type"] == "provider_unavailable" for s in failed)
    assert [name for name, _ in _one(spans, "llm-router", "chat fake-backup").events] == [
        "first_token"
    ]

    # The router's warning about the failed attempts names the trace.
    lines = running.platform.log_path("llm-router").read_text().splitlines()
    warned = [json.loads(line) for line in lines if trace_id in line]
    assert any(w["message"] == "candidate failed before its first token" for w in warned)
    assert all(len(w["span_id"]) == 16 for w in warned)


async def test_an_ingest_job_links_to_the_trace_of_its_upload(running: Running) -> None:
    traceparent, trace_id, _ = _traceparent()
    created = await running.client.post(
        "/v1/knowledge-bases/travel/documents",
        json={"title": "Travel", "content": "Book trains for trips under 500 km."},
        headers={"traceparent": traceparent},
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    upload = await _spans_of(
        running.spans, trace_id, {"gateway", "ingest"}, ("parley.ingest.v1.Ingest/CreateDocument",)
    )
    upload_ids = {s.span_id for s in upload}
    job = None
    for _ in range(200):
        job = next(
            (
                s
                for s in running.spans.spans
                if s.name == "ingest job" and s.attributes.get("parley.job.id") == job_id
            ),
            None,
        )
        if job is not None:
            break
        await asyncio.sleep(0.1)
    assert job is not None, "the job exported no span"
    assert job.kind == CONSUMER
    assert job.trace_id != trace_id  # a trace of its own...
    assert len(job.links) == 1  # ...linked to the span that queued it
    assert job.links[0][0] == trace_id
    assert job.links[0][1] in upload_ids
    assert job.attributes["parley.job.outcome"] == "succeeded"
    work = await _spans_of(
        running.spans, job.trace_id, {"ingest", "retrieval"}, ("embed documents",)
    )
    assert {s.service for s in work} >= {"ingest", "retrieval"}


async def test_latency_histograms_carry_trace_ids_as_exemplars(running: Running) -> None:
    created = await running.client.post("/v1/conversations", json={})
    traceparent, trace_id, _ = _traceparent()
    got = await _turn(running.client, created.json()["id"], traceparent)
    assert got[-1].name == "done"
    async with httpx.AsyncClient() as scraper:
        exposed = await scraper.get(
            f"http://127.0.0.1:{running.metrics_port}/metrics",
            headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        )
    assert exposed.status_code == 200
    ttft = [
        line
        for line in exposed.text.splitlines()
        if line.startswith("parley_llm_time_to_first_token_seconds_bucket")
    ]
    assert any(f'trace_id="{trace_id}"' in line for line in ttft), ttft
