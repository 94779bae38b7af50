"""Whole-path benchmark: streamed turns through the public API (gateway -> conversation ->
llm-router -> provider) against the same fake provider called directly and through a
LiteLLM proxy.

    uv run python bench/whole_path.py                         # 1, 50, 200 streams, 3 runs
    uv run python bench/whole_path.py --levels 1 --runs 1 --requests 20 --no-capacity
    uv run python bench/whole_path.py --levels --capacity 1000  # the capacity run alone
    uv run python bench/whole_path.py --levels 1 50 --no-capacity --floor  # and the bare chain

The five services run as processes on embedded defaults (``parley_devstack.Platform``, SQLite,
in-process caches), llm-router's ``OPENAI_BASE_URL`` at the fake (``python -m parley_fakes``).
The client speaks the public API: a bearer token from ``parley_gateway.auth.issue_token``, a
conversation per worker (new for every run), ``POST /v1/conversations/{id}/messages`` read as
server-sent events up to the terminal event; a turn that does not end with ``done`` is an
error. Per level it reports time to first token (p50 and p99 over every turn of every run, and
each run's own figure against the direct run beside it), the added time to first token over
the direct call, CPU milliseconds per turn of gateway, conversation and llm-router (or the
proxy) from /proc, and errors. The capacity run then slows the fake to 1.5 s answers and keeps
``--capacity`` streams open: errors, time to first token, throughput and the memory of each
service. With ``--floor``, every level also runs the bare chain of ``path_floor.py`` and
``relay_floor.py`` ("path-floor"): the same hops and events with none of Parley's work.
Placement, the load's shape and the garbage collector as in bench/router.py (see
bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import uvloop

from parley_devstack import Platform
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings

sys.path.insert(0, str(Path(__file__).parent))
from harness import (
    LITELLM_KEY,
    ROOT,
    Call,
    LevelRun,
    Placement,
    Sample,
    client_session,
    cpu_seconds,
    fake_requests,
    free_port,
    host,
    litellm_installed,
    load_average,
    memory_mib,
    percentile,
    pin,
    run_level,
    set_fake_timing,
    settle,
    spawn_fake,
    spawn_litellm,
    sse_stream,
    wait_http,
    without_gc,
)

# As bench/router.py: 200 ms to the first token, then 20 tokens 20 ms apart (about 0.6 s).
FAST = (200.0, 20.0, 20)
# The capacity run's slow provider: 300 ms to the first token, 40 tokens 30 ms apart (1.5 s).
SLOW = (300.0, 30.0, 40)
# The services a turn passes through; retrieval and ingest stay idle (no knowledge base).
ON_PATH = ("gateway", "conversation", "llm-router")
SPY = ROOT / ".bench" / "tools" / "bin" / "py-spy"


def answer_seconds(timing: tuple[float, float, int]) -> float:
    ttft_ms, token_delay_ms, tokens = timing
    return (ttft_ms + token_delay_ms * (tokens - 1)) / 1000


def turn_stream(
    session: aiohttp.ClientSession, gateway_url: str, token: str, conversations: list[str]
) -> Call:
    """One streamed turn through the public API in worker ``i``'s conversation.

    Lines are only looked at for their event name (and the data of an ``error``), so the
    client's CPU stays small next to the servers it measures.
    """
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "text/event-stream",
        "Content-Type": "application/json",
    }
    body = json.dumps({"content": "hello"}).encode()

    async def one(worker: int) -> Sample:
        url = f"{gateway_url}/v1/conversations/{conversations[worker]}/messages"
        started = time.perf_counter()
        first = None
        last_event, error = b"", b""
        async with session.post(url, data=body, headers=headers) as response:
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            async for line in response.content:
                if line.startswith(b"event:"):
                    last_event = line[6:].strip()
                    if first is None and last_event == b"delta":
                        first = time.perf_counter()
                elif last_event == b"error" and line.startswith(b"data:"):
                    error = line[5:].strip()
        end = time.perf_counter()
        if last_event != b"done":
            code = json.loads(error).get("code") if error else last_event.decode() or "no event"
            raise RuntimeError(f"turn ended with {code}")
        return Sample((first or end) - started, end - started)

    return one


async def new_conversations(
    session: aiohttp.ClientSession, gateway_url: str, token: str, count: int
) -> list[str]:
    """``count`` empty conversations, made 20 at a time before a run starts."""
    gate = asyncio.Semaphore(20)

    async def create() -> str:
        async with (
            gate,
            session.post(
                f"{gateway_url}/v1/conversations",
                json={},
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            response.raise_for_status()
            return str((await response.json())["id"])

    return list(await asyncio.gather(*(create() for _ in range(count))))


@dataclass
class Target:
    """A way to stream a turn, the server processes whose CPU it costs, and what to do
    before each of its runs (the platform's fresh conversations)."""

    name: str
    one: Call
    pids: dict[str, int]
    prepare: Callable[[int], Awaitable[None]] | None = None


@dataclass
class Row:
    """One target at one level, over its runs."""

    target: str
    streams: int
    turns_per_run: int
    runs: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    total_p50_ms: float
    total_p99_ms: float
    errors: dict[str, int]
    turns_per_second: float
    cpu_ms_per_turn: dict[str, float]
    load_cpu_ms_per_turn: float
    added_ttft_p50_ms: float | None = None
    added_ttft_p99_ms: float | None = None
    # Each run's added TTFT against the direct run just before it (the spread behind the
    # pooled figures).
    run_added_ttft_p50_ms: list[float] = field(default_factory=list)
    run_added_ttft_p99_ms: list[float] = field(default_factory=list)
    provider_calls_per_turn: float | None = None
    rss_mib: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class Measured:
    run: LevelRun
    cpu_ms_per_turn: dict[str, float]
    load_cpu_ms_per_turn: float
    provider_calls: int
    rss_peak_mib: dict[str, float]


async def measure(
    target: Target,
    streams: int,
    turns: int,
    ramp: float,
    fake: tuple[str, int],
    timeout: float,
) -> Measured:
    """One run of ``target``: the turns, then the CPU its servers spent on them (until idle
    again), the provider calls made and the highest resident memory seen of each server."""
    fake_url, fake_pid = fake
    if target.prepare is not None:
        await target.prepare(streams)
    cpu_before = {name: cpu_seconds(pid) for name, pid in target.pids.items()}
    load_before = time.process_time() + cpu_seconds(fake_pid)
    calls_before = await fake_requests(fake_url)
    peaks = {name: memory_mib(pid)[0] for name, pid in target.pids.items()}

    async def watch_memory() -> None:
        while True:
            await asyncio.sleep(0.5)
            for name, pid in target.pids.items():
                peaks[name] = max(peaks[name], memory_mib(pid)[0])

    watcher = asyncio.create_task(watch_memory())
    try:
        run = await without_gc(run_level(target.one, streams, turns, ramp, timeout))
    finally:
        watcher.cancel()
    for pid in target.pids.values():
        await settle(pid)
    done = max(len(run.samples), 1)
    cpu = {
        name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / done
        for name, pid in target.pids.items()
    }
    load = (time.process_time() + cpu_seconds(fake_pid) - load_before) * 1000 / done
    calls = await fake_requests(fake_url) - calls_before
    return Measured(run, cpu, load, calls, peaks)


async def idle_cpu(pids: dict[str, int], seconds: float = 10.0) -> dict[str, float]:
    """Each idle service's background CPU in milliseconds a second (timers, heartbeats):
    at one stream it is a large part of the CPU per turn."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    await asyncio.sleep(seconds)
    return {
        name: round((cpu_seconds(pid) - before[name]) * 1000 / seconds, 2)
        for name, pid in pids.items()
    }


def summarise(target: str, streams: int, turns: int, runs: list[Measured]) -> Row:
    ttft = [s.ttft * 1000 for m in runs for s in m.run.samples] or [float("nan")]
    total = [s.total * 1000 for m in runs for s in m.run.samples] or [float("nan")]
    errors: Counter[str] = Counter()
    for m in runs:
        errors.update(m.run.errors)
    names = list(runs[0].cpu_ms_per_turn)
    answered = sum(len(m.run.samples) for m in runs)
    return Row(
        target,
        streams,
        turns,
        len(runs),
        percentile(ttft, 50),
        percentile(ttft, 99),
        percentile(total, 50),
        percentile(total, 99),
        dict(errors),
        statistics.median(len(m.run.samples) / m.run.seconds for m in runs),
        {name: statistics.median(m.cpu_ms_per_turn[name] for m in runs) for name in names},
        statistics.median(m.load_cpu_ms_per_turn for m in runs),
        provider_calls_per_turn=sum(m.provider_calls for m in runs) / max(answered, 1),
    )


def run_ttft(m: Measured, q: float) -> float:
    return percentile([s.ttft * 1000 for s in m.run.samples] or [float("nan")], q)


async def level(
    targets: list[Target],
    streams: int,
    turns: int,
    runs: int,
    timing: tuple[float, float, int],
    fake: tuple[str, int],
    timeout: float,
    rss: bool = False,
) -> list[Row]:
    """Every target at one level, ``runs`` times, the targets interleaved within a run so a
    slow spell of the host falls on all of them."""
    measured: dict[str, list[Measured]] = {t.name: [] for t in targets}
    for number in range(runs):
        for target in targets:
            m = await measure(target, streams, turns, answer_seconds(timing), fake, timeout)
            measured[target.name].append(m)
            print(
                f"  {target.name} at {streams}, run {number + 1}: {len(m.run.samples)} turns in "
                f"{m.run.seconds:.1f} s, TTFT p50 {run_ttft(m, 50):.1f} p99 "
                f"{run_ttft(m, 99):.1f} ms, errors {dict(m.run.errors)}, load {load_average()}",
                file=sys.stderr,
                flush=True,
            )
    rows = [summarise(t.name, streams, turns, measured[t.name]) for t in targets]
    direct = rows[0]
    for target, row in zip(targets[1:], rows[1:], strict=True):
        row.added_ttft_p50_ms = row.ttft_p50_ms - direct.ttft_p50_ms
        row.added_ttft_p99_ms = row.ttft_p99_ms - direct.ttft_p99_ms
        beside = measured[targets[0].name]
        row.run_added_ttft_p50_ms = [
            round(run_ttft(m, 50) - run_ttft(d, 50), 1)
            for m, d in zip(measured[target.name], beside, strict=True)
        ]
        row.run_added_ttft_p99_ms = [
            round(run_ttft(m, 99) - run_ttft(d, 99), 1)
            for m, d in zip(measured[target.name], beside, strict=True)
        ]
        if rss:
            row.rss_mib = {
                name: (
                    memory_mib(pid)[0],
                    max(m.rss_peak_mib[name] for m in measured[target.name]),
                )
                for name, pid in target.pids.items()
            }
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


HEADER = (
    "| target | streams | turns/run × runs | TTFT p50 ms | TTFT p99 ms | added p50 ms | "
    "added p99 ms | added p50, median of runs | added p99, median of runs | "
    "CPU ms/turn: gateway + conversation + llm-router (or proxy) = total | load CPU ms/turn | "
    "turns/s | errors |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def row_line(row: Row) -> str:
    cpu = row.cpu_ms_per_turn
    parts = " + ".join(f"{cpu[name]:.1f}" for name in cpu)
    cpu_text = f"{parts} = {sum(cpu.values()):.1f}" if len(cpu) > 1 else parts or "–"
    errors = sum(row.errors.values())
    return (
        f"| {row.target} | {row.streams} | {row.turns_per_run} × {row.runs} | "
        f"{_fmt(row.ttft_p50_ms)} | {_fmt(row.ttft_p99_ms)} | {_fmt(row.added_ttft_p50_ms)} | "
        f"{_fmt(row.added_ttft_p99_ms)} | {_fmt(_median(row.run_added_ttft_p50_ms))} | "
        f"{_fmt(_median(row.run_added_ttft_p99_ms))} | {cpu_text} | "
        f"{_fmt(row.load_cpu_ms_per_turn)} | {row.turns_per_second:.0f} | {errors} |"
    )


def against_proxy(rows: list[Row]) -> list[str]:
    """Per level, Parley's CPU a turn and added time to first token as a share of the proxy's
    in the same runs: the figures that move least between hosts (bench/README.md)."""
    lines = []
    for streams in dict.fromkeys(row.streams for row in rows):
        at = {row.target: row for row in rows if row.streams == streams}
        parley, proxy = at.get("parley"), at.get("litellm-proxy")
        if parley is None or proxy is None:
            continue
        ours, theirs = sum(parley.cpu_ms_per_turn.values()), sum(proxy.cpu_ms_per_turn.values())
        level = f"{streams} stream{'' if streams == 1 else 's'}"
        text = f"at {level}, Parley against LiteLLM in the same runs: CPU a turn "
        text += f"{ours / theirs:.2f}" if theirs else "–"
        if parley.added_ttft_p50_ms is not None and proxy.added_ttft_p50_ms:
            text += f", added TTFT p50 {parley.added_ttft_p50_ms / proxy.added_ttft_p50_ms:.2f}"
        lines.append(text)
    return lines


CAPACITY_HEADER = (
    "| target | streams | turns | errors | TTFT p50 ms | TTFT p99 ms | total p50 ms | "
    "total p99 ms | turns/s | tokens/s | RSS MiB after (peak during) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def capacity_line(row: Row, tokens: int) -> str:
    rss = ", ".join(f"{name} {now:.0f} ({peak:.0f})" for name, (now, peak) in row.rss_mib.items())
    errors = sum(row.errors.values())
    detail = f" {row.errors}" if errors else ""
    return (
        f"| {row.target} | {row.streams} | {row.turns_per_run} | {errors}{detail} | "
        f"{_fmt(row.ttft_p50_ms)} | {_fmt(row.ttft_p99_ms)} | {_fmt(row.total_p50_ms)} | "
        f"{_fmt(row.total_p99_ms)} | {row.turns_per_second:.0f} | "
        f"{row.turns_per_second * tokens:.0f} | {rss or '–'} |"
    )


async def profile(pids: dict[str, int], seconds: int, out: Path) -> None:
    """py-spy samples (holding the GIL) of each service for ``seconds``, without pausing it, as
    collapsed stacks in ``out/<service>.txt``; py-spy inherits the load generator's CPUs."""
    spies = [
        await asyncio.create_subprocess_exec(
            *(str(SPY), "record", "--nonblocking", "--gil", "--format", "raw"),
            *("--rate", "200"),
            *("--duration", str(seconds), "--pid", str(pid)),
            *("--output", str(out / f"{name}.txt")),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    await asyncio.gather(*(spy.wait() for spy in spies))


def where_cpu_goes(collapsed: Path, top: int = 8) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks (samples holding the GIL): the share of samples whose
    innermost frame is in each package ("by package"), the innermost frames with the most
    samples ("innermost"), and the service's own functions by samples on the stack at all
    ("parley code, inclusive")."""
    own_package: Counter[str] = Counter()
    innermost: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        function, _, where = frames[-1].partition(" (")
        path = where.rstrip(")").rsplit(":", 1)[0]
        own_package[path.split("/")[0] if "/" in path else path or "?"] += count
        innermost[f"{function} ({path})"] += count
        for frame in {f for f in frames if "parley_" in f}:
            name, _, place = frame.partition(" (")
            inclusive[f"{name} ({place.rsplit(':', 1)[0]})"] += count
    total = max(total, 1)
    return {
        title: [(key, n / total) for key, n in counter.most_common(top)]
        for title, counter in (
            ("by package", own_package),
            ("innermost", innermost),
            ("parley code, inclusive", inclusive),
        )
    }


def bench_platform(workdir: Path, fake_url: str) -> Platform:
    """The five services on embedded defaults, llm-router's provider the fake at
    ``fake_url``, not yet started."""
    return Platform(
        data_dir=workdir / "platform",
        env={
            "OPENAI_BASE_URL": f"{fake_url}/v1",
            "OPENAI_MODEL": "gpt-fake",
            "LOG_LEVEL": "WARNING",
            # The load is one user's: the gateway's per-user limits would refuse most of it.
            "LIMITS_DEFAULT_TIER": "unlimited",
        },
    )


def spawn_path_floor(
    workdir: Path, fake_url: str, placement: Placement
) -> tuple[str, dict[str, int], list[subprocess.Popen[bytes]]]:
    """The bare chain of ``bench/path_floor.py`` (gateway, conversation) and
    ``bench/relay_floor.py`` (llm-router) in front of the fake, on the servers' CPUs: the
    gateway's URL, the pids by the service each stands for, and the processes."""
    here = Path(__file__).parent
    ports = {name: free_port() for name in ON_PATH}
    commands = {
        "llm-router": [str(here / "relay_floor.py"), "--upstream", f"{fake_url}/v1"],
        "conversation": [
            *(str(here / "path_floor.py"), "conversation"),
            *("--upstream", f"127.0.0.1:{ports['llm-router']}"),
        ],
        "gateway": [
            *(str(here / "path_floor.py"), "gateway"),
            *("--upstream", f"127.0.0.1:{ports['conversation']}"),
        ],
    }
    processes = {
        name: subprocess.Popen(
            [sys.executable, *command, "--port", str(ports[name])],
            stdout=(workdir / "logs" / f"floor-{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
            preexec_fn=placement.on(placement.servers),
        )
        for name, command in commands.items()
    }
    pids = {name: processes[name].pid for name in ON_PATH}
    return f"http://127.0.0.1:{ports['gateway']}", pids, list(processes.values())


async def start_placed(platform: Platform, placement: Placement) -> dict[str, float]:
    """Start ``platform``: the services on a turn's path on the servers' CPUs, the rest on
    the clients'; each service's seconds until ready."""
    # The services inherit the CPUs of the thread that spawns them.
    if placement.servers is not None:
        os.sched_setaffinity(0, placement.servers)
    try:
        ready = await platform.start(one_at_a_time=True)
    finally:
        if placement.clients is not None:
            os.sched_setaffinity(0, placement.clients)
    for name, process in platform.processes.items():
        pin(process.pid, placement.servers if name in ON_PATH else placement.clients)
    return ready


async def bench(args: argparse.Namespace, placement: Placement) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="parley-whole-path-"))
    (workdir / "logs").mkdir(parents=True)
    fake_port = free_port()
    fake = spawn_fake(fake_port, FAST, placement, (workdir / "logs" / "fake.log").open("wb"))
    fake_url = f"http://127.0.0.1:{fake_port}"
    proxy: subprocess.Popen[bytes] | None = None
    proxy_url = ""
    if not args.no_litellm and litellm_installed():
        proxy_port = free_port()
        proxy = spawn_litellm(workdir, fake_url, proxy_port, placement)
        proxy_url = f"http://127.0.0.1:{proxy_port}"
    elif not args.no_litellm:
        print("LiteLLM is not installed in .bench/litellm: skipped", file=sys.stderr)
    platform = bench_platform(workdir, fake_url)
    floor: tuple[str, dict[str, int], list[subprocess.Popen[bytes]]] | None = None
    if args.floor:
        floor = spawn_path_floor(workdir, fake_url, placement)
    result: dict[str, object] = {"host": host(), "load_before": load_average()}
    session = client_session(limit=max([*args.levels, args.capacity]) + 100, total_timeout=300)
    try:
        await wait_http(f"{fake_url}/_fake/stats")
        ready = await start_placed(platform, placement)
        print(f"ready: {ready}", file=sys.stderr, flush=True)
        if proxy is not None:
            await wait_http(f"{proxy_url}/health/liveliness", within=120)
        settings = GatewaySettings()
        token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="bench", user="b")
        conversations: list[str] = []

        async def fresh_conversations(count: int) -> None:
            conversations[:] = await new_conversations(session, platform.gateway_url, token, count)

        pids = {name: platform.processes[name].pid for name in ON_PATH}
        targets = [
            Target("direct", sse_stream(session, f"{fake_url}/v1", "k", "gpt-fake"), {}),
            Target(
                "parley",
                turn_stream(session, platform.gateway_url, token, conversations),
                pids,
                fresh_conversations,
            ),
        ]
        if floor is not None:
            floor_url, floor_pids, _ = floor
            await wait_http(f"{floor_url}/docs")
            # The floor keeps nothing: any conversation id will do.
            floor_conversations: list[str] = []

            async def floor_ids(count: int) -> None:
                floor_conversations[:] = [f"conv_{n}" for n in range(count)]

            targets.append(
                Target(
                    "path-floor",
                    turn_stream(session, floor_url, token, floor_conversations),
                    floor_pids,
                    floor_ids,
                )
            )
        if proxy is not None:
            targets.append(
                Target(
                    "litellm-proxy",
                    sse_stream(session, f"{proxy_url}/v1", LITELLM_KEY, "gpt-fake"),
                    {"litellm-proxy": proxy.pid},
                )
            )
        fake_ref = (fake_url, fake.pid)
        for target in targets:  # warm connections and caches
            await measure(target, 10, 50, 0.0, fake_ref, 60)
        idle = await idle_cpu(pids)
        result["idle_cpu_ms_per_second"] = idle
        print(f"idle CPU ms/s: {idle}", file=sys.stderr, flush=True)
        print(HEADER, flush=True)
        rows: list[Row] = []
        for streams in args.levels:
            turns = max(args.requests, streams * 3) if streams > 1 else min(args.requests, 40)
            for row in await level(targets, streams, turns, args.runs, FAST, fake_ref, 60):
                rows.append(row)
                print(row_line(row), flush=True)
        result["levels"] = [asdict(r) for r in rows]
        for line in against_proxy(rows):
            print(line, flush=True)
        result["load_after_levels"] = load_average()

        if args.profile:
            out = workdir / "profile"
            out.mkdir()
            streams = args.profile_streams
            spy = asyncio.create_task(profile(pids, args.profile, out))
            await _turns_for(targets[1], streams, args.profile + 2, fake_ref)
            await spy
            result["profile_dir"] = str(out)
            for name in pids:
                path = out / f"{name}.txt"
                if not path.exists():
                    continue
                summary = where_cpu_goes(path)
                result[f"profile_{name}"] = summary
                for title, shares in summary.items():
                    print(f"\n{name}, {title} (share of samples holding the GIL):", flush=True)
                    for key, share in shares:
                        print(f"  {share:6.1%}  {key}", flush=True)

        if args.capacity:
            await set_fake_timing(fake_url, SLOW)
            capacity_targets = [t for t in targets if t.name in ("direct", "parley")]
            if args.capacity_litellm:
                capacity_targets = [t for t in targets if t.name != "path-floor"]
            print("\n" + CAPACITY_HEADER, flush=True)
            capacity_rows = await level(
                capacity_targets,
                args.capacity,
                args.capacity_requests,
                1,
                SLOW,
                fake_ref,
                args.capacity_timeout,
                rss=True,
            )
            for row in capacity_rows:
                print(capacity_line(row, SLOW[2]), flush=True)
            result["capacity"] = [asdict(r) for r in capacity_rows]
        result["load_after"] = load_average()
        result["idle_rss_mib"] = {
            name: memory_mib(process.pid)[0] for name, process in platform.processes.items()
        }
    finally:
        await session.close()
        await platform.stop()
        for server in (fake, proxy, *(floor[2] if floor else ())):
            if server is not None:
                server.terminate()
                server.wait(15)
    print(f"\nworkdir (logs): {workdir}", file=sys.stderr)
    return result


async def _turns_for(target: Target, streams: int, seconds: float, fake: tuple[str, int]) -> None:
    """Turns of ``target`` by ``streams`` workers for about ``seconds`` (the profile's load)."""
    per_second = streams / answer_seconds(FAST)
    await measure(target, streams, int(per_second * seconds), answer_seconds(FAST), fake, 60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--levels", type=int, nargs="*", default=[1, 50, 200])
    parser.add_argument("--requests", type=int, default=600, help="turns per level and run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also measure the bare chain of bench/path_floor.py and bench/relay_floor.py "
        "(\"path-floor\"): the stack's own cost, none of Parley's work",
    )
    parser.add_argument(
        "--capacity", type=int, default=1000, help="streams of the capacity run (0: none)"
    )
    parser.add_argument("--no-capacity", dest="capacity", action="store_const", const=0)
    parser.add_argument("--capacity-requests", type=int, default=3000)
    parser.add_argument("--capacity-timeout", type=float, default=120.0)
    parser.add_argument(
        "--capacity-litellm", action="store_true", help="also run the proxy at capacity"
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="py-spy (from .bench/tools) samples each service on the path for SECONDS",
    )
    parser.add_argument("--profile-streams", type=int, default=50)
    parser.add_argument(
        "--shared-cpus",
        action="store_true",
        help="let every process run on every CPU (default: gateway, conversation and "
        "llm-router, or the proxy, on the last CPU; the fake and the load generator on the "
        "others)",
    )
    args = parser.parse_args()
    placement = Placement() if args.shared_cpus else Placement.split()
    if placement.clients is not None:
        os.sched_setaffinity(0, placement.clients)  # before any thread starts
    print(f"host: {host()}; load average before: {load_average()}", flush=True)
    result = uvloop.run(bench(args, placement))
    print(f"load average after: {load_average()}", flush=True)
    out = ROOT / "bench" / "results" / f"whole-path-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"raw results: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
