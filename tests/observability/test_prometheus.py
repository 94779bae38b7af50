"""Every dashboard query and every rule, evaluated by a real Prometheus scraping the five
services.

The platform runs as processes with two OpenAI-protocol fakes behind one alias (``primary``,
then ``backup``) and traces sent to a loopback OTLP receiver; gateway and llm-router keep
limits, breakers and the response cache in a Redis of the test's own. It serves turns (one
retried, one that falls back, one that fails after its first token, one from the response
cache), an ingest job and searches (one with no result). Prometheus (Debian's, on free
loopback ports, its data in a temporary folder) scrapes every service's metrics port each
second and evaluates the built rules each second. Then each expression goes through the HTTP
API: each must parse, and each must return series, except the alerts' full conditions
(silent on a healthy platform: the values they compare must have series) and the queries on
kube-state-metrics (``promql.KUBERNETES_METRICS``: no cluster here; they must parse).
Finally the time-to-first-token histogram must carry exemplars with trace ids, as the
dashboards' links to Tempo need.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as ts
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as ts_grpc

from parley_devstack import Platform
from parley_devstack.platform import SERVICES, free_port
from parley_fakes import Fake, OpenAIFake
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings
from parley_testkit.redis import PrivateRedis

from .queries import RULES, Expression, all_expressions, metric_names, names_read

pytestmark = [pytest.mark.e2e]

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
        price: {{input: 0.15, output: 0.60}}
        max_attempts: 2
        timeouts: {{connect: 1, first_token: 2, between_tokens: 5, total: 30}}
      - provider: backup
        model: fake-backup
        price: {{input: 1.0, output: 5.0}}
        max_attempts: 1
"""
HANDBOOK = (
    "# Leave\n\nEmployees have 25 days of paid leave a year. Requests go to the manager two "
    "weeks ahead.\n\n# Travel\n\nThe travel allowance is 40 euros a day within the country."
)


def _prometheus() -> str:
    found = shutil.which("prometheus")
    if found is None:
        reason = "prometheus is not installed (scripts/system-packages.sh installs it)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return found


class _Discard(ts_grpc.TraceServiceServicer):
    """Accepts spans and drops them: the services trace (so exemplars carry trace ids)."""

    async def Export(
        self, request: ts.ExportTraceServiceRequest, context: grpc.aio.ServicerContext
    ) -> ts.ExportTraceServiceResponse:
        return ts.ExportTraceServiceResponse()


