"""Router benchmark: time to first token and total time through llm-router, straight to the
provider, and through a LiteLLM proxy, against the same fake OpenAI server.

    uv run python bench/router.py                 # 1, 50 and 200 concurrent streams, 3 runs
    uv run python bench/router.py --levels 1 50 --runs 1 --requests 200

Every server is its own process on loopback: the fake provider (``python -m parley_fakes``),
llm-router (``parley-llm-router``) and, when it installs, the LiteLLM proxy from its own
environment under ``.bench/litellm`` (``litellm[proxy]==1.106.2``). The load generator shares
the machine's cores with them, so absolute numbers are pessimistic; compare columns of one
run. Per level it reports p50 and p99 of time to first token and of total time over every
request of every run (runs interleave the targets, so a slow spell of the host falls on all of
them), the router's and the proxy's added time to first token (their p50/p99 minus the direct
ones), errors, and CPU seconds per request (the median of the runs) of the router or proxy
process (from /proc), and of the load side (the load generator and the fake together), which
shares the other core. Each run's own added p99, against the direct run beside it, goes to
stderr and the results file: a p99 of a few thousand requests moves by several milliseconds
from run to run on a shared host.

With ``--tracing``, two more routers run beside the first, with tracing on (every trace
sampled, exported over OTLP to ``bench/otlp_sink.py``, which counts and drops them):
``llm-router traced`` with every instrumentation it installs (the aiohttp client's span per
provider call, SQLAlchemy's per ledger statement), and ``llm-router traced, no HTTP spans``
without the aiohttp client's (``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=aiohttp-client``): the
hand-written spans alone. They take turns with the others, so the same spell of the host falls
on all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_runtime.context import Principal, principal_var
from parley_runtime.grpc_client import channel

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    LITELLM_KEY,
    ROOT,
    Call,
    Placement,
    Sample,
    client_session,
    cpu_seconds,
    free_port,
    litellm_installed,
    percentile,
    run_level,
    settle,
    spawn_fake,
    spawn_litellm,
    sse_stream,
    wait_http,
    without_gc,
)

# The fake provider answers like a fast hosted model: 200 ms to the first token, then 20
# tokens 20 ms apart (about 0.6 s an answer). Overridable with --ttft-ms and friends.
TOKENS = 20
TTFT_MS = 200
TOKEN_DELAY_MS = 20


@dataclass
class Level:
    target: str
    concurrency: int
    requests: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    errors: int
    cpu_ms_per_request: float | None
    load_cpu_ms_per_request: float | None = None
    added_ttft_p50_ms: float | None = None
    added_ttft_p99_ms: float | None = None
    # Each run's added TTFT p99 against the direct run just before it (the spread behind
    # the pooled figure).
    run_added_ttft_p99_ms: list[float] = field(default_factory=list)


def router_stream(stub: pb_grpc.LlmRouterStub) -> Call:
    request = pb.ChatRequest(
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello")])]
    )

    async def one(worker: int) -> Sample:
        started = time.perf_counter()
        first = None
        async for event in stub.StreamChat(request):
            if first is None and event.HasField("text_delta"):
                first = time.perf_counter()
            if event.HasField("error"):
                raise RuntimeError(event.error.error.code)
        end = time.perf_counter()
        return Sample((first or end) - started, end - started)

    return one


# The traced routers of --tracing: their target name and the instrumentations left off.
TRACED = {
    "llm-router traced": "",
    "llm-router traced, no HTTP spans": "aiohttp-client",
}


@dataclass
class Servers:
    fake_url: str
    router_address: str
    router_pid: int
    fake_pid: int
    litellm_url: str | None = None
    litellm_pid: int | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Target name: the address and pid of a traced router (--tracing).
    traced: dict[str, tuple[str, int]] = field(default_factory=dict)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


def spawn_router(
    workdir: Path, name: str, fake_url: str, placement: Placement, **env: str
) -> tuple[subprocess.Popen[bytes], int]:
    """An llm-router process on the servers' CPU with the fake as its provider, and its
    port; ``env`` adds to its environment."""
    port = free_port()
    router_env = {
        **os.environ,
        "GRPC_PORT": str(port),
        "OPENAI_BASE_URL": f"{fake_url}/v1",
        "OPENAI_MODEL": "gpt-fake",
        "DATABASE_URL": f"sqlite:///{workdir}/{name}.db",
        "LOG_LEVEL": "WARNING",
        **env,
    }
    router_env.pop("REDIS_URL", None)
    if "OTEL_EXPORTER_OTLP_ENDPOINT" not in env:
        router_env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "parley-llm-router")],
        env=router_env,
        stdout=(workdir / "logs" / f"{name}.log").open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=placement.on(placement.servers),
    )
    return process, port


def spawn(
    workdir: Path,
    with_litellm: bool,
    timing: tuple[float, float, int],
    placement: Placement,
    with_tracing: bool = False,
) -> Servers:
    """Start the fake, the router, (with ``with_tracing``) the traced routers and their
    span sink, and (when installed) the LiteLLM proxy as processes."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fake_port = free_port()
    fake = spawn_fake(fake_port, timing, placement, (logs / "fake.log").open("wb"))
    fake_url = f"http://127.0.0.1:{fake_port}"
    router, router_port = spawn_router(workdir, "router", fake_url, placement)
    servers = Servers(
        fake_url, f"127.0.0.1:{router_port}", router.pid, fake.pid, processes=[fake, router]
    )
    if with_tracing:
        sink_port = free_port()
        servers.processes.append(
            subprocess.Popen(
                [
                    *(sys.executable, str(Path(__file__).parent / "otlp_sink.py")),
                    *("--port", str(sink_port)),
                ],
                stdout=(logs / "otlp-sink.log").open("wb"),
                stderr=subprocess.STDOUT,
                preexec_fn=placement.on(placement.clients),
            )
        )
        for index, (name, disabled) in enumerate(TRACED.items()):
            traced, port = spawn_router(
                workdir,
                f"router-traced-{index}",
                fake_url,
                placement,
                OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{sink_port}",
                OTEL_TRACES_SAMPLER_RATIO="1.0",
                OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=disabled,
            )
            servers.processes.append(traced)
            servers.traced[name] = (f"127.0.0.1:{port}", traced.pid)
    if with_litellm and litellm_installed():
        port = free_port()
        proxy = spawn_litellm(workdir, fake_url, port, placement)
        servers.processes.append(proxy)
        servers.litellm_url = f"http://127.0.0.1:{port}"
        servers.litellm_pid = proxy.pid
    return servers


