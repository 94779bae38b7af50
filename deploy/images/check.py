"""Starts each Parley image the way its chart runs it and checks the images' contract.

    .tools/bin/uv run python deploy/images/check.py [service...]      (make images runs it)

Each container runs as Kubernetes would run it: the image's own user, a read-only root
filesystem with a tmpfs at /tmp only, every capability dropped, no privilege escalation, ports
published on loopback alone. An image fails unless its bytecode is compiled and it holds no
build tool; the service process runs as uid 10001; a write anywhere but /tmp fails, even for
root; the health check answers SERVING (gRPC) or 200 (the gateway's /healthz) and /metrics
answers on 9090; what the image ships beyond the server works (migrations, the embedding
model, tiktoken's encoding); and SIGTERM ends the container with status 0 within the drain
time. The images that only serve requests (gateway, conversation) must stay under 250 MB.
deploy/images/README.md lists every check.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parley.llm_router.v1 import llm_router_pb2 as router_pb
from parley.llm_router.v1 import llm_router_pb2_grpc as router_grpc
from parley.retrieval.v1 import retrieval_pb2 as retrieval_pb
from parley.retrieval.v1 import retrieval_pb2_grpc as retrieval_grpc
from parley_runtime.context import Principal

HERE = Path(__file__).resolve().parent
UID = 10001
METRICS_PORT = 9090
GRACE_SECONDS = 10.0  # SHUTDOWN_GRACE_SECONDS's default
START_TIMEOUT_SECONDS = 60.0
SIZE_LIMIT_MB = 250
# A pod's securityContext in the charts, as podman flags.
AS_IN_KUBERNETES = (
    "--read-only",
    "--read-only-tmpfs=false",
    "--tmpfs=/tmp",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
)
# Root may write anywhere its permissions allow: only a read-only filesystem stops it here.
READ_ONLY_PATHS = ("/", "/app", "/app/.venv", "/etc", "/var/tmp")
PRINCIPAL = Principal("image-check", "check").to_metadata()


class CheckFailed(Exception):
    """One image broke its contract; the message says how."""


@dataclass(frozen=True)
class Image:
    """A service's image and what its check runs beyond the shared contract."""

    service: str
    port: int
    grpc_service: str | None = None  # None: the gateway, checked over HTTP
    migrations: bool = False
    env: dict[str, str] = field(default_factory=dict)
    exercise: Callable[[str], None] | None = None  # called with the service's host:port
    size_limited: bool = False

    @property
    def name(self) -> str:
        return f"parley-{self.service}"


@dataclass
class Result:
    """What one image measured, for the closing table."""

    service: str
    size_mb: float = 0.0
    healthy_seconds: float = 0.0
    stop_seconds: float = 0.0
    failure: str = ""


def embed_with_the_local_model(address: str) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = router_grpc.LlmRouterStub(channel)
        reply = stub.Embed(
            router_pb.EmbedRequest(inputs=["leave policy"]), metadata=PRINCIPAL, timeout=60
        )
        if len(reply.embeddings) != 1 or len(reply.embeddings[0].values) != 384:
            raise CheckFailed(f"Embed gave no 384-dimension vector: {reply}")
        # OPENAI_API_KEY (set for this container) makes the default alias an OpenAI model,
        # which is counted with tiktoken's encoding from its package, offline.
        message = router_pb.ChatMessage(
            role=router_pb.ROLE_USER, content=[router_pb.ContentPart(text="Hello, world")]
        )
        count = stub.CountTokens(
            router_pb.CountTokensRequest(messages=[message]), metadata=PRINCIPAL, timeout=10
        )
        if count.estimated or count.input_tokens <= 0:
            raise CheckFailed(f"CountTokens did not use tiktoken: {count}")


def index_and_search(address: str) -> None:
    texts = {
        "leave": "Employees have 25 days of paid leave a year.",
        "office": "The office closes at six on Fridays.",
    }
    with grpc.insecure_channel(address) as channel:
        stub = retrieval_grpc.RetrievalStub(channel)
        chunks = [
            retrieval_pb.Chunk(chunk_id=key, text=text, position=position)
            for position, (key, text) in enumerate(texts.items())
        ]
        request = retrieval_pb.IndexChunksRequest(
            knowledge_base_id="handbook", document_id="d1", document_version=1, chunks=chunks
        )
        stub.IndexChunks(request, metadata=PRINCIPAL, timeout=60)
        found = stub.Search(
            retrieval_pb.SearchRequest(
                knowledge_base_id="handbook", query="How many days of holiday?", top_k=2
            ),
            metadata=PRINCIPAL,
            timeout=30,
        )
    if [c.chunk_id for c in found.chunks] != ["leave", "office"]:
        raise CheckFailed(f"Search ranked the chunks wrongly: {found}")


