"""Builds the FastAPI application: routes, error envelope, request context, peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_gateway import errors
from parley_gateway.adapters import Peers, connect
from parley_gateway.browser import CorsMiddleware, SecurityHeadersMiddleware, parse_origins
from parley_gateway.guardrails import Guardrails
from parley_gateway.identity import Identity
from parley_gateway.limits.http import RateLimitHeaders, build_limiter
from parley_gateway.middleware import RequestContextMiddleware
from parley_gateway.page import Page
from parley_gateway.routes import (
    conversations,
    documents,
    limits,
    memories,
    messages,
    openai,
    page,
    search,
    session,
    system,
    uploads,
    usage,
    users,
    ws,
)
from parley_gateway.routes import keys as api_keys
from parley_gateway.settings import Settings
from parley_runtime import telemetry


def create_app(settings: Settings, peers: Peers | None = None) -> FastAPI:
    """The public API. Its peers are connected at startup unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.peers = peers or connect(settings)
        app.state.identity = await Identity.open(settings)
        try:
            yield
        finally:
            await app.state.identity.close()
            await app.state.limiter.close()
            await app.state.peers.close()
            await app.state.guardrails.aclose()

    app = FastAPI(
        title="Parley API",
        version="1.0.0",
        description="Conversations grounded in your documents, streamed.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.guardrails = Guardrails.from_settings(settings)
    app.state.limiter = build_limiter(settings)
    app.state.page = Page.load(dev_sign_in=settings.dev_sign_in)
    errors.install(app)
    app.include_router(system.router)
    app.include_router(conversations.router)
    app.include_router(documents.router)
    app.include_router(api_keys.router)
    app.include_router(openai.router)
    app.include_router(limits.router)
    for part in (messages, memories, uploads, search, usage, users, ws, session, page):
        app.include_router(part.router)
    app.add_middleware(RateLimitHeaders)
    app.add_middleware(RequestContextMiddleware, server_span=not _instrument(app))
    # Outside the request context, so the last-resort 500 gets CORS and security headers.
    app.add_middleware(
        CorsMiddleware,
        origins=parse_origins(settings.cors_origins),
        max_age=settings.cors_max_age_seconds,
    )
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        SecurityHeadersMiddleware,
        hsts_max_age=settings.hsts_max_age_seconds,
        docs_paths=tuple(path for path in docs if path),
    )
    return app


def _instrument(app: FastAPI) -> bool:
    """While tracing, OpenTelemetry's instrumentations of FastAPI (the server span of every
    request but the probes', named by its route; none per body chunk) and Redis (the limits'
    calls). Returns whether FastAPI's is installed."""
    if telemetry.instrumented("redis"):
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
    if not telemetry.instrumented("fastapi"):
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls="/healthz,/readyz", exclude_spans=["receive", "send"]
    )
    return True
