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
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import aiohttp
import grpc
import httpx
import uvloop

from parley.llm_router.v1 import llm_router_pb2 as pb
from parley.llm_router.v1 import llm_router_pb2_grpc as pb_grpc
from parley_runtime.context import Principal, principal_var
from parley_runtime.grpc_client import channel

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
LITELLM_PYTHON = ROOT / ".bench" / "litellm" / "bin" / "python"
# The fake provider answers like a fast hosted model: 200 ms to the first token, then 20
# tokens 20 ms apart (about 0.6 s an answer). Overridable with --ttft-ms and friends.
TOKENS = 20
TTFT_MS = 200
TOKEN_DELAY_MS = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def settle(pid: int, within: float = 30.0) -> None:
    """Wait until process ``pid`` is idle (under 5 ms of CPU in 200 ms), at most ``within``
    seconds: a server that is still working off a level (the LiteLLM proxy at 200 streams
    is, for seconds) would otherwise slow the next target's run, and its CPU for the level
    would miss that work."""
    deadline = time.monotonic() + within
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = cpu_seconds(pid)
        if now - before < 0.005:
            return
        before = now


async def wait_http(url: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(url)).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@dataclass
class Sample:
    ttft: float
    total: float


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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def run_level(
    one: Callable[[], Awaitable[Sample]], concurrency: int, requests: int, ramp: float = 0.0
) -> tuple[list[Sample], int]:
    """``requests`` calls by ``concurrency`` workers, each calling again as soon as its call
    ends. Worker ``i`` starts ``i / concurrency`` of ``ramp`` late: with ``ramp`` one answer's
    length, calls begin and end spread evenly, as streams of many users do, instead of in
    waves of ``concurrency`` calls at once."""
    samples: list[Sample] = []
    errors = 0
    remaining = requests

    async def worker(delay: float) -> None:
        nonlocal remaining, errors
        await asyncio.sleep(delay)
        while remaining > 0:
            remaining -= 1
            try:
                samples.append(await asyncio.wait_for(one(), 30))
            except Exception:
                errors += 1

    await asyncio.gather(*(worker(i * ramp / concurrency) for i in range(concurrency)))
    return samples, errors


