"""Helpers for tests that run a service's real gRPC server in-process on a loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager

from parley_runtime.context import Principal, principal_var
from parley_runtime.grpc_server import Registration, start_server
from parley_runtime.settings import ServiceSettings


@asynccontextmanager
async def grpc_server(registrations: Iterable[Registration]) -> AsyncIterator[str]:
    """Serve ``registrations`` on 127.0.0.1 with a free port; yield ``host:port``."""
    settings = ServiceSettings(grpc_host="127.0.0.1", grpc_port=0, shutdown_grace_seconds=1.0)
    server, _, port = await start_server(settings, registrations)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0.5)


@contextmanager
def acting_as(tenant_id: str, user_id: str, *scopes: str) -> Iterator[Principal]:
    """Make outgoing gRPC calls carry this principal (as the gateway would)."""
    principal = Principal(tenant_id=tenant_id, user_id=user_id, scopes=frozenset(scopes))
    token = principal_var.set(principal)
    try:
        yield principal
    finally:
        principal_var.reset(token)
