"""Scopes on every route, read from the app itself: a route that declares neither a scope
(``require``) nor that it is open to anyone (``PUBLIC``) fails here, and each route refuses a
caller who holds every scope but one it needs (403 ``missing_scope`` naming it, before any
peer is called) and admits one who holds only those it needs."""

from __future__ import annotations

import re
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from parley_gateway.app import create_app
from parley_gateway.auth import SCOPES, Anyone, RequiredScope, issue_token
from parley_gateway.settings import Settings

from .conftest import Api

SECRET = Settings().auth_secret


def declared_scopes(dependant: Dependant) -> set[str]:
    """Every scope the route's dependencies require, however deeply; ``"public"`` for the
    mark of a route open to anyone."""
    found: set[str] = set()
    for sub in dependant.dependencies:
        if isinstance(sub.call, RequiredScope):
            found.add(sub.call.scope)
        elif isinstance(sub.call, Anyone):
            found.add("public")
        found |= declared_scopes(sub)
    return found


def routes() -> list[tuple[str, str, set[str]]]:
    """(method, path, scopes) of every HTTP route of the app, as it serves them (with the
    prefixes and dependencies of the routers that include them)."""
    app = create_app(Settings())
    return [
        (method, str(route.path), declared_scopes(route.dependant))
        for route in iter_route_contexts(app.routes)
        if isinstance(route.original_route, APIRoute)
        for method in sorted((route.methods or set()) - {"HEAD"})
    ]


def token(*scopes: str) -> dict[str, str]:
    issued = issue_token(SECRET, "parley", tenant="acme", user="ann", scopes=scopes)
    return {"Authorization": f"Bearer {issued}"}


def test_every_route_declares_its_scopes_or_that_it_is_public() -> None:
    found = routes()
    assert len(found) > 15, "the app's routes were not found: this test would prove nothing"
    undeclared = [f"{method} {path}" for method, path, scopes in found if not scopes]
    assert undeclared == [], f"routes without require(<scope>) or PUBLIC: {undeclared}"
    # Public, or scoped: not both.
    mixed = [f"{m} {path}" for m, path, scopes in found if "public" in scopes and len(scopes) > 1]
    assert mixed == []
    # Only what must answer without credentials is public: probes, the OpenAI surface's
    # unknown paths, the chat page and its files, and the sign-in that hands out credentials.
    public = {path for _, path, scopes in found if scopes == {"public"}}
    page = {"/", "/assets/{build}/{name}", "/v1/dev/sign-in"}
    assert public <= {"/healthz", "/readyz", "/openai/{path:path}", *page}


async def _call(client: Any, method: str, path: str, headers: dict[str, str]) -> Any:
    url = re.sub(r"\{[^}]+\}", "probe1", path)
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return await client.request(method, url, json=body, headers=headers)


async def test_each_route_refuses_a_caller_without_a_scope_it_needs_and_admits_one_with_them(
    api: Api,
) -> None:
    failures = []
    checked = 0
    async with api() as (client, fakes):
        for method, path, scopes in routes():
            if "public" in scopes:
                continue
            for scope in sorted(scopes):
                before = len(fakes.calls)
                others = tuple(s for s in SCOPES if s != scope)
                refused = await _call(client, method, path, token(*others))
                if (
                    refused.status_code != 403
                    or "missing_scope" not in refused.text
                    or f"'{scope}'" not in refused.text
                ):
                    failures.append(f"{method} {path} without {scope}: {refused.status_code}")
                if len(fakes.calls) != before:
                    failures.append(f"{method} {path} without {scope} reached a peer")
            anonymous = await _call(client, method, path, {"Authorization": ""})
            if anonymous.status_code != 401:
                failures.append(f"{method} {path} anonymous: {anonymous.status_code}")
            admitted = await _call(client, method, path, token(*sorted(scopes)))
            if admitted.status_code in (401, 403):
                failures.append(f"{method} {path} with {scopes}: {admitted.status_code}")
            checked += 1
    assert failures == []
    assert checked > 15


async def test_openapi_lists_each_routes_scope_under_the_bearer_scheme(api: Api) -> None:
    async with api() as (client, _):
        document = (await client.get("/openapi.json")).json()
    scheme = document["components"]["securitySchemes"]["bearer"]
    assert scheme == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT, or an API key (pk_...)",
        "description": scheme["description"],
    }
    send = document["paths"]["/v1/conversations/{conversation_id}/messages"]["post"]
    assert send["security"] == [{"bearer": ["chat"]}]
    keys = document["paths"]["/v1/admin/api-keys"]["get"]
    assert keys["security"] == [{"bearer": ["admin"]}]
    assert "security" not in document["paths"]["/healthz"]["get"]
