"""A fake provider as a real HTTP server on loopback.

``OpenAIFake`` and ``AnthropicFake`` run a Starlette app under uvicorn in a background
thread (usable from sync and async tests alike) and expose the script and the recording
directly; the same controls exist over HTTP under ``/_fake/`` for other processes:

- ``GET /_fake/requests``: what was received, with each answer's outcome;
- ``POST /_fake/behaviour``: replace the default behaviour (a JSON object of its fields);
- ``POST /_fake/script``: queue behaviours for the next requests (``{"behaviours": [...]}``);
- ``POST /_fake/reset``: default behaviour back, queue and recording emptied;
- ``GET /_fake/stats``: requests received, streams in flight, outcomes.

``OpenAIFake`` also serves Azure OpenAI's deployment paths
(``/openai/deployments/{deployment}/chat/completions`` and ``.../embeddings``), answering as
on ``/v1``; without the ``api-version`` query parameter they answer Azure's 404.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from parley_fakes import anthropic, openai
from parley_fakes.behaviour import Behaviour, Script
from parley_fakes.recording import RecordedRequest, Recording
from parley_fakes.streaming import DroppedStream, ErrorMidStream, recorded, wait_for_disconnect

Protocol = Literal["openai", "anthropic"]
Endpoint = Callable[[Request], Awaitable[Response]]


class Fake:
    """A provider fake speaking ``protocol`` (see the module docstring)."""

    def __init__(self, protocol: Protocol, behaviour: Behaviour | None = None, **kw: Any) -> None:
        self.protocol = protocol
        self.initial = behaviour or Behaviour(**kw)
        self.script = Script(self.initial)
        self.recording = Recording()
        self.embedding_dimensions = 384
        self.app = Starlette(routes=self._routes())
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.recording.requests

    def set_behaviour(self, behaviour: Behaviour | None = None, **kw: Any) -> None:
        self.script.default = behaviour or Behaviour(**kw)

    def push(self, *behaviours: Behaviour) -> None:
        """Use these behaviours, one each, for the next requests."""
        self.script.push(*behaviours)

    def reset(self) -> None:
        self.script = Script(self.initial)
        self.recording = Recording()

    # -- running ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, host: str = "127.0.0.1", port: int = 0) -> Fake:
        config = uvicorn.Config(
            self.app, host=host, port=port, log_level="warning", lifespan="off", loop="asyncio"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="fake-provider", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the fake provider did not start")
            time.sleep(0.005)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> Fake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        routes = [
            Route("/_fake/requests", self._requests, methods=["GET"]),
            Route("/_fake/behaviour", self._behaviour, methods=["POST"]),
            Route("/_fake/script", self._script, methods=["POST"]),
            Route("/_fake/reset", self._reset, methods=["POST"]),
            Route("/_fake/stats", self._stats, methods=["GET"]),
        ]
        if self.protocol == "openai":
            routes += [
                Route("/v1/chat/completions", self._chat, methods=["POST"]),
                Route("/v1/embeddings", self._embeddings, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route(
                    "/openai/deployments/{deployment}/chat/completions",
                    self._azure(self._chat),
                    methods=["POST"],
                ),
                Route(
                    "/openai/deployments/{deployment}/embeddings",
                    self._azure(self._embeddings),
                    methods=["POST"],
                ),
            ]
        else:
            routes.append(Route("/v1/messages", self._chat, methods=["POST"]))
        return routes

    def _record(self, request: Request, body: dict[str, Any]) -> RecordedRequest:
        headers = {k.lower(): v for k, v in request.headers.items()}
        api_version = request.query_params.get("api-version")
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        return self.recording.add(
            RecordedRequest(request.url.path, headers, body, api_version=api_version, client=peer)
        )

    def _azure(self, endpoint: Endpoint) -> Endpoint:
        """``endpoint`` behind Azure's check for ``api-version``."""

        async def azure(request: Request) -> Response:
            if request.query_params.get("api-version"):
                return await endpoint(request)
            self._record(request, await openai.read_json(request) or {}).end("failed")
            return openai.azure_not_found()

        return azure

    async def _chat(self, request: Request) -> Response:
        body = await openai.read_json(request)
        record = self._record(request, body or {})
        if body is None:
            record.end("failed")
            return self._error(400, None)
        if self.protocol == "anthropic" and (rejected := anthropic.check(body, record.headers)):
            record.end("failed")
            return rejected
        behaviour = self.script.next()
        if behaviour.fail_status is not None:
            record.end("failed")
            return self._error(behaviour.fail_status, behaviour.retry_after)
        if behaviour.hang:
            await wait_for_disconnect(request, record)
            return Response(status_code=499)
        if not body.get("stream"):
            complete = openai.complete if self.protocol == "openai" else anthropic.complete
            try:
                return await complete(behaviour, body, record)
            except DroppedStream:
                raise ConnectionResetError("dropped by the fake") from None
            except ErrorMidStream:
                return self._error(529 if self.protocol == "anthropic" else 500, None)
        self.recording.in_flight += 1

        def ended() -> None:
            self.recording.in_flight -= 1

        events = openai.stream if self.protocol == "openai" else anthropic.stream
        stream = recorded(events(behaviour, body, record), record, ended)
        return StreamingResponse(stream, media_type="text/event-stream")

    def _error(self, status: int, retry_after: float | None) -> Response:
        if self.protocol == "openai":
            return openai.error_response(status, retry_after)
        return anthropic.error_response(status, retry_after)

    async def _embeddings(self, request: Request) -> Response:
        body = await openai.read_json(request) or {}
        record = self._record(request, body)
        behaviour = self.script.next()
        if behaviour.fail_status is not None:
            record.end("failed")
            return openai.error_response(behaviour.fail_status, behaviour.retry_after)
        record.end("complete")
        dimensions = int(body.get("dimensions", self.embedding_dimensions))
        return openai.embeddings(body, dimensions)

    async def _models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": "fake-model", "object": "model", "owned_by": "fake"}],
            }
        )

    async def _requests(self, request: Request) -> Response:
        return JSONResponse([r.to_dict() for r in self.recording.requests])

    async def _behaviour(self, request: Request) -> Response:
        try:
            self.set_behaviour(Behaviour.from_dict(await request.json()))
        except (ValueError, TypeError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        return JSONResponse(self.script.default.to_dict())

    async def _script(self, request: Request) -> Response:
        try:
            data = await request.json()
            behaviours = [Behaviour.from_dict(b) for b in data["behaviours"]]
        except (ValueError, TypeError, KeyError) as error:
            return JSONResponse({"error": str(error)}, status_code=400)
        self.push(*behaviours)
        return JSONResponse({"queued": len(self.script.queue)})

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    async def _stats(self, request: Request) -> Response:
        outcomes = Counter(r.outcome or "open" for r in self.recording.requests)
        return JSONResponse(
            {
                "requests": len(self.recording.requests),
                "in_flight": self.recording.in_flight,
                "outcomes": dict(outcomes),
            }
        )


class OpenAIFake(Fake):
    """A fake OpenAI (Chat Completions, embeddings, models), and Azure OpenAI's deployments."""

    def __init__(self, behaviour: Behaviour | None = None, **kw: Any) -> None:
        super().__init__("openai", behaviour, **kw)


class AnthropicFake(Fake):
    """A fake Anthropic (Messages API)."""

    def __init__(self, behaviour: Behaviour | None = None, **kw: Any) -> None:
        super().__init__("anthropic", behaviour, **kw)


async def serve_forever(fake: Fake, host: str, port: int) -> None:
    """Run a fake on the current event loop (the CLI), until cancelled."""
    config = uvicorn.Config(fake.app, host=host, port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    fake.port = server.servers[0].sockets[0].getsockname()[1]
    print(f"{fake.protocol} fake listening on {fake.base_url}", flush=True)
    await task


__all__ = ["AnthropicFake", "Fake", "OpenAIFake", "serve_forever"]
