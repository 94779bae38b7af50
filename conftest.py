"""Fixtures shared by every test: real PostgreSQL and Redis when they can be had.

Order of preference for each: a testcontainers container when a Docker engine answers, else
the server named by ``DATABASE_URL`` / ``REDIS_URL``, else the test is skipped with the reason.
``.ci/run`` sets both URLs and fails when the servers are unreachable, so CI never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest


def _docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def _unavailable(reason: str) -> None:
    """Skip locally; in CI (``CI`` set) a missing server is a failure, never a silent skip."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server URL (admin database) for the whole session."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    _unavailable("PostgreSQL: no Docker engine and DATABASE_URL is not set")


@asynccontextmanager
async def _fresh_database(server_url: str) -> AsyncIterator[str]:
    """Create an empty database on the server, yield its URL, drop it afterwards."""
    import asyncpg
    from sqlalchemy.engine import make_url

    server = make_url(server_url)
    name = f"parley_test_{uuid.uuid4().hex[:12]}"
    dsn = server.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def postgres_url(postgres_server_url: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    async with _fresh_database(postgres_server_url) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using this runs twice: on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"
        return
    async with _fresh_database(request.getfixturevalue("postgres_server_url")) as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis server URL; tests must use keys under a unique prefix."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    if _docker_available():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
        return
    _unavailable("Redis: no Docker engine and REDIS_URL is not set")


@pytest.fixture
def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture(scope="session")
def local_embedder() -> object:
    """The local embedding model, loaded once for the whole session."""
    from parley_embeddings import LocalEmbedder

    return LocalEmbedder(threads=2)


@pytest.fixture
async def retrieval_address(local_embedder: object) -> AsyncIterator[str]:
    """The retrieval service in-process (embedded Qdrant in memory, the local model)."""
    from parley_testkit.services import retrieval_service

    async with retrieval_service(local_embedder) as address:  # type: ignore[arg-type]
        yield address
