"""API keys: made by a tenant's admin, shown once, used as a bearer credential, listed without
their secret, revoked, expired, and invisible to other tenants. On a SQLite file and on a
fresh PostgreSQL database (the ``database_url`` fixture)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from parley_gateway.apikeys import digest
from parley_gateway.auth import SCOPES, issue_token
from parley_gateway.identity import MIGRATIONS, VERSION_TABLE
from parley_gateway.settings import Settings
from parley_runtime import db

from .conftest import Api

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
SECRET = Settings().auth_secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin(
    tenant: str = "acme", user: str = "root", scopes: tuple[str, ...] = SCOPES
) -> dict[str, str]:
    return bearer(issue_token(SECRET, "parley", tenant=tenant, user=user, scopes=scopes))


async def create_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"name": "sync", "scopes": ["read"], **body}
    response = await client.post("/v1/admin/api-keys", json=body, headers=admin())
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_migrations_go_up_and_down(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.downgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)


async def test_a_key_is_made_used_listed_revoked_and_then_refused(
    api: Api, database_url: str, error_of: ErrorOf, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with api(database_url=database_url) as (client, fakes):
        created = await create_key(client, name="nightly sync", scopes=["read"], user_id="bot")
        key = created["key"]
        prefix, secret = key.removeprefix("pk_").split("_")
        assert key.startswith("pk_")
        assert len(prefix) == 12
        assert len(secret) == 40
        assert created["prefix"] == f"pk_{prefix}"
        assert created["scopes"] == ["read"]
        assert created["user_id"] == "bot"
        assert created["created_by"] == "root"
        assert created["revoked_at"] is None
        assert created["expires_at"] is None

        # Used as a bearer credential: it reads, as the user it acts for, with its scopes.
        used = await client.get("/v1/conversations", headers=bearer(key))
        assert used.status_code == 200, used.text
        assert fakes.conversation.calls[-1].method == "ListConversations"
        error = error_of(
            await client.post("/v1/conversations", json={}, headers=bearer(key)),
            403,
            "missing_scope",
        )
        assert "'chat'" in error["message"]

        listed = await client.get("/v1/admin/api-keys", headers=admin())
        assert listed.status_code == 200
        (shown,) = listed.json()["api_keys"]
        assert shown["id"] == created["id"]
        assert shown["prefix"] == f"pk_{prefix}"
        assert "key" not in shown
        assert secret not in listed.text
        assert digest(key) not in listed.text
        single = await client.get(f"/v1/admin/api-keys/{created['id']}", headers=admin())
        assert single.status_code == 200
        assert secret not in single.text

        revoked = await client.delete(f"/v1/admin/api-keys/{created['id']}", headers=admin())
        assert revoked.status_code == 204
        error_of(await client.get("/v1/conversations", headers=bearer(key)), 401, "api_key_revoked")
        again = await client.delete(f"/v1/admin/api-keys/{created['id']}", headers=admin())
        assert again.status_code == 204
        after = (await client.get(f"/v1/admin/api-keys/{created['id']}", headers=admin())).json()
        assert after["revoked_at"] is not None

    logged = [f"{record.getMessage()} {record.__dict__}" for record in caplog.records]
    assert logged, "the gateway logged nothing: the check below would prove nothing"
    assert not [line for line in logged if secret in line]


async def test_a_wrong_or_malformed_key_is_refused_without_reaching_a_peer(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, fakes):
        key = (await create_key(client))["key"]
        wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
        for credential in (wrong, "pk_short", "pk_" + "a" * 12 + "_" + "b" * 40, key + "x"):
            error = error_of(
                await client.get("/v1/conversations", headers=bearer(credential)),
                401,
                "invalid_api_key",
            )
            assert credential not in error["message"]
        assert fakes.calls == []


async def test_an_expired_key_is_refused(api: Api, error_of: ErrorOf) -> None:
    async with api() as (client, _):
        soon = datetime.now(UTC) + timedelta(seconds=1.5)
        key = (await create_key(client, expires_at=soon.isoformat()))["key"]
        assert (await client.get("/v1/conversations", headers=bearer(key))).status_code == 200
        await asyncio.sleep(max(0.0, soon.timestamp() - time.time()) + 0.1)
        error_of(await client.get("/v1/conversations", headers=bearer(key)), 401, "api_key_expired")

        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        refused = await client.post(
            "/v1/admin/api-keys",
            json={"name": "x", "scopes": ["read"], "expires_at": past},
            headers=admin(),
        )
        error_of(refused, 422, "invalid_expiry")
        naive = await client.post(
            "/v1/admin/api-keys",
            json={"name": "x", "scopes": ["read"], "expires_at": "2099-01-01T00:00:00"},
            headers=admin(),
        )
        error_of(naive, 422, "invalid_request")


async def test_another_tenants_admin_can_neither_see_nor_revoke_a_key(
    api: Api, database_url: str, error_of: ErrorOf
) -> None:
    async with api(database_url=database_url) as (client, _):
        created = await create_key(client)
        other = admin(tenant="globex", user="root")
        listed = await client.get("/v1/admin/api-keys", headers=other)
        assert listed.status_code == 200
        assert listed.json()["api_keys"] == []
        error_of(
            await client.get(f"/v1/admin/api-keys/{created['id']}", headers=other),
            404,
            "api_key_not_found",
        )
        error_of(
            await client.delete(f"/v1/admin/api-keys/{created['id']}", headers=other),
            404,
            "api_key_not_found",
        )
        # Still alive for its own tenant.
        assert (
            await client.get("/v1/conversations", headers=bearer(created["key"]))
        ).status_code == 200
        mine = (await client.get("/v1/admin/api-keys", headers=admin())).json()["api_keys"]
        assert [k["revoked_at"] for k in mine] == [None]


async def test_only_admins_manage_keys_and_only_with_scopes_they_hold(
    api: Api, error_of: ErrorOf
) -> None:
    async with api() as (client, _):
        user = bearer(issue_token(SECRET, "parley", tenant="acme", user="ann"))
        error = error_of(await client.get("/v1/admin/api-keys", headers=user), 403, "missing_scope")
        assert "'admin'" in error["message"]
        error_of(
            await client.post(
                "/v1/admin/api-keys", json={"name": "x", "scopes": ["read"]}, headers=user
            ),
            403,
            "missing_scope",
        )
        narrow = admin(scopes=("admin", "read"))
        error = error_of(
            await client.post(
                "/v1/admin/api-keys", json={"name": "x", "scopes": ["read", "chat"]}, headers=narrow
            ),
            403,
            "scope_not_held",
        )
        assert "chat" in error["message"]
        for body in (
            {"name": "x", "scopes": []},
            {"name": "x", "scopes": ["everything"]},
            {"name": "", "scopes": ["read"]},
            {"name": "x", "scopes": ["read"], "user_id": "has space"},
            {"name": "x", "scopes": ["read"], "tenant_id": "globex"},
        ):
            response = await client.post("/v1/admin/api-keys", json=body, headers=admin())
            error_of(response, 422, "invalid_request")


async def test_keys_are_listed_newest_first_a_page_at_a_time(api: Api) -> None:
    async with api() as (client, _):
        made = [(await create_key(client, name=f"key {n}"))["id"] for n in range(5)]
        seen: list[str] = []
        token = ""
        while True:
            page = await client.get(
                "/v1/admin/api-keys", params={"page_size": 2, "page_token": token}, headers=admin()
            )
            body = page.json()
            seen += [k["id"] for k in body["api_keys"]]
            if body["next_page_token"] is None:
                break
            token = body["next_page_token"]
        assert seen == made[::-1]


async def test_a_revocation_reaches_another_replica_within_the_cache_time(
    api: Api, serve_gateway: Any, database_url: str, error_of: ErrorOf
) -> None:
    # Two gateways on one database, each trusting a lookup for half a second.
    async with api(database_url=database_url, api_key_cache_seconds=0.5) as (first, fakes):
        other = Settings(
            conversation_addr=fakes.address,
            ingest_addr=fakes.address,
            llm_router_addr=fakes.dead,
            database_url=database_url,
            api_key_cache_seconds=0.5,
        )
        async with serve_gateway(other) as second:
            created = await create_key(first)
            key = bearer(created["key"])
            assert (await second.get("/v1/conversations", headers=key)).status_code == 200
            revoked = await first.delete(f"/v1/admin/api-keys/{created['id']}", headers=admin())
            assert revoked.status_code == 204
            # At once on the replica that revoked it.
            error_of(await first.get("/v1/conversations", headers=key), 401, "api_key_revoked")
            started = time.monotonic()
            while (await second.get("/v1/conversations", headers=key)).status_code == 200:
                assert time.monotonic() - started < 3, "the other replica still accepts the key"
                await asyncio.sleep(0.05)
            assert time.monotonic() - started < 2.5
            error_of(await second.get("/v1/conversations", headers=key), 401, "api_key_revoked")


async def _last_used(client: httpx.AsyncClient, key_id: str) -> str | None:
    found: str | None = (await client.get(f"/v1/admin/api-keys/{key_id}", headers=admin())).json()[
        "last_used_at"
    ]
    return found


async def _first_use_recorded(client: httpx.AsyncClient, key_id: str) -> str:
    for _ in range(100):
        stamp = await _last_used(client, key_id)
        if stamp is not None:
            return stamp
        await asyncio.sleep(0.02)
    raise AssertionError("last_used_at was never written")


async def test_last_used_is_written_at_most_once_per_interval(api: Api) -> None:
    async with api() as (client, _):
        created = await create_key(client)
        assert created["last_used_at"] is None
        key = bearer(created["key"])
        assert (await client.get("/v1/conversations", headers=key)).status_code == 200
        first = await _first_use_recorded(client, created["id"])
        for _ in range(5):
            assert (await client.get("/v1/conversations", headers=key)).status_code == 200
        await asyncio.sleep(0.2)
        assert await _last_used(client, created["id"]) == first

    async with api(api_key_last_used_seconds=0.3) as (client, _):
        created = await create_key(client)
        key = bearer(created["key"])
        await client.get("/v1/conversations", headers=key)
        first = await _first_use_recorded(client, created["id"])
        await asyncio.sleep(0.4)
        await client.get("/v1/conversations", headers=key)
        for _ in range(100):
            if await _last_used(client, created["id"]) != first:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("last_used_at was not written again after its interval")


class TcpRelay:
    """A loopback port relaying to ``target`` until :meth:`cut`, which closes the port and
    every connection through it: a database that goes away, as the gateway sees it."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except OSError:
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


@pytest.mark.postgres
async def test_a_database_that_goes_away_is_a_503_for_keys_but_not_for_tokens(
    api: Api, postgres_url: str, error_of: ErrorOf
) -> None:
    url = make_url(postgres_url)
    relay = TcpRelay(url.host or "127.0.0.1", url.port or 5432)
    through = url.set(host="127.0.0.1", port=await relay.start())
    async with api(
        database_url=through.render_as_string(hide_password=False), api_key_cache_seconds=0
    ) as (client, _):
        key = (await create_key(client))["key"]
        assert (await client.get("/v1/conversations", headers=bearer(key))).status_code == 200
        await relay.cut()
        response = await client.get("/v1/conversations", headers=bearer(key))
        error = error_of(response, 503, "identity_unavailable")
        assert response.headers["retry-after"]
        assert key not in error["message"]
        # A token needs no database.
        token = issue_token(SECRET, "parley", tenant="acme", user="ann")
        assert (await client.get("/v1/conversations", headers=bearer(token))).status_code == 200
