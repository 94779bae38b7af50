"""Browser safety over a real socket: CORS for an allowlist of origins (credentials only for
those listed, preflights answered, the limit and request-id headers readable by a page), a
WebSocket handshake from a foreign page refused, and security headers on every response,
errors and the last resort included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from fastapi import FastAPI, WebSocket

from parley.conversation.v1 import conversation_pb2 as conv
from parley_gateway.app import create_app
from parley_gateway.browser import parse_origins
from parley_gateway.settings import Settings

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]

APP = "https://app.example.com"
ORIGINS = f"{APP}, http://localhost:5173"
SECURITY = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "content-security-policy": (
        "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}


def _exposed(response: httpx.Response) -> set[str]:
    header = response.headers["access-control-expose-headers"]
    return {name.strip().lower() for name in header.split(",")}


async def test_a_listed_origin_reads_responses_with_credentials(api: Api) -> None:
    async with api(cors_origins=ORIGINS) as (client, _):
        response = await client.get("/v1/conversations", headers={"Origin": APP})
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == APP
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]
    assert {
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-request-id",
    } <= _exposed(response)


async def test_an_error_carries_cors_headers_so_the_page_can_read_it(
    api: Api, error_of: ErrorOf
) -> None:
    async with api(cors_origins=ORIGINS) as (client, _):
        response = await client.get(
            "/v1/conversations", headers={"Origin": APP, "Authorization": "Bearer nope"}
        )
    error_of(response, 401, "invalid_token")
    assert response.headers["access-control-allow-origin"] == APP


async def test_an_unlisted_origin_gets_no_cors_header(api: Api) -> None:
    async with api(cors_origins=ORIGINS) as (client, _):
        response = await client.get("/v1/conversations", headers={"Origin": "https://evil.example"})
    # The request is served (a browser still sends it); the page cannot read the answer.
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-credentials" not in response.headers
    assert "Origin" in response.headers["vary"]


async def test_a_wildcard_lets_any_origin_read_without_credentials(api: Api) -> None:
    async with api(cors_origins=f"{APP} *") as (client, _):
        anyone = await client.get("/healthz", headers={"Origin": "https://other.example"})
        listed = await client.get("/healthz", headers={"Origin": APP})
    assert anyone.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in anyone.headers
    assert listed.headers["access-control-allow-origin"] == APP
    assert listed.headers["access-control-allow-credentials"] == "true"


async def test_without_cors_origins_no_page_elsewhere_may_read(api: Api) -> None:
    async with api() as (client, _):
        response = await client.get("/healthz", headers={"Origin": APP})
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_from_a_listed_origin_is_answered(api: Api) -> None:
    async with api(cors_origins=ORIGINS, cors_max_age_seconds=120) as (client, fakes):
        response = await client.options(
            "/v1/conversations/c1/messages",
            headers={
                "Origin": "http://localhost:5173",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
            },
        )
    assert response.status_code == 204
    assert response.content == b""
    assert response.headers["access-control-allow-origin"] == "http://localhost:5173"
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "DELETE" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == (
        "authorization, content-type, idempotency-key"
    )
    assert response.headers["access-control-max-age"] == "120"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert fakes.calls == []


async def test_a_preflight_from_another_origin_is_a_403_envelope(
    api: Api, error_of: ErrorOf
) -> None:
    async with api(cors_origins=ORIGINS) as (client, _):
        response = await client.options(
            "/v1/conversations",
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "DELETE",
                "X-Request-ID": "pre-1",
            },
        )
    error = error_of(response, 403, "origin_not_allowed")
    assert error["request_id"] == "pre-1"
    assert "access-control-allow-origin" not in response.headers


async def test_a_plain_options_request_is_not_a_preflight(api: Api, error_of: ErrorOf) -> None:
    async with api(cors_origins=ORIGINS) as (client, _):
        response = await client.options("/v1/conversations", headers={"Origin": APP})
    error_of(response, 405, "method_not_allowed")
    assert response.headers["access-control-allow-origin"] == APP


@pytest.mark.parametrize(
    ("path", "status"),
    [("/healthz", 200), ("/v1/nowhere", 404), ("/v1/conversations/%20", 422)],
)
async def test_security_headers_are_on_every_response(api: Api, path: str, status: int) -> None:
    async with api() as (client, _):
        response = await client.get(path)
    assert response.status_code == status
    for name, value in SECURITY.items():
        assert response.headers[name] == value
    assert "strict-transport-security" not in response.headers


async def test_security_headers_are_on_a_stream_and_the_last_resort(api: Api) -> None:
    broken = conv.Message(id="a1", role=conv.MESSAGE_ROLE_ASSISTANT)
    broken.create_time.seconds = 2**40  # no calendar holds it: the view fails
    async with api(hsts_max_age_seconds=31_536_000) as (client, fakes):
        fakes.conversation.turn = [
            conv.TurnEvent(
                accepted=conv.MessageAccepted(user_message_id="u1", assistant_message_id="a1")
            ),
            conv.TurnEvent(done=conv.TurnDone(message=broken)),
        ]
        streamed = await client.post(
            "/v1/conversations/c1/messages",
            json={"content": "hi"},
            headers={"Accept": "text/event-stream"},
        )
        fakes.conversation.messages = [broken]
        failed = await client.get("/v1/conversations/c1/messages")
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert failed.status_code == 500
    for response in (streamed, failed):
        for name, value in SECURITY.items():
            assert response.headers[name] == value
        assert response.headers["strict-transport-security"] == (
            "max-age=31536000; includeSubDomains"
        )


async def test_the_docs_page_gets_a_policy_that_lets_it_load(api: Api) -> None:
    async with api() as (client, _):
        docs = await client.get("/docs")
        schema = await client.get("/openapi.json")
    csp = docs.headers["content-security-policy"]
    assert "script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net" in csp
    assert "frame-ancestors 'none'" in csp
    assert docs.headers["x-frame-options"] == "DENY"
    assert schema.headers["content-security-policy"] == SECURITY["content-security-policy"]


@asynccontextmanager
async def _with_websocket(settings: Settings) -> AsyncIterator[str]:
    """The gateway app, with a WebSocket route that echoes, served on a loopback port."""
    app: FastAPI = create_app(settings)

    @app.websocket("/test/echo")
    async def echo(socket: WebSocket) -> None:
        await socket.accept()
        await socket.send_text(await socket.receive_text())
        await socket.close()

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/test/echo"
    finally:
        server.should_exit = True
        await task


async def test_a_websocket_from_a_foreign_page_is_refused(tmp_path: Any) -> None:
    settings = Settings(
        cors_origins=APP,
        database_url=f"sqlite:///{tmp_path}/gateway.db",
        conversation_addr="127.0.0.1:9",
        ingest_addr="127.0.0.1:9",
        llm_router_addr="127.0.0.1:9",
    )
    async with _with_websocket(settings) as url:
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
        for origin in (APP, None, url.replace("ws://", "http://").split("/test")[0]):
            async with websockets.connect(url, origin=origin) as socket:
                await socket.send("ping")
                assert await socket.recv() == "ping"


@pytest.mark.parametrize(
    "value", ["https://app.example.com/", "app.example.com", "https://a.example/path", "null"]
)
def test_a_wrong_origin_stops_the_gateway_at_start(value: str) -> None:
    with pytest.raises(ValueError, match="is not an origin"):
        Settings(cors_origins=value)


def test_origins_are_compared_without_case() -> None:
    origins = parse_origins("HTTPS://App.Example.com:8443, *")
    assert origins.listed == frozenset({"https://app.example.com:8443"})
    assert origins.any
