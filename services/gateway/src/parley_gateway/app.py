"""Builds the FastAPI application: routes, error envelope, request context, peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from parley_gateway import errors
from parley_gateway.adapters import Peers, connect
from parley_gateway.middleware import RequestContextMiddleware
from parley_gateway.routes import conversations, documents, system
from parley_gateway.settings import Settings


def create_app(settings: Settings, peers: Peers | None = None) -> FastAPI:
    """The public API. Its peers are connected at startup unless given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.peers = peers or connect(settings)
        try:
            yield
        finally:
            await app.state.peers.close()

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
