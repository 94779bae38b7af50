"""The least a Python gRPC relay of a token stream costs: the router's stack, none of its work.

    uv run python bench/router.py --levels 200 --no-litellm --floor

A bare grpc.aio ``LlmRouter.StreamChat`` that sends each call's messages, as a fixed
Chat Completions request, to ``--upstream`` over aiohttp (one pooled session, as the router's
OpenAI-compatible provider), and sends the streamed text back: the first delta at once, then
at most one message per coalescing window (the router's: ``STREAM_COALESCE_MS`` when set, else
its default), then a ``finish``.
No routing, validation, breakers, retries, ledger, cache, metrics or tracing. On uvloop, as
the router. ``bench/router.py --floor`` measures it beside the router as "relay-floor":
whatever the router adds beyond it is Parley's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator

import aiohttp
import grpc
import orjson
import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router.settings import Settings

WINDOW_SECONDS = (
    float(os.environ.get("STREAM_COALESCE_MS", Settings.model_fields["stream_coalesce_ms"].default))
    / 1000
)


class Relay(pb_grpc.LlmRouterServicer):
    def __init__(self, upstream: str) -> None:
        self.url = f"{upstream}/chat/completions"
        self.session: aiohttp.ClientSession | None = None

    async def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        if self.session is None:
            self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        body = orjson.dumps(
            {
                "model": "gpt-fake",
                "messages": [
                    {"role": "user", "content": "".join(p.text for p in m.content)}
                    for m in request.messages
                ],
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        )
        loop = asyncio.get_running_loop()
        pending: list[str] = []
        sent_at: float | None = None
        async with self.session.post(
            self.url, data=body, headers={"content-type": "application/json"}
        ) as response:
            async for chunk in response.content.iter_any():
                for line in chunk.split(b"\n"):
                    if not line.startswith(b"data: {"):
                        continue
                    for choice in orjson.loads(line[6:]).get("choices") or ():
                        if text := (choice.get("delta") or {}).get("content"):
                            pending.append(text)
                if pending and (sent_at is None or loop.time() - sent_at >= WINDOW_SECONDS):
                    sent_at = loop.time()
                    yield pb.ChatEvent(text_delta="".join(pending))
                    pending = []
        if pending:
            yield pb.ChatEvent(text_delta="".join(pending))
        yield pb.ChatEvent(finish=pb.ChatFinish())


async def serve(port: int, upstream: str) -> None:
    server = grpc.aio.server()
    relay = Relay(upstream)  # type: ignore[abstract]  # it serves StreamChat only
    pb_grpc.add_LlmRouterServicer_to_server(relay, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the fake's base URL, with /v1")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