IMAGES = (
    Image("gateway", 8080, migrations=True, size_limited=True),
    Image(
        "conversation",
        50061,
        "parley.conversation.v1.ConversationService",
        migrations=True,
        size_limited=True,
    ),
    Image(
        "llm-router",
        50062,
        "parley.llm_router.v1.LlmRouter",
        migrations=True,
        env={"OPENAI_API_KEY": "not-a-key"},
        exercise=embed_with_the_local_model,
    ),
    Image("retrieval", 50063, "parley.retrieval.v1.Retrieval", exercise=index_and_search),
    # Its parsers (lxml, trafilatura, pypdf, python-docx) put it above the limit of the images
    # that only serve requests.
    Image("ingest", 50064, "parley.ingest.v1.Ingest", migrations=True),
)


def podman(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise CheckFailed(f"podman {' '.join(args)}: {result.stderr.strip()}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def grpc_serving(address: str, service: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=2) as response:
        if response.status != 200:
            raise CheckFailed(f"GET {url}: {response.status}")
        body: bytes = response.read()
        return body


def check_config(image: Image, tag: str, result: Result) -> None:
    """The image's metadata: user, ports and labels, as the charts and registries read them."""
    inspected = json.loads(podman("image", "inspect", f"{image.name}:{tag}").stdout)[0]
    config = inspected["Config"]
    result.size_mb = inspected["Size"] / 1e6
    if config.get("User") != f"{UID}:{UID}":
        raise CheckFailed(f"USER is {config.get('User')!r}, not a numeric {UID}:{UID}")
    exposed = set(config.get("ExposedPorts", {}))
    if exposed != {f"{image.port}/tcp", f"{METRICS_PORT}/tcp"}:
        raise CheckFailed(f"exposes {sorted(exposed)}")
    labels = config.get("Labels") or {}
    expected = {"title": image.name, "version": tag}
    for key, value in expected.items():
        if labels.get(f"org.opencontainers.image.{key}") != value:
            raise CheckFailed(f"label org.opencontainers.image.{key} is not {value!r}")
    for key in ("description", "licenses", "source"):
        if f"org.opencontainers.image.{key}" not in labels:
            raise CheckFailed(f"no label org.opencontainers.image.{key}")


# Run inside the image: what it holds besides the service.
CONTENTS = """
import json, pathlib, shutil, sys
site = next(pathlib.Path("/app/.venv/lib").glob("python3.*/site-packages"))
tag = sys.implementation.cache_tag
print(json.dumps({
    "uncompiled": [
        str(p) for p in site.rglob("*.py")
        if not (p.parent / "__pycache__" / f"{p.stem}.{tag}.pyc").exists()
    ][:5],
    "tools": [t for t in ("uv", "pip", "gcc", "cc", "strip", "ld") if shutil.which(t)],
    "apt_lists": [p.name for p in pathlib.Path("/var/lib/apt/lists").glob("*_Packages*")],
}))
"""


def check_contents(image: Image, tag: str) -> None:
    """Bytecode compiled at build (nothing can be written at run time), and no build tools,
    package manager caches or package lists."""
    found = json.loads(
        podman(
            "run",
            "--rm",
            *AS_IN_KUBERNETES,
            "--entrypoint=python3",
            f"{image.name}:{tag}",
            "-c",
            CONTENTS,
        ).stdout
    )
    if any(found.values()):
        raise CheckFailed(f"the image holds what it should not: {found}")


def check_migrations(image: Image, tag: str) -> None:
    """`migrate upgrade`, as the charts' hook Job runs it, on a read-only root filesystem."""
    result = podman(
        "run", "--rm", *AS_IN_KUBERNETES, f"{image.name}:{tag}", "migrate", "upgrade", check=False
    )
    if result.returncode != 0:
        raise CheckFailed(f"migrate upgrade exited {result.returncode}: {result.stderr[-2000:]}")


def wait_healthy(image: Image, container: str, address: str) -> float:
    started = time.monotonic()
    while True:
        try:
            if image.grpc_service is None:
                http_ok(f"http://{address}/healthz")
                return time.monotonic() - started
            if grpc_serving(address, ""):
                return time.monotonic() - started
        except (OSError, grpc.RpcError):
            pass
        state = podman("inspect", "--format", "{{.State.Running}}", container).stdout.strip()
        if state != "true":
            raise CheckFailed(f"exited before answering its health check:\n{logs(container)}")
        if time.monotonic() - started > START_TIMEOUT_SECONDS:
            raise CheckFailed(f"no healthy answer in {START_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.25)


def logs(container: str) -> str:
    result = podman("logs", "--tail", "30", container, check=False)
    return result.stdout + result.stderr


def check_user_and_filesystem(container: str) -> None:
    status = podman("exec", container, "cat", "/proc/1/status").stdout
    ids = {
        line.split(":")[0]: line.split()[1:]
        for line in status.splitlines()
        if line.startswith(("Uid:", "Gid:"))
    }
    if ids != {"Uid": [str(UID)] * 4, "Gid": [str(UID)] * 4}:
        raise CheckFailed(f"the service runs as {ids}, not {UID}")
    for path in READ_ONLY_PATHS:
        probe = f"{path.rstrip('/')}/probe"
        attempt = podman("exec", "--user", "0", container, "touch", probe, check=False)
        if attempt.returncode == 0 or "Read-only file system" not in attempt.stderr:
            raise CheckFailed(f"{path} is writable: {attempt.stderr.strip()}")
    podman("exec", container, "touch", "/tmp/probe")  # as the image's user


def stop(container: str) -> float:
    started = time.monotonic()
    podman("stop", "--time", str(int(GRACE_SECONDS) + 20), container)
    elapsed = time.monotonic() - started
    code = podman("inspect", "--format", "{{.State.ExitCode}}", container).stdout.strip()
    if code != "0":
        raise CheckFailed(f"exited {code} after SIGTERM:\n{logs(container)}")
    if elapsed > GRACE_SECONDS:
        raise CheckFailed(f"took {elapsed:.1f} s to stop, over the {GRACE_SECONDS:.0f} s grace")
    return elapsed


def check(image: Image, tag: str) -> Result:
    result = Result(image.service)
    container = f"parley-image-check-{image.service}"
    try:
        check_config(image, tag, result)
        if image.size_limited and result.size_mb >= SIZE_LIMIT_MB:
            raise CheckFailed(f"{result.size_mb:.0f} MB, over the {SIZE_LIMIT_MB} MB limit")
        check_contents(image, tag)
        if image.migrations:
            check_migrations(image, tag)
        podman("rm", "--force", "--ignore", container)  # left by an interrupted run
        port, metrics_port = free_port(), free_port()
        env = [f"--env={key}={value}" for key, value in image.env.items()]
        podman(
            "run",
            "--detach",
            f"--name={container}",
            *AS_IN_KUBERNETES,
            f"--publish=127.0.0.1:{port}:{image.port}",
            f"--publish=127.0.0.1:{metrics_port}:{METRICS_PORT}",
            *env,
            f"{image.name}:{tag}",
        )
        address = f"127.0.0.1:{port}"
        result.healthy_seconds = wait_healthy(image, container, address)
        if image.grpc_service is not None and not grpc_serving(address, image.grpc_service):
            raise CheckFailed(f"{image.grpc_service} is not SERVING")
        if b"# TYPE " not in http_ok(f"http://127.0.0.1:{metrics_port}/metrics"):
            raise CheckFailed("/metrics has no metric")
        check_user_and_filesystem(container)
        if image.exercise is not None:
            image.exercise(address)
        result.stop_seconds = stop(container)
    except (CheckFailed, OSError, grpc.RpcError) as error:
        result.failure = str(error) or repr(error)
    finally:
        podman("rm", "--force", "--ignore", container, check=False)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("services", nargs="*", help="default: all five")
    parser.add_argument("--tag", default=os.environ.get("VERSION", "dev"))
    args = parser.parse_args()
    unknown = set(args.services) - {i.service for i in IMAGES}
    if unknown:
        parser.error(f"no such service: {', '.join(sorted(unknown))}")
    os.environ.setdefault("CONTAINERS_CONF", str(HERE / "containers.conf"))
    images = [i for i in IMAGES if not args.services or i.service in args.services]
    results = []
    for image in images:
        result = check(image, args.tag)
        verdict = f"FAILED: {result.failure}" if result.failure else "ok"
        print(f"{image.name}:{args.tag} {verdict}", flush=True)
        results.append(result)
    print("\n| image | size (MB) | healthy after (s) | stopped in (s) |\n|---|---:|---:|---:|")
    for r in results:
        print(
            f"| parley-{r.service} | {r.size_mb:.0f} | {r.healthy_seconds:.1f} "
            f"| {r.stop_seconds:.1f} |"
        )
    failed = [r.service for r in results if r.failure]
    print(f"\n{len(results) - len(failed)} of {len(results)} images keep their contract")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
