"""Start the five services as real processes on loopback ports, wait until each is ready,
and stop them all cleanly.

Each process gets its own environment (ports, peers' addresses, a data directory for its
SQLite file and embedded Qdrant) and writes its JSON logs to ``<data_dir>/logs/<name>.log``.
The platform runs on embedded defaults: a ``REDIS_URL`` of the caller's environment is not
passed on (limits, breakers and the response cache stay in each process, and no state is
shared with earlier runs); a caller that wants Redis names it in ``env`` or
``per_service_env``.
Readiness is the standard gRPC health check for the four internal services and ``/readyz``
for the gateway.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = ("retrieval", "llm-router", "ingest", "conversation", "gateway")
# Variables of the caller's environment the services do not inherit (module docstring).
NOT_INHERITED = frozenset({"REDIS_URL"})


def _inherited() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}


# Ports handed out by this process: each is bound later, by a child.
_GIVEN: set[int] = set()


def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections."""
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    except (OSError, IndexError):
        return 32768
    return int(low)


def free_port() -> int:
    """A free loopback port for a service to bind once it has started, seconds later.

    It is taken below the kernel's range for outgoing connections: a port of that range (what
    binding port 0 gives) may meanwhile become the local end of any connection made on the
    machine, the starting services' own to each other among them, and the service then
    fails to bind it.
    """
    floor = _ephemeral_floor()
    for _ in range(100):
        port = random.randrange(10_000, max(floor, 10_001))
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        given: int = sock.getsockname()[1]
        return given


@dataclass
class ServiceSpec:
    """One process: its console script, environment and how to tell it is ready."""

    name: str
    port: int
    env: dict[str, str]
    http: bool = False
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def command(self) -> list[str]:
        return [str(self.bin_dir / f"parley-{self.name}")]


@dataclass
class Platform:
    """The five services on one machine (see the module docstring)."""

    data_dir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    per_service_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    gateway_port: int | None = None
    # Where a service's command is, when not in this interpreter's environment.
    bin_dirs: Mapping[str, Path] = field(default_factory=dict)
    specs: dict[str, ServiceSpec] = field(init=False, default_factory=dict)
    processes: dict[str, asyncio.subprocess.Process] = field(init=False, default_factory=dict)
    _logs: list[IO[bytes]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        if self.gateway_port is not None:
            ports["gateway"] = self.gateway_port
        peers = {
            "CONVERSATION_ADDR": f"127.0.0.1:{ports['conversation']}",
            "LLM_ROUTER_ADDR": f"127.0.0.1:{ports['llm-router']}",
            "RETRIEVAL_ADDR": f"127.0.0.1:{ports['retrieval']}",
            "INGEST_ADDR": f"127.0.0.1:{ports['ingest']}",
        }
        data = self.data_dir
        own: dict[str, dict[str, str]] = {
            "conversation": {"DATABASE_URL": f"sqlite:///{data}/conversation.db"},
            "ingest": {"DATABASE_URL": f"sqlite:///{data}/ingest.db"},
            "retrieval": {"QDRANT_PATH": str(data / "qdrant")},
            "llm-router": {"DATABASE_URL": f"sqlite:///{data}/llm-router.db"},
            "gateway": {"DATABASE_URL": f"sqlite:///{data}/gateway.db"},
        }
        for name in SERVICES:
            env = {
                **_inherited(),
                **peers,
                "PYTHONUNBUFFERED": "1",
                **self.env,
                **own[name],
                **self.per_service_env.get(name, {}),
            }
            port_key = "HTTP_PORT" if name == "gateway" else "GRPC_PORT"
            env[port_key] = str(ports[name])
            self.specs[name] = ServiceSpec(name, ports[name], env, http=name == "gateway")
            if name in self.bin_dirs:
                self.specs[name].bin_dir = self.bin_dirs[name]

    @property
    def gateway_url(self) -> str:
        return f"http://{self.specs['gateway'].address}"

    def log_path(self, name: str) -> Path:
        return self.data_dir / "logs" / f"{name}.log"

    async def start(
        self, ready_within: float = 60.0, one_at_a_time: bool = False
    ) -> dict[str, float]:
        """Start every service; return seconds from spawn to ready for each.

        ``one_at_a_time`` spawns each service once the previous one is ready (in the order of
        their dependencies), so no start competes with another for the cores.
        """
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        try:
            async with asyncio.timeout(ready_within):
                if one_at_a_time:
                    return {
                        name: await self._wait_ready(spec, await self._spawn(spec))
                        for name, spec in self.specs.items()
                    }
                spawned = {name: await self._spawn(spec) for name, spec in self.specs.items()}
                ready = await asyncio.gather(
                    *(self._wait_ready(spec, spawned[name]) for name, spec in self.specs.items())
                )
        except BaseException:
            await self.stop()
            raise
        return dict(zip(self.specs, ready, strict=True))

    async def _spawn(self, spec: ServiceSpec) -> float:
        """Start one service's process; return when it was spawned (monotonic seconds)."""
        log = self.log_path(spec.name).open("ab")
        self._logs.append(log)
        spawned = time.monotonic()
        self.processes[spec.name] = await asyncio.create_subprocess_exec(
            *spec.command, env=spec.env, stdout=log, stderr=log, start_new_session=True
        )
        return spawned

    async def kill(self, name: str) -> None:
        """SIGKILL one service, as a crash would: no drain, no cleanup."""
        process = self.processes[name]
        process.kill()
        await process.wait()

    async def restart(self, name: str, ready_within: float = 30.0) -> float:
        """Start one (stopped or killed) service again on its port; seconds until ready."""
        spec = self.specs[name]
        async with asyncio.timeout(ready_within):
            return await self._wait_ready(spec, await self._spawn(spec))

    async def _wait_ready(self, spec: ServiceSpec, spawned: float) -> float:
        process = self.processes[spec.name]
        while True:
            if process.returncode is not None:
                tail = self.log_path(spec.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{spec.name} exited with {process.returncode}:\n{tail}")
            if await (self._http_ready(spec) if spec.http else self._grpc_ready(spec)):
                return time.monotonic() - spawned
            await asyncio.sleep(0.05)

    @staticmethod
    async def _grpc_ready(spec: ServiceSpec) -> bool:
        async with grpc.aio.insecure_channel(spec.address) as chan:
            try:
                reply = await health_pb2_grpc.HealthStub(chan).Check(
                    health_pb2.HealthCheckRequest(), timeout=0.5
                )
            except grpc.RpcError:
                return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

    @staticmethod
    async def _http_ready(spec: ServiceSpec) -> bool:
        try:
            async with httpx.AsyncClient(timeout=0.5) as client:
                response = await client.get(f"http://{spec.address}/readyz")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def stop(self, grace: float = 10.0) -> dict[str, int | None]:
        """SIGTERM every process, wait up to ``grace``, then SIGKILL; return exit codes."""
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                async with asyncio.timeout(grace):
                    codes[name] = await process.wait()
            except TimeoutError:
                process.kill()
                codes[name] = await process.wait()
        for log in self._logs:
            log.close()
        self._logs.clear()
        return codes
