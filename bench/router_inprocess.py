"""The router's CPU per request without gRPC: its servicer called in process, beside the same
relay and the provider alone, against the fake over HTTP.

    uv run python bench/router_inprocess.py                       # 200 streams, 4 runs
    uv run python bench/router_inprocess.py --streams 100 --requests 1500 --runs 3

Each run of each target is a fresh process on the last CPU (the fake on the others), reading
``--requests`` answers ``--streams`` at a time, started evenly over one answer's length, after
one answer of warm-up; its CPU (user + system) over the run, per request, and the messages it
produced per request. Targets, interleaved run by run:

- ``relay``: ``bench/relay_floor.py``'s ``StreamChat`` (aiohttp, parsing, a message a window);
- ``provider``: the router's OpenAI-compatible provider's stream, consumed as it comes;
- ``servicer``: llm-router's ``StreamChat`` (validation, routing, bulkhead, breaker,
  timeouts, metrics, ledger, messages), built by its ``main.build`` with default settings.

``servicer`` minus ``provider`` is the router's own work on a stream; ``provider`` minus
``relay`` is what its provider costs over a bare loop. No gRPC: ``bench/router.py --floor``
measures the same targets over the wire.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).parent))
from harness import Placement, free_port, spawn_fake, wait_http

TARGETS = ("relay", "provider", "servicer")
ANSWER_SECONDS = 0.6
REQUEST = pb.ChatRequest(
    messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello")])]
)


async def _streams(target: str, upstream: str) -> Callable[[], AsyncIterator[Any]]:
    """A function opening one answer's stream through ``target``."""
    from parley_runtime.context import Principal, principal_var

    principal_var.set(Principal("bench", "bench"))
    if target == "relay":
        from relay_floor import Relay

        relay = Relay(upstream)  # type: ignore[abstract]  # it serves StreamChat only
        return lambda: relay.StreamChat(REQUEST, None)  # type: ignore[arg-type]

    from parley_llm_router import main
    from parley_llm_router.api import LlmRouterServicer
    from parley_llm_router.settings import Settings

    captured: list[LlmRouterServicer] = []
    add = pb_grpc.add_LlmRouterServicer_to_server
    pb_grpc.add_LlmRouterServicer_to_server = lambda servicer, _: captured.append(servicer)  # type: ignore[assignment,misc]
    try:
        database = f"sqlite:///{tempfile.mkdtemp()}/ledger.db"
        wiring = await main.build(
            Settings(openai_base_url=upstream, openai_model="gpt-fake", database_url=database)
        )
        for registration in wiring.registrations:
            registration.add(None)  # type: ignore[arg-type]
    finally:
        pb_grpc.add_LlmRouterServicer_to_server = add
    servicer = captured[0]
    if target == "provider":
        from parley_testkit.provider_streams import HELLO, TIMEOUTS

        provider = servicer.holder.engine.providers["openai"]
        return lambda: provider.stream("gpt-fake", HELLO, TIMEOUTS)
    return lambda: servicer.StreamChat(REQUEST, _Context())  # type: ignore[arg-type]


class _Context:
    """What ``StreamChat`` uses of its gRPC context in process: the initial metadata that
    says a call was accepted goes nowhere."""

    async def send_initial_metadata(self, metadata: object) -> None:
        return None


async def child(target: str, upstream: str, streams: int, requests: int) -> dict[str, float]:
    open_stream = await _streams(target, upstream)
    left = requests
    messages = 0

    async def worker(index: int) -> None:
        nonlocal left, messages
        await asyncio.sleep(ANSWER_SECONDS * index / streams)
        while left > 0:
            left -= 1
            async for event in open_stream():
                messages += 1
                if isinstance(event, pb.ChatEvent):
                    event.SerializeToString()

    async for _ in open_stream():  # warm-up: imports, the first connection
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    await asyncio.gather(*(worker(i) for i in range(streams)))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {"cpu_ms": cpu / requests * 1000, "messages": messages / requests}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = uvloop.run(child(args.child, args.upstream, args.streams, args.requests))
        print(json.dumps(result))
        return

    placement = Placement.split()
    port = free_port()
    fake = spawn_fake(port, (200, 20, 20), placement, subprocess.DEVNULL)
    upstream = f"http://127.0.0.1:{port}/v1"
    try:
        asyncio.run(wait_http(f"http://127.0.0.1:{port}/_fake/stats"))
        results: dict[str, list[dict[str, float]]] = {target: [] for target in TARGETS}
        for run in range(args.runs):
            for target in TARGETS:
                out = subprocess.run(
                    [
                        *(sys.executable, __file__, "--child", target, "--upstream", upstream),
                        *("--streams", str(args.streams), "--requests", str(args.requests)),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    preexec_fn=placement.on(placement.servers),
                    env={**os.environ, "LOG_LEVEL": "WARNING"},
                )
                results[target].append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"run {run + 1}: {target} {results[target][-1]}", file=sys.stderr)
    finally:
        fake.terminate()
        fake.wait()
    print(f"\n{args.streams} streams, {args.requests} requests a run, {args.runs} runs\n")
    print("| target | CPU ms/request | runs | messages/request |")
    print("|---|---|---|---|")
    for target, rows in results.items():
        cpu = [row["cpu_ms"] for row in rows]
        spread = " / ".join(f"{value:.2f}" for value in cpu)
        messages = statistics.median(row["messages"] for row in rows)
        print(f"| {target} | {statistics.median(cpu):.2f} | {spread} | {messages:.1f} |")


if __name__ == "__main__":
    main()
