"""What the gateway itself guarantees, whatever the backends do: identity, validation,
the error envelope, and a quick 503 when a backend is down."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings

# The ``serve_gateway`` fixture (conftest.py).
Serve = Callable[[Settings], AbstractAsyncContextManager[httpx.AsyncClient]]


OTHER_SECRET = "another-secret-of-at-least-32-bytes!"


def _dead_address() -> str:
    """A loopback port with nothing listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
async def gateway(serve_gateway: Serve) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    dead = _dead_address()
    settings = Settings(
        conversation_addr=dead,
        ingest_addr=dead,
        llm_router_addr=dead,
        request_timeout_seconds=2,
        max_message_chars=100,
    )
    async with serve_gateway(settings) as client:
        yield client, settings


def _auth(settings: Settings, tenant: str = "acme", user: str = "ann") -> dict[str, str]:
    token = issue_token(settings.auth_secret, settings.auth_issuer, tenant=tenant, user=user)
    return {"Authorization": f"Bearer {token}"}


async def test_no_credentials_is_401_with_the_envelope(gateway: tuple) -> None:
    client, _ = gateway
    response = await client.post("/v1/conversations", json={})
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "missing_credentials"
    assert error["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize(
    ("token", "code"),
    [
        (
            issue_token("another-secret-of-at-least-32-bytes!", "parley", tenant="t", user="u"),
            "invalid_token",
        ),
        (
            issue_token(Settings().auth_secret, "parley", tenant="t", user="u", ttl_seconds=-10),
            "token_expired",
        ),
        ("not-a-jwt", "invalid_token"),
    ],
)
async def test_wrong_credentials_are_401(gateway: tuple, token: str, code: str) -> None:
    client, _ = gateway
    response = await client.get("/v1/conversations/x", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code


async def test_malformed_json_is_422(gateway: tuple) -> None:
    client, settings = gateway
    response = await client.post(
        "/v1/conversations/c1/messages",
        content=b'{"content": "hi"',
        headers={**_auth(settings), "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["error"]["message"]


async def test_missing_field_is_422_with_its_path(gateway: tuple) -> None:
    client, settings = gateway
    response = await client.post("/v1/conversations/c1/messages", json={}, headers=_auth(settings))
    assert response.status_code == 422
    assert "body.content: Field required" in response.json()["error"]["message"]


async def test_clients_cannot_send_a_role(gateway: tuple) -> None:
    client, settings = gateway
    response = await client.post(
        "/v1/conversations/c1/messages",
        json={"content": "hi", "role": "system"},
        headers=_auth(settings),
    )
    assert response.status_code == 422
    assert "body.role" in response.json()["error"]["message"]


async def test_empty_message_is_422(gateway: tuple) -> None:
    client, settings = gateway
    response = await client.post(
        "/v1/conversations/c1/messages", json={"content": "   "}, headers=_auth(settings)
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "empty_message"


async def test_oversized_message_is_422_naming_the_limit(gateway: tuple) -> None:
    client, settings = gateway
    response = await client.post(
        "/v1/conversations/c1/messages", json={"content": "x" * 101}, headers=_auth(settings)
    )
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "message_too_long"
    assert "at most 100 characters" in body["message"]


async def test_a_dead_backend_is_a_quick_503_with_retry_after(gateway: tuple) -> None:
    client, settings = gateway
    started = time.monotonic()
    response = await client.post("/v1/conversations", json={}, headers=_auth(settings))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["code"] == "service_unavailable"
    assert time.monotonic() - started < settings.request_timeout_seconds + 1


async def test_streamed_turn_against_a_dead_backend_is_503_not_a_broken_stream(
    gateway: tuple,
) -> None:
    client, settings = gateway
    response = await client.post(
        "/v1/conversations/c1/messages",
        json={"content": "hello"},
        headers={**_auth(settings), "Accept": "text/event-stream"},
    )
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")


async def test_readiness_reports_each_backend(gateway: tuple) -> None:
    client, _ = gateway
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "conversation": False,
        "ingest": False,
        "llm-router": False,
    }


async def test_unknown_route_is_404_envelope(gateway: tuple) -> None:
    client, _ = gateway
    response = await client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
