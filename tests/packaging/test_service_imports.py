"""Each service starts from what its own package installs, and nothing more.

A service's image installs its package's locked dependencies only (``uv sync --package``),
while the workspace's environment has every package: an import of an undeclared package
passes every other test and fails in the image. Here each service gets an environment of its
own, made the way its Dockerfile makes it, and must start from it and report ready. The lock
itself is checked for what no service may carry.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import tomllib
from functools import cache
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ["gateway", "conversation", "llm-router", "retrieval", "ingest"]


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def lock() -> dict[str, dict[str, object]]:
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {normalise(p["name"]): p for p in packages}


def closure(package: str) -> set[str]:
    """``package`` and every distribution it needs, with the extras each edge asks for."""
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(normalise(package), ())]
    while todo:
        name, extras = todo.pop()
        key = f"{name}[{','.join(extras)}]"
        if key in seen:
            continue
        seen.add(key)
        entry = lock()[name]
        edges = list(entry.get("dependencies", []))  # type: ignore[call-overload]
        optional: dict[str, list[dict[str, object]]] = entry.get("optional-dependencies", {})  # type: ignore[assignment]
        for extra in extras:
            edges += optional.get(extra, [])
        for edge in edges:
            todo.append((normalise(str(edge["name"])), tuple(edge.get("extra", []))))  # type: ignore[arg-type]
    return {key.split("[")[0] for key in seen}


def uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    if not Path(found).exists():
        pytest.fail(
            "uv is needed to build a service's own environment (make install puts it in .tools/)"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def ready(service: str, port: int) -> bool:
    if service == "gateway":
        try:
            async with httpx.AsyncClient(timeout=0.5) as client:
                return (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200
        except httpx.HTTPError:
            return False
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan:
        try:
            reply = await health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def own_environment(service: str, folder: Path) -> Path:
    """The service's locked dependencies only, as its Dockerfile installs them."""
    subprocess.run(
        [uv(), "sync", "--frozen", "--no-dev", "--package", f"parley-{service}", "--quiet"],
        cwd=ROOT,
        env={**clean_environment(), "UV_PROJECT_ENVIRONMENT": str(folder)},
        check=True,
        timeout=300,
    )
    return folder


def clean_environment() -> dict[str, str]:
    # Embedded defaults: no shared database or Redis, no workspace environment.
    dropped = ("VIRTUAL_ENV", "DATABASE_URL", "REDIS_URL")
    return {k: v for k, v in os.environ.items() if k not in dropped}


@pytest.mark.parametrize("service", SERVICES)
async def test_a_service_starts_from_its_own_environment(service: str, tmp_path: Path) -> None:
    venv = await asyncio.to_thread(own_environment, service, tmp_path / "venv")
    env = clean_environment()
    port = free_port()
    port_key = "HTTP_PORT" if service == "gateway" else "GRPC_PORT"
    process = await asyncio.create_subprocess_exec(
        str(venv / "bin" / f"parley-{service}"),
        cwd=tmp_path,
        env={**env, port_key: str(port), "LOG_LEVEL": "WARNING"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            while not await ready(service, port):
                assert process.returncode is None, (await process.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await process.wait()
    assert process.returncode == 0


def test_retrieval_installs_no_sql_stack() -> None:
    # The gateway owns tables (identity: API keys) since it has a database of its own.
    assert {"sqlalchemy", "alembic", "asyncpg", "aiosqlite"}.isdisjoint(closure("parley-retrieval"))


def test_the_gateway_installs_no_model_runtime() -> None:
    gateway = closure("parley-gateway")
    assert "onnxruntime" not in gateway
    assert {"sqlalchemy", "alembic"} <= gateway  # this test reads the lock, not nothing


def test_the_lock_has_no_pytorch_stack() -> None:
    heavy = re.compile(r"^(torch|triton|transformers|scikit-learn|scipy|nvidia-.*)$")
    assert [name for name in lock() if heavy.match(name)] == []
