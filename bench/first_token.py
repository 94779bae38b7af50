"""Where llm-router's time to the first token goes, one stream at a time.

    uv run python bench/first_token.py                 # 25 requests, the first 5 not counted

The fake OpenAI server runs in its own process on the first CPU (200 ms to the first token);
the router and a gRPC client run in this process on the last CPU. The provider's stream and
the servicer's event stream are wrapped to take timestamps, and the p50 and maximum of each
segment of the first token's path are printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_llm_router import api
from parley_llm_router.main import build
from parley_llm_router.providers.compatible import CompatibleProvider
from parley_llm_router.settings import Settings
from parley_runtime.context import Principal, principal_var
from parley_runtime.grpc_client import channel
from parley_testkit import grpc_server

sys.path.insert(0, str(Path(__file__).parent))
from harness import Placement, free_port, spawn_fake, wait_http

marks: dict[str, float] = {}
SEGMENTS = [
    ("client call to the servicer", "sent", "servicer"),
    ("servicer to the provider call", "servicer", "provider"),
    ("provider call to the first chunk parsed", "provider", "parsed"),
    ("first chunk parsed to its message leaving", "parsed", "message"),
    ("message leaving to the client having it", "message", "received"),
    ("time to first token", "sent", "received"),
]


def instrument() -> None:
    stream = CompatibleProvider.stream
    events = api.LlmRouterServicer._events

    async def timed_stream(self: Any, *args: Any) -> AsyncIterator[Any]:
        marks["provider"] = time.perf_counter()
        async for event in stream(self, *args):
            marks.setdefault("parsed", time.perf_counter())
            yield event

    async def timed_events(self: Any, *args: Any) -> AsyncIterator[pb.ChatEvent]:
        marks["servicer"] = time.perf_counter()
        async for message in events(self, *args):
            if message.HasField("text_delta"):
                marks.setdefault("message", time.perf_counter())
            yield message

    CompatibleProvider.stream = timed_stream  # type: ignore[method-assign,assignment]
    api.LlmRouterServicer._events = timed_events  # type: ignore[method-assign,assignment]


async def measure(fake_url: str, requests: int, warm: int) -> list[dict[str, float]]:
    await wait_http(f"{fake_url}/_fake/stats")
    workdir = Path(tempfile.mkdtemp(prefix="parley-first-token-"))
    settings = Settings(
        grpc_port=0,
        openai_base_url=f"{fake_url}/v1",
        openai_model="gpt-fake",
        database_url=f"sqlite:///{workdir}/router.db",
        redis_url=None,
    )
    wiring = await build(settings, env={})
    principal_var.set(Principal("bench", "bench"))
    request = pb.ChatRequest(
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello")])]
    )
    rows: list[dict[str, float]] = []
    try:
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.llm_router.v1.LlmRouter") as chan,
        ):
            stub = pb_grpc.LlmRouterStub(chan)
            for index in range(requests):
                marks.clear()
                marks["sent"] = time.perf_counter()
                async for event in stub.StreamChat(request):
                    if event.HasField("text_delta"):
                        marks.setdefault("received", time.perf_counter())
                if index >= warm:
                    rows.append(dict(marks))
    finally:
        await wiring.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=25)
    parser.add_argument("--warm", type=int, default=5)
    args = parser.parse_args()
    placement = Placement.split()
    port = free_port()
    fake = spawn_fake(port, (200, 20, 20), placement, subprocess.DEVNULL)
    if placement.servers is not None:
        os.sched_setaffinity(0, placement.servers)
    instrument()
    try:
        rows = uvloop.run(measure(f"http://127.0.0.1:{port}", args.requests, args.warm))
    finally:
        fake.terminate()
        fake.wait(10)
    print("| segment | p50 ms | max ms |\n|---|---|---|")
    for name, start, end in SEGMENTS:
        values = [(row[end] - row[start]) * 1000 for row in rows]
        print(f"| {name} | {statistics.median(values):.2f} | {max(values):.2f} |")


if __name__ == "__main__":
    main()