@contextlib.asynccontextmanager
async def _otlp_sink() -> AsyncIterator[str]:
    server = grpc.aio.server()
    ts_grpc.add_TraceServiceServicer_to_server(_Discard(), server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await server.stop(None)


@contextlib.asynccontextmanager
async def _prometheus_scraping(folder: Path, targets: dict[str, int]) -> AsyncIterator[str]:
    """Prometheus scraping each ``job: metrics port`` and evaluating the built rules, every
    second; yields its URL."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
    (folder / "rules.yaml").write_text(yaml.safe_dump(rules))
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yaml"],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (folder / "prometheus.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        _prometheus(),
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        stdout=log,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{url}/-/ready")).status_code == 200:
                        break
                assert process.returncode is None, (folder / "prometheus.log").read_text()
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("Prometheus not ready within 10 s")
        yield url
    finally:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.close()


async def _stream(client: httpx.AsyncClient, conversation_id: str, content: str) -> str:
    """Send a message over SSE; the name of the stream's last event."""
    last = ""
    async with client.stream(
        "POST",
        f"/v1/conversations/{conversation_id}/messages",
        json={"content": content},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                last = line.removeprefix("event:").strip()
    return last


async def _drive(client: httpx.AsyncClient, primary: Fake) -> None:
    """An ingest job, searches, and turns that succeed, retry, fall back, fail, hit the cache."""
    created = await client.post(
        "/v1/knowledge-bases/handbook/documents", json={"title": "Handbook", "content": HANDBOOK}
    )
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    started = time.monotonic()
    while (job := (await client.get(f"/v1/jobs/{job_id}")).json())["state"] != "succeeded":
        assert job["state"] != "failed", job
        assert time.monotonic() - started < 30, job
        await asyncio.sleep(0.1)
    for kb in ("handbook", "nothing-here"):
        found = await client.post(f"/v1/knowledge-bases/{kb}/search", json={"query": "leave"})
        assert found.status_code == 200, found.text

    grounded = await client.post(
        "/v1/conversations", json={"settings": {"knowledge_base_id": "handbook"}}
    )
    conversation_id = grounded.json()["id"]
    assert await _stream(client, conversation_id, "How many days of leave?") == "done"
    # Every call to the primary drops its stream after its first tokens: a failed turn (the
    # answer belongs to the primary once it has spoken). Set as the fake's default, not
    # queued, as the conversation may call the model for more than the answer.
    primary.set_behaviour(tokens=20, token_delay_ms=10, drop_after_tokens=6)
    assert await _stream(client, conversation_id, "And the travel allowance?") == "error"
    primary.set_behaviour(tokens=12, token_delay_ms=5)
    assert await _stream(client, conversation_id, "And in the first year?") == "done"
    # Every call to the primary fails: retried once, then the backup answers.
    primary.set_behaviour(fail_status=500)
    assert await _stream(client, conversation_id, "Who approves it?") == "done"
    primary.set_behaviour(tokens=12, token_delay_ms=5)
    # The same cacheable request twice: a miss, then a hit.
    body = {"model": "default", "temperature": 0, "messages": [{"role": "user", "content": "Hi"}]}
    for _ in range(2):
        answered = await client.post("/openai/v1/chat/completions", json=body)
        assert answered.status_code == 200, answered.text


async def _evaluate(client: httpx.AsyncClient, expr: str) -> tuple[str | None, int]:
    """Prometheus's error for ``expr`` (None when it parses and runs), and its series count."""
    got = await client.get("/api/v1/query", params={"query": expr})
    body: dict[str, Any] = got.json()
    if body["status"] != "success":
        return f"{body.get('errorType')}: {body.get('error')}", 0
    return None, len(body["data"]["result"])


async def _problems(client: httpx.AsyncClient, expressions: list[Expression]) -> list[str]:
    problems = []
    for expression in expressions:
        error, series = await _evaluate(client, expression.expr)
        if error is not None:
            problems.append(f"{expression.where}: does not parse: {error}")
        elif series == 0 and expression.must_return_series and not expression.kubernetes_only:
            problems.append(f"{expression.where}: no series for {expression.expr}")
    return problems


async def _missing_metrics(client: httpx.AsyncClient) -> list[str]:
    missing = []
    for name in sorted(names_read()):
        if name.startswith("kube_"):
            continue
        _, series = await _evaluate(client, f'count({{__name__="{name}"}})')
        if series == 0:
            missing.append(name)
    return missing


@pytest.fixture
async def redis(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    """A Redis of the test's own (its series, such as Redis errors, exist only with one)."""
    if shutil.which("redis-server") is None:
        reason = "redis-server is not installed"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = PrivateRedis(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def test_every_dashboard_query_and_rule_returns_series(
    tmp_path: Path, redis: PrivateRedis
) -> None:
    metrics = {name: free_port() for name in SERVICES}
    with (
        OpenAIFake(tokens=12, token_delay_ms=5) as primary,
        OpenAIFake(tokens=12, token_delay_ms=5) as backup,
    ):
        routes = tmp_path / "routes.yaml"
        routes.write_text(ROUTES.format(primary=primary.base_url, backup=backup.base_url))
        async with _otlp_sink() as otlp:
            platform = Platform(
                data_dir=tmp_path / "platform",
                env={"LOG_LEVEL": "WARNING", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp},
                per_service_env={
                    name: {
                        "METRICS_PORT": str(port),
                        **({"ROUTES_FILE": str(routes)} if name == "llm-router" else {}),
                        **({"REDIS_URL": redis.url} if name in ("gateway", "llm-router") else {}),
                    }
                    for name, port in metrics.items()
                },
            )
            prometheus_folder = tmp_path / "prometheus"
            prometheus_folder.mkdir()
            settings = GatewaySettings()
            token = issue_token(
                settings.auth_secret, settings.auth_issuer, tenant="acme", user="ann"
            )
            await platform.start()
            try:
                async with (
                    _prometheus_scraping(prometheus_folder, metrics) as prometheus_url,
                    httpx.AsyncClient(
                        base_url=platform.gateway_url,
                        headers={"Authorization": f"Bearer {token}"},
                        timeout=30,
                    ) as client,
                    httpx.AsyncClient(base_url=prometheus_url, timeout=10) as prometheus,
                ):
                    await _drive(client, primary)
                    expressions = all_expressions()
                    # Scrapes and rule evaluations every second: a rate needs two samples
                    # after the traffic, a recording rule one evaluation after that.
                    problems = await _problems(prometheus, expressions)
                    for _ in range(20):
                        if not problems:
                            break
                        await asyncio.sleep(1)
                        problems = await _problems(prometheus, expressions)
                    missing = await _missing_metrics(prometheus)
                    exemplars = await prometheus.get(
                        "/api/v1/query_exemplars",
                        params={
                            "query": "parley_gateway_time_to_first_token_seconds_bucket",
                            "start": time.time() - 300,
                            "end": time.time(),
                        },
                    )
            finally:
                await platform.stop()

    report = "\n".join(
        [
            f"metrics no service exports ({len(missing)}):",
            *missing,
            f"expressions without series or that fail ({len(problems)} of {len(expressions)}):",
            *problems,
        ]
    )
    assert not missing, report
    assert not problems, report
    trace_ids = {
        exemplar["labels"].get("trace_id")
        for series in exemplars.json()["data"]
        for exemplar in series["exemplars"]
    }
    assert trace_ids - {None}, "no exemplar with a trace_id on the time-to-first-token histogram"
    # The Kubernetes-only queries are few and read nothing else.
    kubernetes_only = [e for e in expressions if e.kubernetes_only]
    assert 0 < len(kubernetes_only) <= 6, [e.where for e in kubernetes_only]
    assert all(metric_names(e.expr) for e in kubernetes_only)
