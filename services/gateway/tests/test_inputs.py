"""Input a client can send that no peer should see: text that is not valid Unicode or holds
NUL, booleans as numbers, ids outside Parley's alphabet, unsafe headers. Each is a 422 naming
its field, and nothing reaches a peer."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]


JSON = {"Content-Type": "application/json"}

BAD_TEXT = [
    ("POST", "/v1/conversations/c1/messages", rb'{"content": "\ud800"}', "body.content"),
    ("POST", "/v1/conversations/c1/messages", rb'{"content": "a\u0000b"}', "body.content"),
    (
        "POST",
        "/v1/conversations/c1/messages",
        rb'{"content": "hi", "model": "\udc00"}',
        "body.model",
    ),
    ("POST", "/v1/conversations", rb'{"title": "\udfff x"}', "body.title"),
    ("POST", "/v1/conversations", rb'{"settings": {"model": "m\u0000"}}', "body.settings.model"),
    ("PATCH", "/v1/conversations/c1", rb'{"title": "caf\u00e9 \ud83d"}', "body.title"),
    ("POST", "/v1/knowledge-bases/kb/documents", rb'{"content": "a\u0000"}', "body.content"),
    (
        "POST",
        "/v1/knowledge-bases/kb/documents",
        rb'{"content": "x", "metadata": {"k": "\ud800"}}',
        "body.metadata.k",
    ),
    (
        "POST",
        "/v1/knowledge-bases/kb/documents",
        rb'{"content": "x", "metadata": {"\ud800": "v"}}',
        "body.metadata",
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), BAD_TEXT)
async def test_text_with_a_surrogate_or_nul_is_422_naming_the_field(
    api: Api, error_of: ErrorOf, method: str, path: str, body: bytes, field: str
) -> None:
    async with api() as (client, fakes):
        response = await client.request(method, path, content=body, headers=JSON)
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith(field)
    assert "NUL" in error["message"] or "surrogate" in error["message"]
    assert fakes.calls == []


async def test_valid_text_outside_ascii_reaches_the_peer(api: Api) -> None:
    async with api() as (client, fakes):
        response = await client.post(
            "/v1/conversations",
            content='{"title": "Caf\\u00e9 \\ud83d\\ude00 日本"}'.encode(),
            headers=JSON,
        )
    assert response.status_code == 201
    assert fakes.conversation.calls[0].request.title == "Café 😀 日本"


@pytest.mark.parametrize("temperature", [True, False, "0.5", None])
async def test_a_temperature_is_a_number_not_a_boolean_or_a_string(
    api: Api, error_of: ErrorOf, temperature: Any
) -> None:
    async with api() as (client, fakes):
        response = await client.post(
            "/v1/conversations", json={"settings": {"temperature": temperature}}
        )
    if temperature is None:
        assert response.status_code == 201
        return
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith("body.settings.temperature")
    assert fakes.calls == []


async def test_an_integer_temperature_is_a_number(api: Api) -> None:
    async with api() as (client, fakes):
        response = await client.post("/v1/conversations", json={"settings": {"temperature": 1}})
    assert response.status_code == 201
    assert fakes.conversation.calls[0].request.settings.temperature == 1.0


@pytest.mark.parametrize(
    ("method", "path", "field"),
    [
        ("GET", "/v1/conversations/a%20b", "path.conversation_id"),
        ("GET", "/v1/conversations/caf%C3%A9", "path.conversation_id"),
        ("GET", "/v1/conversations/a%00b/messages", "path.conversation_id"),
        ("DELETE", "/v1/conversations/" + "x" * 129, "path.conversation_id"),
        ("GET", "/v1/documents/doc%0A1", "path.document_id"),
        ("GET", "/v1/jobs/job%3B1", "path.job_id"),
        ("GET", "/v1/knowledge-bases/hand%20book/documents", "path.knowledge_base_id"),
    ],
)
async def test_an_id_outside_parleys_alphabet_is_422_and_reaches_no_peer(
    api: Api, error_of: ErrorOf, method: str, path: str, field: str
) -> None:
    async with api() as (client, fakes):
        response = await client.request(method, path)
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith(field)
    assert fakes.calls == []


async def test_a_knowledge_base_named_in_settings_follows_the_same_alphabet(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        response = await client.post(
            "/v1/conversations", json={"settings": {"knowledge_base_id": "hand book"}}
        )
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith("body.settings.knowledge_base_id")
    assert fakes.calls == []


async def test_a_non_ascii_idempotency_key_is_422(api: Api, error_of: ErrorOf) -> None:
    async with api() as (client, fakes):
        response = await client.post(
            "/v1/conversations/c1/messages",
            json={"content": "hi"},
            headers={b"Idempotency-Key": "clé".encode()},
        )
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith("header.idempotency-key")
    assert fakes.calls == []


async def test_a_page_token_parley_did_not_issue_is_422(api: Api, error_of: ErrorOf) -> None:
    async with api() as (client, fakes):
        response = await client.get("/v1/conversations", params={"page_token": "a\x00b"})
    error = error_of(response, 422, "invalid_request")
    assert error["message"].startswith("query.page_token")
    assert fakes.calls == []
