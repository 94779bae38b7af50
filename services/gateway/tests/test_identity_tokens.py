"""Development tokens (``AUTH_MODE=dev``): short-lived by default, refused when valid for too
long, and the ``parley-gateway`` commands that issue them and migrate the gateway's tables."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt

from parley_gateway.auth import DEFAULT_SCOPES, issue_token
from parley_gateway.settings import Settings

from .conftest import Api

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
SECRET = Settings().auth_secret
HOUR, DAY, CENTURY = 3600, 86_400, 100 * 365 * 86_400


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def claims(token: str) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(token, SECRET, algorithms=["HS256"], issuer="parley")
    return decoded


def test_a_development_token_lives_an_hour_without_the_admin_scope() -> None:
    issued = claims(issue_token(SECRET, "parley", tenant="acme", user="ann"))
    assert issued["exp"] - issued["iat"] == HOUR
    assert issued["scope"].split() == ["read", "chat", "documents", "usage"]
    assert "admin" not in DEFAULT_SCOPES


async def test_a_token_valid_for_too_long_is_refused(api: Api, error_of: ErrorOf) -> None:
    async with api() as (client, _):
        century = issue_token(SECRET, "parley", tenant="acme", user="ann", ttl_seconds=CENTURY)
        error = error_of(
            await client.get("/v1/conversations", headers=bearer(century)),
            401,
            "token_lifetime_too_long",
        )
        assert "86400" in error["message"]
        day = issue_token(SECRET, "parley", tenant="acme", user="ann", ttl_seconds=DAY - 60)
        assert (await client.get("/v1/conversations", headers=bearer(day))).status_code == 200

    async with api(auth_max_token_lifetime_seconds=600) as (client, _):
        hour = issue_token(SECRET, "parley", tenant="acme", user="ann")
        error_of(
            await client.get("/v1/conversations", headers=bearer(hour)),
            401,
            "token_lifetime_too_long",
        )


async def test_a_token_whose_tenant_or_user_is_not_an_id_is_refused(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        for tenant, user in (("acme corp", "ann"), ("acme", "ánn"), ("acme", "x" * 129), ("", "a")):
            token = issue_token(SECRET, "parley", tenant=tenant, user=user)
            error_of(
                await client.get("/v1/conversations", headers=bearer(token)), 401, "invalid_token"
            )
        assert fakes.calls == []


async def test_an_admin_may_also_be_a_plain_caller(api: Api) -> None:
    # The default token has no admin scope; one with it may still do the rest.
    async with api() as (client, _):
        plain = bearer(issue_token(SECRET, "parley", tenant="acme", user="ann"))
        assert (await client.get("/v1/admin/api-keys", headers=plain)).status_code == 403
        admin = bearer(
            issue_token(SECRET, "parley", tenant="acme", user="ann", scopes=("admin", "read"))
        )
        assert (await client.get("/v1/admin/api-keys", headers=admin)).status_code == 200
        assert (await client.get("/v1/conversations", headers=admin)).status_code == 200


def _gateway(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "parley_gateway.main", *args],
        capture_output=True,
        text=True,
        env={**environment, **(env or {})},
        timeout=60,
        check=False,
    )


def test_the_token_command_issues_short_tokens_and_refuses_long_or_unknown_ones() -> None:
    issued = _gateway("token", "--tenant", "acme", "--user", "ann")
    assert issued.returncode == 0, issued.stderr
    token = claims(issued.stdout.strip())
    assert token["exp"] - token["iat"] == HOUR
    assert token["tenant"] == "acme"

    too_long = _gateway("token", "--tenant", "acme", "--user", "ann", "--ttl", str(CENTURY))
    assert too_long.returncode != 0
    assert "AUTH_MAX_TOKEN_LIFETIME_SECONDS" in too_long.stderr
    unknown = _gateway("token", "--tenant", "acme", "--user", "ann", "--scopes", "read evrything")
    assert unknown.returncode != 0
    assert "evrything" in unknown.stderr


def test_the_migrate_command_creates_and_drops_the_tables(tmp_path: Path) -> None:
    database = tmp_path / "gateway.db"
    env = {"DATABASE_URL": f"sqlite:///{database}"}
    up = _gateway("migrate", "upgrade", env=env)
    assert up.returncode == 0, up.stderr

    def tables() -> set[str]:
        with sqlite3.connect(database) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}

    assert {"api_keys", "alembic_version_gateway"} <= tables()
    down = _gateway("migrate", "downgrade", env=env)
    assert down.returncode == 0, down.stderr
    assert "api_keys" not in tables()