def spawn_floor(servers: Servers, placement: Placement, workdir: Path) -> tuple[str, int]:
    """``bench/relay_floor.py`` beside the router, on the servers' CPU: its address and pid."""
    port = free_port()
    relay = subprocess.Popen(
        [
            *(sys.executable, str(Path(__file__).parent / "relay_floor.py")),
            *("--port", str(port), "--upstream", f"{servers.fake_url}/v1"),
        ],
        stdout=(workdir / "logs" / "relay-floor.log").open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=placement.on(placement.servers),
    )
    servers.processes.append(relay)
    return f"127.0.0.1:{port}", relay.pid


async def wait_ready(servers: Servers) -> None:
    await wait_http(f"{servers.fake_url}/_fake/stats")
    for address in (servers.router_address, *(a for a, _ in servers.traced.values())):
        async with grpc.aio.insecure_channel(address) as chan:
            await asyncio.wait_for(chan.channel_ready(), 60)
    if servers.litellm_url:
        await wait_http(f"{servers.litellm_url}/health/liveliness", within=120)


async def bench(
    levels: list[int],
    requests: int,
    runs: int,
    with_litellm: bool,
    timing: tuple[float, float, int],
    placement: Placement,
    with_floor: bool = False,
    with_tracing: bool = False,
) -> list[Level]:
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    ttft_ms, token_delay_ms, tokens = timing
    answer_seconds = (ttft_ms + token_delay_ms * (tokens - 1)) / 1000
    servers = spawn(workdir, with_litellm, timing, placement, with_tracing)
    floor: tuple[str, int] | None = None
    if with_floor:
        floor = spawn_floor(servers, placement, workdir)
    await wait_ready(servers)
    principal_var.set(Principal("bench", "bench"))
    session = client_session(total_timeout=60)
    chan = channel(servers.router_address, "parley.llm_router.v1.LlmRouter", default_timeout=60)
    stub = pb_grpc.LlmRouterStub(chan)
    targets: dict[str, tuple[Call, int | None]] = {
        "direct": (sse_stream(session, f"{servers.fake_url}/v1", "k", "gpt-fake"), None),
        "llm-router": (router_stream(stub), servers.router_pid),
    }
    traced_chans = []
    for name, (address, pid) in servers.traced.items():
        traced_chan = channel(address, "parley.llm_router.v1.LlmRouter", default_timeout=60)
        traced_chans.append(traced_chan)
        targets[name] = (router_stream(pb_grpc.LlmRouterStub(traced_chan)), pid)
    floor_chan = None
    if floor is not None:
        floor_chan = grpc.aio.insecure_channel(floor[0])
        await asyncio.wait_for(floor_chan.channel_ready(), 60)
        targets["relay-floor"] = (router_stream(pb_grpc.LlmRouterStub(floor_chan)), floor[1])
    if servers.litellm_url is not None:
        proxy = sse_stream(session, f"{servers.litellm_url}/v1", LITELLM_KEY, "gpt-fake")
        targets["litellm-proxy"] = (proxy, servers.litellm_pid)
    results: list[Level] = []
    try:
        for one, _ in targets.values():  # warm connections and caches
            await run_level(one, 10, 50)
        for concurrency in levels:
            count = max(requests, concurrency * 3) if concurrency > 1 else min(requests, 40)
            per_run: dict[str, list[Level]] = {name: [] for name in targets}
            pooled: dict[str, tuple[list[float], list[float]]] = {
                name: ([], []) for name in targets
            }
            for _ in range(runs):
                for name, (one, pid) in targets.items():
                    cpu_before = cpu_seconds(pid) if pid else 0.0
                    load_before = time.process_time() + cpu_seconds(servers.fake_pid)
                    run = await without_gc(run_level(one, concurrency, count, answer_seconds))
                    samples, errors = run.samples, sum(run.errors.values())
                    if pid:
                        await settle(pid)
                    cpu = (cpu_seconds(pid) - cpu_before) if pid else None
                    load = time.process_time() + cpu_seconds(servers.fake_pid) - load_before
                    ttft = [s.ttft * 1000 for s in samples]
                    total = [s.total * 1000 for s in samples]
                    pooled[name][0].extend(ttft)
                    pooled[name][1].extend(total)
                    ttft, total = ttft or [float("nan")], total or [float("nan")]
                    per_run[name].append(
                        Level(
                            name,
                            concurrency,
                            count,
                            percentile(ttft, 50),
                            percentile(ttft, 99),
                            percentile(total, 50),
                            percentile(total, 99),
                            errors,
                            None if cpu is None else cpu * 1000 / max(len(samples), 1),
                            load * 1000 / max(len(samples), 1),
                        )
                    )
            direct = _merge(per_run["direct"], *pooled["direct"])
            for name, level_runs in per_run.items():
                merged = direct
                if name != "direct":
                    merged = _merge(level_runs, *pooled[name])
                    merged.added_ttft_p50_ms = merged.ttft_p50_ms - direct.ttft_p50_ms
                    merged.added_ttft_p99_ms = merged.ttft_p99_ms - direct.ttft_p99_ms
                    merged.run_added_ttft_p99_ms = [
                        round(run.ttft_p99_ms - beside.ttft_p99_ms, 1)
                        for run, beside in zip(level_runs, per_run["direct"], strict=True)
                    ]
                results.append(merged)
                print(_row(merged), flush=True)
                if merged.run_added_ttft_p99_ms:
                    # A set's pooled p99 follows its worst run, and on a shared host a
                    # run's moves by tens of milliseconds: the median of the runs beside it.
                    print(
                        f"{name} at {concurrency}: added TTFT p99 by run "
                        f"{merged.run_added_ttft_p99_ms}, median "
                        f"{statistics.median(merged.run_added_ttft_p99_ms):+.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        await chan.close()
        for traced_chan in traced_chans:
            await traced_chan.close()
        if floor_chan is not None:
            await floor_chan.close()
        await session.close()
        servers.stop()
    return results


def _merge(levels: list[Level], ttft: list[float], total: list[float]) -> Level:
    """One target's runs of a level as one row: percentiles over every request of every run
    (``ttft`` and ``total``, in ms), CPU per request the median of the runs."""
    first = levels[0]

    def pct(values: list[float], q: float) -> float:
        return percentile(values, q) if values else float("nan")

    cpu = [lv.cpu_ms_per_request for lv in levels if lv.cpu_ms_per_request is not None]
    load = [lv.load_cpu_ms_per_request for lv in levels if lv.load_cpu_ms_per_request is not None]
    return Level(
        first.target,
        first.concurrency,
        first.requests,
        pct(ttft, 50),
        pct(ttft, 99),
        pct(total, 50),
        pct(total, 99),
        sum(lv.errors for lv in levels),
        statistics.median(cpu) if cpu else None,
        statistics.median(load) if load else None,
    )


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


HEADER = (
    "| target | streams | requests/run | TTFT p50 ms | TTFT p99 ms | total p50 ms | "
    "total p99 ms | added TTFT p50 ms | added TTFT p99 ms | CPU ms/request | "
    "load CPU ms/request | errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _row(level: Level) -> str:
    return (
        f"| {level.target} | {level.concurrency} | {level.requests} | "
        f"{_fmt(level.ttft_p50_ms)} | {_fmt(level.ttft_p99_ms)} | {_fmt(level.total_p50_ms)} | "
        f"{_fmt(level.total_p99_ms)} | {_fmt(level.added_ttft_p50_ms)} | "
        f"{_fmt(level.added_ttft_p99_ms)} | {_fmt(level.cpu_ms_per_request)} | "
        f"{_fmt(level.load_cpu_ms_per_request)} | {level.errors} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 50, 200])
    parser.add_argument("--requests", type=int, default=600, help="requests per level and run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/relay_floor.py, a bare grpc.aio + aiohttp relay: the stack's "
        "own cost, without the router's work",
    )
    parser.add_argument(
        "--tracing",
        action="store_true",
        help="also measure llm-router with tracing on: every instrumentation, and without "
        "the provider calls' HTTP spans",
    )
    parser.add_argument("--ttft-ms", type=float, default=TTFT_MS)
    parser.add_argument("--token-delay-ms", type=float, default=TOKEN_DELAY_MS)
    parser.add_argument("--tokens", type=int, default=TOKENS)
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="let every process run on every CPU (default: the server under test gets the "
        "last CPU, the fake and the load generator the others)",
    )
    args = parser.parse_args()
    placement = Placement() if args.shared_cpus else Placement.split()
    if placement.clients is not None:
        os.sched_setaffinity(0, placement.clients)  # before any thread starts
    print(HEADER, flush=True)
    timing = (args.ttft_ms, args.token_delay_ms, args.tokens)
    results = uvloop.run(
        bench(
            args.levels,
            args.requests,
            args.runs,
            not args.no_litellm,
            timing,
            placement,
            args.floor,
            args.tracing,
        )
    )
    out = ROOT / "bench" / "results" / f"router-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
