"""Builds the FastAPI application: routes, error envelope, request context, backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_gateway import errors
from parley_gateway.backends import Backends, connect
from parley_gateway.middleware import RequestContextMiddleware
from parley_gateway.routes import conversations, documents, system
from parley_gateway.settings import Settings


def create_app(settings: Settings, backends: Backends | None = None) -> FastAPI:
    """The public API. Backends are connected at startup unless given (tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.backends = backends or connect(settings)
        try:
            yield
        finally:
            await app.state.backends.close()

    app = FastAPI(
        title="Parley API",
        version="1.0.0",
        description="Conversations grounded in your documents, streamed.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    errors.install(app)
    app.include_router(system.router)
    app.include_router(conversations.router)
    app.include_router(documents.router)
    app.add_middleware(RequestContextMiddleware)
    return app