def sse_stream(
    session: aiohttp.ClientSession, base_url: str, api_key: str, model: str
) -> Callable[[], Awaitable[Sample]]:
    """One streamed Chat Completions request, read as server-sent events.

    The client parses lines only until the first content delta and then drains the stream,
    so its own CPU stays small next to the servers it measures.
    """
    url = f"{base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    ).encode()

    async def one() -> Sample:
        started = time.perf_counter()
        first = None
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            async for line in response.content:
                if first is None and line.startswith(b"data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    if (choices[0].get("delta") or {}).get("content"):
                        first = time.perf_counter()
        end = time.perf_counter()
        return Sample((first or end) - started, end - started)

    return one


def router_stream(stub: pb_grpc.LlmRouterStub) -> Callable[[], Awaitable[Sample]]:
    request = pb.ChatRequest(
        messages=[pb.ChatMessage(role=pb.ROLE_USER, content=[pb.ContentPart(text="hello")])]
    )

    async def one() -> Sample:
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


@dataclass
class Servers:
    fake_url: str
    router_address: str
    router_pid: int
    fake_pid: int
    litellm_url: str | None = None
    litellm_pid: int | None = None
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass(frozen=True)
class Placement:
    """CPUs for the servers under test (router, proxy) and for the rest (fake, load
    generator); ``None`` leaves a process wherever the kernel puts it."""

    servers: frozenset[int] | None = None
    clients: frozenset[int] | None = None

    @staticmethod
    def split() -> Placement:
        """The last CPU for the server under test, the others for the fake and the client,
        so that neither side's queueing shows up as the other's latency."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return Placement()
        return Placement(frozenset(cpus[-1:]), frozenset(cpus[:-1]))

    def on(self, cpus: frozenset[int] | None) -> Callable[[], None] | None:
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)


def spawn_fake(
    port: int, timing: tuple[float, float, int], placement: Placement, output: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    """The fake OpenAI server as a process on the clients' CPUs, answering with ``timing``
    (milliseconds to the first token, milliseconds between tokens, tokens)."""
    ttft_ms, token_delay_ms, tokens = timing
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "parley_fakes", "openai", "--port", str(port)),
            *("--tokens", str(tokens), "--ttft-ms", str(ttft_ms)),
            *("--token-delay-ms", str(token_delay_ms)),
        ],
        stdout=output,
        stderr=subprocess.STDOUT,
        preexec_fn=placement.on(placement.clients),
    )


def spawn(
    workdir: Path, with_litellm: bool, timing: tuple[float, float, int], placement: Placement
) -> Servers:
    """Start the fake, the router and (when installed) the LiteLLM proxy as processes."""
    logs = workdir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    fake_port, router_port = free_port(), free_port()
    fake = spawn_fake(fake_port, timing, placement, (logs / "fake.log").open("wb"))
    fake_url = f"http://127.0.0.1:{fake_port}"
    router_env = {
        **os.environ,
        "GRPC_PORT": str(router_port),
        "OPENAI_BASE_URL": f"{fake_url}/v1",
        "OPENAI_MODEL": "gpt-fake",
        "DATABASE_URL": f"sqlite:///{workdir}/router.db",
        "LOG_LEVEL": "WARNING",
    }
    router_env.pop("REDIS_URL", None)
    router = subprocess.Popen(
        [str(Path(sys.executable).parent / "parley-llm-router")],
        env=router_env,
        stdout=(logs / "router.log").open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=placement.on(placement.servers),
    )
    servers = Servers(
        fake_url, f"127.0.0.1:{router_port}", router.pid, fake.pid, processes=[fake, router]
    )
    if with_litellm and LITELLM_PYTHON.exists():
        port = free_port()
        config = workdir / "litellm.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: gpt-fake\n"
            "    litellm_params:\n"
            "      model: openai/gpt-fake\n"
            f"      api_base: {fake_url}/v1\n"
            "      api_key: not-needed\n"
        )
        proxy = subprocess.Popen(
            [
                str(LITELLM_PYTHON.parent / "litellm"),
                "--config",
                str(config),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
            ],
            env={
                **os.environ,
                "LITELLM_MASTER_KEY": "sk-bench",
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_LOG": "ERROR",
            },
            stdout=(logs / "litellm.log").open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=placement.on(placement.servers),
        )
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
    async with grpc.aio.insecure_channel(servers.router_address) as chan:
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
) -> list[Level]:
    workdir = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    ttft_ms, token_delay_ms, tokens = timing
    answer_seconds = (ttft_ms + token_delay_ms * (tokens - 1)) / 1000
    servers = spawn(workdir, with_litellm, timing, placement)
    floor: tuple[str, int] | None = None
    if with_floor:
        floor = spawn_floor(servers, placement, workdir)
    await wait_ready(servers)
    principal_var.set(Principal("bench", "bench"))
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1000), timeout=aiohttp.ClientTimeout(total=60)
    )
    chan = channel(servers.router_address, "parley.llm_router.v1.LlmRouter", default_timeout=60)
    stub = pb_grpc.LlmRouterStub(chan)
    targets: dict[str, tuple[Callable[[], Awaitable[Sample]], int | None]] = {
        "direct": (sse_stream(session, f"{servers.fake_url}/v1", "k", "gpt-fake"), None),
        "llm-router": (router_stream(stub), servers.router_pid),
    }
    floor_chan = None
    if floor is not None:
        floor_chan = grpc.aio.insecure_channel(floor[0])
        await asyncio.wait_for(floor_chan.channel_ready(), 60)
        targets["relay-floor"] = (router_stream(pb_grpc.LlmRouterStub(floor_chan)), floor[1])
    if servers.litellm_url is not None:
        proxy = sse_stream(session, f"{servers.litellm_url}/v1", "sk-bench", "gpt-fake")
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
                    samples, errors = await _without_gc(
                        run_level(one, concurrency, count, answer_seconds)
                    )
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
        if floor_chan is not None:
            await floor_chan.close()
        await session.close()
        servers.stop()
    return results


async def _without_gc(run: Awaitable[T]) -> T:
    """``run`` with the load generator's garbage collector off, collected before and after:
    the generator is the instrument, and its collections (at 200 streams about 220 a set of
    runs, up to 9 ms, and once 34 ms) would land in whichever target it is measuring."""
    gc.collect()
    gc.disable()
    try:
        return await run
    finally:
        gc.enable()
        gc.collect()


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
        )
    )
    out = ROOT / "bench" / "results" / f"router-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps([asdict(r) for r in results], indent=2))
    print(f"\nraw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
