"""The error envelope on every path a client can take: unknown routes, wrong methods (with
``Allow``), and the OpenAPI document, which lists each route's real statuses."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

# The ``api`` and ``error_of`` fixtures (conftest.py).
Api = Callable[..., AbstractAsyncContextManager[tuple[httpx.AsyncClient, Any]]]
ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/v1/conversations/c1", "DELETE, GET, PATCH"),
        ("POST", "/v1/conversations/c1", "DELETE, GET, PATCH"),
        ("DELETE", "/v1/conversations", "GET, POST"),
        ("POST", "/v1/models", "GET"),
        ("PATCH", "/v1/knowledge-bases/kb/documents", "GET, POST"),
    ],
)
async def test_a_wrong_method_is_405_naming_the_allowed_ones(
    api: Api, error_of: ErrorOf, method: str, path: str, allow: str
) -> None:
    async with api() as (client, fakes):
        response = await client.request(method, path, json={})
    error_of(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert fakes.calls == []


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE"])
async def test_an_unknown_route_is_a_404_envelope(api: Api, error_of: ErrorOf, method: str) -> None:
    async with api() as (client, _):
        response = await client.request(method, "/v1/nothing/here")
    error_of(response, 404, "not_found")


# What each route really returns besides its success, as the OpenAPI document must say.
STATUSES = {
    ("post", "/v1/conversations"): {400, 401, 403, 413, 422, 429, 500, 503},
    ("get", "/v1/conversations"): {401, 403, 422, 429, 500, 503},
    ("get", "/v1/conversations/{conversation_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("patch", "/v1/conversations/{conversation_id}"): {400, 401, 403, 404, 413, 422, 429, 500, 503},
    ("delete", "/v1/conversations/{conversation_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("get", "/v1/conversations/{conversation_id}/messages"): {401, 403, 404, 422, 429, 500, 503},
    ("post", "/v1/conversations/{conversation_id}/messages"): {
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        429,
        500,
        502,
        503,
    },
    ("post", "/v1/knowledge-bases/{knowledge_base_id}/documents"): {
        400,
        401,
        403,
        413,
        415,
        422,
        429,
        500,
        503,
    },
    ("get", "/v1/knowledge-bases/{knowledge_base_id}/documents"): {401, 403, 422, 429, 500, 503},
    ("get", "/v1/knowledge-bases"): {401, 403, 422, 429, 500, 503},
    ("post", "/v1/knowledge-bases/{knowledge_base_id}/reindex"): {
        400,
        401,
        403,
        404,
        413,
        422,
        429,
        500,
        503,
    },
    ("get", "/v1/documents/{document_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("delete", "/v1/documents/{document_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("get", "/v1/jobs/{job_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("get", "/v1/models"): {401, 403, 429, 500, 503},
    ("get", "/v1/limits"): {401, 403, 429, 500, 503},
    ("post", "/v1/admin/api-keys"): {400, 401, 403, 413, 422, 429, 500, 503},
    ("get", "/v1/admin/api-keys"): {401, 403, 422, 429, 500, 503},
    ("get", "/v1/admin/api-keys/{key_id}"): {401, 403, 404, 422, 429, 500, 503},
    ("delete", "/v1/admin/api-keys/{key_id}"): {401, 403, 404, 422, 429, 500, 503},
    # The rest of the API (tests/api).
    ("post", "/v1/conversations/{conversation_id}/regenerate"): {
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        429,
        500,
        502,
        503,
    },
    ("get", "/v1/conversations/{conversation_id}/messages/{message_id}"): {
        401,
        403,
        404,
        422,
        429,
        500,
        503,
    },
    ("get", "/v1/conversations/{conversation_id}/messages/{message_id}/events"): {
        401,
        403,
        404,
        409,
        422,
        429,
        500,
        503,
    },
    ("post", "/v1/conversations/{conversation_id}/messages/{message_id}/cancel"): {
        401,
        403,
        404,
        409,
        422,
        429,
        500,
        503,
    },
    ("put", "/v1/conversations/{conversation_id}/messages/{message_id}/feedback"): {
        400,
        401,
        403,
        404,
        409,
        413,
        422,
        429,
        500,
        503,
    },
    ("post", "/v1/knowledge-bases/{knowledge_base_id}/documents/upload"): {
        401,
        403,
        413,
        415,
        422,
        429,
        500,
        503,
    },
    ("post", "/v1/knowledge-bases/{knowledge_base_id}/search"): {
        400,
        401,
        403,
        413,
        422,
        429,
        500,
        503,
    },
    ("get", "/v1/usage"): {401, 403, 422, 429, 500, 503},
    ("get", "/v1/me"): {401, 403, 429, 500, 503},
    ("get", "/v1/me/export"): {401, 403, 429, 500, 503},
    ("delete", "/v1/me/data"): {401, 403, 429, 500, 503},
    ("get", "/v1/admin/users/{user_id}/export"): {401, 403, 422, 429, 500, 503},
    ("delete", "/v1/admin/users/{user_id}/data"): {401, 403, 422, 429, 500, 503},
    ("get", "/v1/memories"): {401, 403, 422, 429, 500, 503},
    ("patch", "/v1/memories/{memory_id}"): {400, 401, 403, 404, 413, 422, 429, 500, 503},
    ("delete", "/v1/memories/{memory_id}"): {401, 403, 404, 422, 429, 500, 503},
}


async def test_openapi_lists_every_status_of_each_route_with_the_envelope(api: Api) -> None:
    async with api() as (client, _):
        document = (await client.get("/openapi.json")).json()
    listed = {
        (method, path): {int(s) for s in operation["responses"] if not s.startswith("2")}
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
        if path.startswith("/v1/")
    }
    assert listed == STATUSES
    for path, operations in document["paths"].items():
        if path.startswith("/openai/"):
            continue  # OpenAI's error shape there (test_openai.py)
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status.startswith("4") or (status.startswith("5") and path != "/readyz"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}
    schemas = document["components"]["schemas"]
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "request_id"}
    assert "HTTPValidationError" not in schemas
    send = document["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]
    parameters = {p["name"]: p for p in send["parameters"]}
    assert parameters["conversation_id"]["schema"]["pattern"] == "^[A-Za-z0-9._:-]{1,128}$"


async def test_a_body_that_is_not_utf8_is_a_400_envelope(api: Api, error_of: ErrorOf) -> None:
    async with api() as (client, fakes):
        response = await client.post(
            "/v1/conversations/c1/messages",
            content=b'{"content": "caf\xe9"}',
            headers={"Content-Type": "application/json"},
        )
    error_of(response, 400, "bad_request")
    assert fakes.calls == []
