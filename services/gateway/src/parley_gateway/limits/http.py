"""Limits at the HTTP edge: the dependency that limits a route's requests, the admission of a
turn, and the ``RateLimit-*`` headers of every limited response.

A router (or a single route) declares ``dependencies=[RATE_LIMITED]``; each of its routes is in
the route class ``reads`` unless it says otherwise with ``openapi_extra=route_class("chat")``
(the class is then also in the route's OpenAPI, as ``x-parley-route-class``). The dependency
authenticates the caller (the same dependency the route's scope check uses, so once per
request), takes one request of its class, and records the standing on ``request.state``;
:class:`RateLimitHeaders` writes it on the response, refused (429) or not.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from parley_gateway.auth import authenticate
from parley_gateway.limits.limiter import Limiter, LimitReached, TurnLease
from parley_gateway.limits.memory_store import MemoryStore
from parley_gateway.limits.policy import ROUTE_CLASSES, RouteClass, load_policy
from parley_gateway.limits.redis_store import RedisStore, connect
from parley_gateway.limits.store import LimitStore
from parley_gateway.settings import Settings
from parley_gateway.turns import RECEIVED_AT, TurnMeter
from parley_runtime.context import Principal

ROUTE_CLASS_KEY = "x-parley-route-class"
# What a route's standing is kept under on ``request.state`` until its response starts.
STANDING = "limit_standing"


def build_limiter(settings: Settings) -> Limiter:
    """The limiter ``settings`` describe: counters in Redis at ``REDIS_URL``, else in memory."""
    store: LimitStore = (
        RedisStore(connect(settings.redis_url)) if settings.redis_url else MemoryStore()
    )
    policy_file = Path(settings.limits_file) if settings.limits_file else None
    return Limiter(
        load_policy(policy_file, settings.limits_default_tier),
        store,
        fail_open=settings.limits_on_redis_error == "open",
        # A turn's call cannot outlive its deadline: a slot held longer was never given back.
        stream_lease_seconds=settings.stream_timeout_seconds + 30.0,
        prefix=settings.limits_key_prefix,
    )


def route_class(name: RouteClass) -> dict[str, Any]:
    """The ``openapi_extra`` of a route outside the ``reads`` class."""
    if name not in ROUTE_CLASSES:
        raise ValueError(f"unknown route class {name!r}")
    return {ROUTE_CLASS_KEY: name}


def limiter_of(connection: HTTPConnection) -> Limiter:
    limiter: Limiter = connection.app.state.limiter
    return limiter


def api_key_id(connection: HTTPConnection) -> str | None:
    """The id of the API key the caller used (identity sets it), None for a token."""
    found: str | None = getattr(connection.state, "api_key_id", None)
    return found


async def check_rate(
    connection: HTTPConnection, principal: Principal, route_class: RouteClass
) -> None:
    """One request of ``route_class`` for ``principal``, or :class:`LimitReached`; either way
    the standing goes on ``connection.state`` for the headers. For a WebSocket, call it for
    each turn sent."""
    try:
        limiter = limiter_of(connection)
        standing = await limiter.check(principal, api_key_id(connection), route_class)
    except LimitReached as refused:
        setattr(connection.state, STANDING, refused.standing)
        raise
    if standing is not None:
        setattr(connection.state, STANDING, standing)


async def rate_limit(
    connection: HTTPConnection, principal: Annotated[Principal, Depends(authenticate)]
) -> None:
    """FastAPI dependency: one request of the route's class (``reads`` unless the route says
    otherwise, :func:`route_class`)."""
    route = connection.scope.get("route")
    extra = getattr(route, "openapi_extra", None) or {}
    await check_rate(connection, principal, extra.get(ROUTE_CLASS_KEY, "reads"))


RATE_LIMITED = Depends(rate_limit)


async def admit_turn(connection: HTTPConnection, principal: Principal) -> TurnLease:
    """Let a turn start (a stream slot, the token quotas), or :class:`LimitReached`
    (``too_many_streams``, ``quota_exceeded``) with its headers. Hand the turn's call to
    :meth:`TurnLease.watch`, which ends the lease with the call; the turn is timed from
    its request's arrival (a WebSocket turn's, from now: see ``parley_gateway.turns``)."""
    try:
        lease = await limiter_of(connection).admit_turn(principal)
    except LimitReached as refused:
        setattr(connection.state, STANDING, refused.standing)
        raise
    received = connection.scope.get("state", {}).get(RECEIVED_AT)
    lease.meter = TurnMeter(received if received is not None else time.perf_counter())
    return lease


class RateLimitHeaders:
    """ASGI middleware: the ``RateLimit-*`` headers of a limited request's response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The request's state, shared with the routes (Request.state is this dict).
        state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                standing = state.get(STANDING)
                if standing is not None:
                    message["headers"] = [*message.get("headers", ()), *standing.headers()]
            await send(message)

        await self.app(scope, receive, send_with_headers)
