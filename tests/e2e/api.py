"""The public API of a running platform, as the e2e tests drive it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx

from parley_devstack import Platform
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

from .sse import Event, events


def bearer(tenant: str = "acme", user: str = "ann") -> str:
    """A development token the gateway accepts (its default secret and issuer)."""
    settings = GatewaySettings()
    return issue_token(settings.auth_secret, settings.auth_issuer, tenant=tenant, user=user)


@asynccontextmanager
async def public_api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """Start ``platform``, yield a client of its API acting as acme's ann, stop it after."""
    await platform.start()
    try:
        async with httpx.AsyncClient(
            base_url=platform.gateway_url,
            headers={"Authorization": f"Bearer {bearer()}"},
            timeout=30,
        ) as client:
            yield client
    finally:
        await platform.stop()


async def stream_interrupted(
    client: httpx.AsyncClient,
    path: str,
    body: dict[str, str],
    deltas_before: int,
    action: Callable[[], Awaitable[None]],
    headers: dict[str, str] | None = None,
) -> tuple[list[Event], float]:
    """Stream a turn; once ``deltas_before`` deltas arrived, run ``action`` (a kill), then read
    the rest. Returns every event and the seconds from the action to the stream's end."""
    received: list[Event] = []
    async with client.stream(
        "POST", path, json=body, headers={"Accept": "text/event-stream", **(headers or {})}
    ) as response:
        assert response.status_code == 200, await response.aread()
        stream = events(response)
        async for event in stream:
            received.append(event)
            if sum(e.name == "delta" for e in received) >= deltas_before:
                break
        await action()
        acted_at = time.monotonic()
        async for event in stream:
            received.append(event)
    return received, time.monotonic() - acted_at
