"""What a bare grpc.aio server-streaming call costs, with nothing of the router in it.

    uv run python bench/grpc_floor.py                 # 1, 6, 11 and 22 messages per call
    uv run python bench/grpc_floor.py --messages 22 --streams 200

The server is ``LlmRouter.StreamChat`` answering every call with ``--messages`` one-token
``ChatEvent`` messages, 200 ms before the first and spread over 400 ms after it, the shape of
the router benchmark's answers (and of answers coalesced into fewer messages). It runs in
its own process on the last CPU, the load generator on the others, ``--streams`` calls at a
time, started evenly over one answer's length. The server's CPU per call, from ``/proc``, is
the floor under any Python service that relays a token stream over gRPC this way.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).parent))
from harness import Placement, cpu_seconds, free_port

FIRST_SECONDS = 0.2
SPREAD_SECONDS = 0.4


class Streamer(pb_grpc.LlmRouterServicer):
    def __init__(self, messages: int) -> None:
        self.messages = messages

    async def StreamChat(
        self, request: pb.ChatRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ChatEvent]:
        await asyncio.sleep(FIRST_SECONDS)
        gap = SPREAD_SECONDS / max(self.messages - 1, 1)
        for index in range(self.messages):
            if index:
                await asyncio.sleep(gap)
            yield pb.ChatEvent(text_delta="token ")


async def serve(port: int, messages: int) -> None:
    server = grpc.aio.server()
    streamer = Streamer(messages)  # type: ignore[abstract]  # it serves StreamChat only
    pb_grpc.add_LlmRouterServicer_to_server(streamer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def load(port: int, streams: int, calls: int) -> float:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        await asyncio.wait_for(chan.channel_ready(), 30)
        stub = pb_grpc.LlmRouterStub(chan)
        request = pb.ChatRequest()
        remaining = calls

        async def worker(delay: float) -> None:
            nonlocal remaining
            await asyncio.sleep(delay)
            while remaining > 0:
                remaining -= 1
                async for _ in stub.StreamChat(request, timeout=30):
                    pass

        answer = FIRST_SECONDS + SPREAD_SECONDS
        started = time.perf_counter()
        await asyncio.gather(*(worker(i * answer / streams) for i in range(streams)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, nargs="+", default=[1, 6, 11, 22])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--calls", type=int, default=1200, help="calls per measurement")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the server process
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        uvloop.run(serve(args.port, args.serve))
        return
    placement = Placement.split()
    if placement.clients is not None:
        os.sched_setaffinity(0, placement.clients)
    print("| messages per call | streams | calls/s | server CPU ms per call |")
    print("|---|---|---|---|")
    for messages in args.messages:
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(messages), "--port", str(port)],
            preexec_fn=placement.on(placement.servers),
        )
        try:
            uvloop.run(load(port, 10, 50))  # warm up
            before = cpu_seconds(server.pid)
            elapsed = uvloop.run(load(port, args.streams, args.calls))
            used = cpu_seconds(server.pid) - before
        finally:
            server.terminate()
            server.wait(10)
        rate = args.calls / elapsed
        print(f"| {messages} | {args.streams} | {rate:.0f} | {used * 1000 / args.calls:.2f} |")


if __name__ == "__main__":
    main()
