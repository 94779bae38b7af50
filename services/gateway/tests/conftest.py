"""A real gateway on a loopback socket, for tests that drive it over HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn

from parley_gateway.app import create_app
from parley_gateway.settings import Settings


@asynccontextmanager
async def running_gateway(settings: Settings) -> AsyncIterator[str]:
    """Serve the gateway on 127.0.0.1 with a free port; yield its base URL."""
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
