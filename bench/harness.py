"""What the benchmarks share: processes placed on CPUs, the fake provider and the LiteLLM
proxy as processes, a process's CPU and memory from /proc, the load generator (workers that
call again as soon as their call ends, started spread over one answer's length) and
percentiles. See bench/README.md for why the load is made this way.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeVar

import aiohttp
import httpx

from parley_devstack.platform import free_port as free_port

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
LITELLM_PYTHON = ROOT / ".bench" / "litellm" / "bin" / "python"
LITELLM_KEY = "sk-bench"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def memory_mib(pid: int) -> tuple[float, float]:
    """A process's resident memory now and at its highest since it started (VmRSS, VmHWM),
    in MiB, from /proc."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def host() -> str:
    """The CPU the figures come from: model, count and widest vector unit. Figures of two
    hosts differ by more than any change measured here (bench/results/2026-12-05-amd-host.md),
    so every result says which it was."""
    model, flags = "unknown CPU", set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    vectors = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    if "avx512_vnni" in flags:
        vectors += " with VNNI"
    return f"{model}, {os.cpu_count()} CPUs, {vectors}"


def load_average() -> str:
    """The host's load average over 1, 5 and 15 minutes, as ``uptime`` prints it."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
class LevelRun:
    """What one target's run of one level gave: a sample per answered call, the failed
    calls by reason, and the run's wall time in seconds."""

    samples: list[Sample] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


# One streamed call by worker ``i``: its time to first token and total time.
Call = Callable[[int], Awaitable[Sample]]


async def run_level(
    one: Call, concurrency: int, requests: int, ramp: float = 0.0, timeout: float = 30.0
) -> LevelRun:
    """``requests`` calls by ``concurrency`` workers, each calling again as soon as its call
    ends. Worker ``i`` starts ``i / concurrency`` of ``ramp`` late: with ``ramp`` one answer's
    length, calls begin and end spread evenly, as streams of many users do, instead of in
    waves of ``concurrency`` calls at once. A call over ``timeout`` seconds is an error."""
    run = LevelRun()
    remaining = requests

    async def worker(index: int) -> None:
        nonlocal remaining
        await asyncio.sleep(index * ramp / concurrency)
        while remaining > 0:
            remaining -= 1
            try:
                run.samples.append(await asyncio.wait_for(one(index), timeout))
            except TimeoutError:
                run.errors[f"over {timeout:g} s"] += 1
            except Exception as error:
                run.errors[str(error) or type(error).__name__] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    run.seconds = time.perf_counter() - started
    return run


async def without_gc(run: Awaitable[T]) -> T:
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


def sse_stream(session: aiohttp.ClientSession, base_url: str, api_key: str, model: str) -> Call:
    """One streamed Chat Completions request, read as server-sent events.

    The client parses lines only until the first content delta and then drains the stream,
    so its own CPU stays small next to the servers it measures.
    """
    url = f"{base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": True}
    ).encode()

    async def one(worker: int) -> Sample:
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


def client_session(limit: int = 1000, total_timeout: float = 120.0) -> aiohttp.ClientSession:
    """The load generator's HTTP client: up to ``limit`` connections, no per-host cap."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(total=total_timeout),
    )


@dataclass(frozen=True)
class Placement:
    """CPUs for the servers under test and for the rest (fake, load generator); ``None``
    leaves a process wherever the kernel puts it."""

    servers: frozenset[int] | None = None
    clients: frozenset[int] | None = None

    @staticmethod
    def split() -> Placement:
        """The last CPU for the servers under test, the others for the fake and the client,
        so that neither side's queueing shows up as the other's latency."""
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            return Placement()
        return Placement(frozenset(cpus[-1:]), frozenset(cpus[:-1]))

    def on(self, cpus: frozenset[int] | None) -> Callable[[], None] | None:
        if cpus is None:
            return None
        return lambda: os.sched_setaffinity(0, cpus)


def pin(pid: int, cpus: frozenset[int] | None) -> None:
    """Move every thread of a running process onto ``cpus`` (threads it starts later
    inherit the CPUs of the thread that starts them)."""
    if cpus is None:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), cpus)
        except (ProcessLookupError, FileNotFoundError):
            continue  # a thread that ended meanwhile


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


async def set_fake_timing(fake_url: str, timing: tuple[float, float, int]) -> None:
    """Change a running fake's default answer (milliseconds to the first token, between
    tokens, and tokens) over its control API."""
    ttft_ms, token_delay_ms, tokens = timing
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"{fake_url}/_fake/behaviour",
            json={"ttft_ms": ttft_ms, "token_delay_ms": token_delay_ms, "tokens": tokens},
        )
        response.raise_for_status()


async def fake_requests(fake_url: str) -> int:
    """How many requests the fake has received so far."""
    async with httpx.AsyncClient(timeout=5) as client:
        stats = (await client.get(f"{fake_url}/_fake/stats")).json()
    return int(stats["requests"])


def litellm_installed() -> bool:
    return LITELLM_PYTHON.exists()


def spawn_litellm(
    workdir: Path, fake_url: str, port: int, placement: Placement
) -> subprocess.Popen[bytes]:
    """A LiteLLM proxy (one worker, from its own environment under ``.bench/litellm``) in
    front of the fake, serving the model ``gpt-fake`` with the key ``LITELLM_KEY``."""
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-fake\n"
        "    litellm_params:\n"
        "      model: openai/gpt-fake\n"
        f"      api_base: {fake_url}/v1\n"
        "      api_key: not-needed\n"
    )
    return subprocess.Popen(
        [
            str(LITELLM_PYTHON.parent / "litellm"),
            *("--config", str(config), "--host", "127.0.0.1", "--port", str(port)),
            *("--num_workers", "1"),
        ],
        env={
            **os.environ,
            "LITELLM_MASTER_KEY": LITELLM_KEY,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
        },
        stdout=(workdir / "logs" / "litellm.log").open("wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=placement.on(placement.servers),
    )
