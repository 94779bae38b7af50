"""Ingest throughput: text documents of 1-2 KB a minute, from upload to searchable.

    uv run python bench/ingest_throughput.py                        # 300 documents, 3 runs
    uv run python bench/ingest_throughput.py --documents 60 --runs 1   # a check
    uv run python bench/ingest_throughput.py --worker-concurrency 2 8  # settings side by side
    uv run python bench/ingest_throughput.py --path ingest          # ingest's gRPC, no gateway
    uv run python bench/ingest_throughput.py --instant-retrieval    # ingest's own ceiling

The five services run as processes (``parley_devstack.Platform``: embedded defaults, SQLite,
embedded Qdrant, the local embedding model; ``LOG_LEVEL=WARNING``; the gateway's limits off,
as the load is one user's). A run sends ``--documents`` distinct text documents of 1-2 KB
(generated from a fixed seed: sentences over a vocabulary, so chunking and embedding see
ordinary prose) from ``--uploaders`` concurrent clients into a knowledge base of its own,
through the public API (``POST /v1/knowledge-bases/{kb}/documents`` with a bearer token) or,
with ``--path ingest``, through ingest's ``CreateDocument``. It then lists the knowledge base
every half second until every document is ready (or failed). The figure is documents a minute
from the first upload to the last document ready; beside it the upload phase alone, each
service's CPU seconds over the run, and failures.

``--instant-retrieval`` points ingest at a retrieval stand-in in the bench's process that
answers IndexChunks at once without embedding anything: what is left is the gateway's and
ingest's own work, the ceiling they put on ingest whatever the embedder's speed.

Each setting compared (``--worker-concurrency``, ingest's ``WORKER_CONCURRENCY``) gets a
platform of its own, all started before the first run; runs interleave the settings (A, B,
A, B, ...) so a change in the host's load reaches each. The host's load average is printed
with every run. Every loop is bounded: ``--timeout`` seconds a run at most.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import grpc
from harness import client_session, cpu_seconds, host, load_average

from parley.ingest.v1 import ingest_pb2 as ing
from parley.ingest.v1 import ingest_pb2_grpc as ing_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_devstack.platform import Platform
from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings as GatewaySettings
from parley_runtime.context import Principal
from parley_runtime.grpc_client import channel

SERVICES = ("gateway", "ingest", "retrieval")


class InstantRetrieval(ret_grpc.RetrievalServicer):
    """Takes chunks and drops them: no embedding, no store."""

    async def IndexChunks(
        self, request: ret.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> ret.IndexChunksResponse:
        return ret.IndexChunksResponse(indexed=len(request.chunks))

    async def DeleteDocument(
        self, request: ret.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ret.DeleteDocumentResponse:
        return ret.DeleteDocumentResponse()


WORDS = (
    "leave policy employee manager approval travel train flight budget invoice contract "
    "customer supplier warehouse delivery schedule report quarter revenue margin forecast "
    "office remote laptop security password access badge visitor meeting room calendar "
    "holiday sickness parental training course certificate review salary bonus pension "
    "expense receipt mileage hotel booking insurance claim incident safety fire exit "
    "printer network support ticket priority escalation release deployment backup restore "
    "audit compliance privacy retention archive document signature template handbook team "
    "project milestone deadline risk owner status update request form portal onboarding"
).split()


def documents(count: int, seed: int) -> list[str]:
    """``count`` distinct texts of 1-2 KB: paragraphs of sentences over :data:`WORDS`."""
    texts = []
    for index in range(count):
        rng = random.Random(seed * 1_000_003 + index)
        target = rng.randint(1024, 2048)
        paragraphs: list[str] = []
        size = 0
        while size < target:
            sentences = []
            for _ in range(rng.randint(2, 5)):
                words = rng.choices(WORDS, k=rng.randint(8, 20))
                sentences.append(" ".join(words).capitalize() + ".")
            paragraph = " ".join(sentences)
            paragraphs.append(paragraph)
            size += len(paragraph) + 2
        texts.append(f"Document {seed}-{index}\n\n" + "\n\n".join(paragraphs)[: target - 20])
    return texts


@dataclass
class Run:
    setting: int
    documents: int
    upload_seconds: float = 0.0
    total_seconds: float = 0.0
    ready: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    load: str = ""

    @property
    def per_minute(self) -> float:
        return self.ready / self.total_seconds * 60 if self.total_seconds else 0.0


# Sends one document; lists the knowledge base's statuses.
Upload = Callable[[str, str], Awaitable[None]]
Statuses = Callable[[str], Awaitable[Counter[str]]]


def over_gateway(session: aiohttp.ClientSession, base: str, token: str) -> tuple[Upload, Statuses]:
    headers = {"Authorization": f"Bearer {token}"}

    async def upload(kb: str, text: str) -> None:
        body = {"content": text, "content_type": "text/plain", "title": text[:30]}
        async with session.post(
            f"{base}/v1/knowledge-bases/{kb}/documents", json=body, headers=headers
        ) as response:
            if response.status != 201:
                raise RuntimeError(f"HTTP {response.status}: {(await response.text())[:200]}")

    async def statuses(kb: str) -> Counter[str]:
        found: Counter[str] = Counter()
        token = ""
        for _ in range(1000):  # pages
            query = f"page_size=100{'&page_token=' + token if token else ''}"
            async with session.get(
                f"{base}/v1/knowledge-bases/{kb}/documents?{query}", headers=headers
            ) as response:
                page = json.loads(await response.text())
            for document in page["documents"]:
                found[document["status"]] += 1
                if document["status"] == "failed":
                    found[f"error: {document.get('error')}"] += 1
            token = page.get("next_page_token") or ""
            if not token:
                break
        return found

    return upload, statuses


def over_ingest(stub: ing_grpc.IngestStub) -> tuple[Upload, Statuses]:
    who = Principal("bench", "b").to_metadata()
    names = {v: k.removeprefix("DOCUMENT_STATUS_").lower() for k, v in ing.DocumentStatus.items()}

    async def upload(kb: str, text: str) -> None:
        meta = ing.DocumentMetadata(
            knowledge_base_id=kb, title=text[:30], content_type="text/plain"
        )
        request = ing.CreateDocumentRequest(document=meta, content=text.encode())
        await stub.CreateDocument(request, metadata=who, timeout=60)

    async def statuses(kb: str) -> Counter[str]:
        found: Counter[str] = Counter()
        token = ""
        for _ in range(1000):
            page = await stub.ListDocuments(
                ing.ListDocumentsRequest(knowledge_base_id=kb, page_size=100, page_token=token),
                metadata=who,
                timeout=30,
            )
            for document in page.documents:
                found[names[document.status]] += 1
                if document.status == ing.DOCUMENT_STATUS_FAILED:
                    found[f"error: {document.error}"] += 1
            token = page.next_page_token
            if not token:
                break
        return found

    return upload, statuses


async def one_run(
    setting: int,
    platform: Platform,
    upload: Upload,
    statuses: Statuses,
    texts: list[str],
    uploaders: int,
    timeout: float,
) -> Run:
    run = Run(setting, len(texts), load=load_average())
    kb = f"bench-{int(time.time() * 1000)}"
    pids = {name: platform.processes[name].pid for name in SERVICES}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    queue = list(texts)
    started = time.perf_counter()

    async def uploader() -> None:
        while queue:
            text = queue.pop()
            try:
                await upload(kb, text)
            except Exception as error:
                run.failed[f"upload: {str(error)[:120]}"] += 1

    await asyncio.wait_for(asyncio.gather(*(uploader() for _ in range(uploaders))), timeout)
    run.upload_seconds = time.perf_counter() - started
    expected = len(texts) - sum(run.failed.values())
    deadline = started + timeout
    while time.perf_counter() < deadline:
        found = await statuses(kb)
        if found["ready"] + found["failed"] >= expected:
            break
        await asyncio.sleep(0.5)
    run.total_seconds = time.perf_counter() - started
    run.ready = found["ready"]
    run.failed.update({k: v for k, v in found.items() if k.startswith("error")})
    run.cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in pids.items()}
    return run


def report(runs: list[Run]) -> str:
    lines = [
        "| WORKER_CONCURRENCY | run | load (1, 5, 15 min) | documents | ready | upload s | "
        "total s | documents/min | CPU s gateway, ingest, retrieval |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    numbers: Counter[int] = Counter()
    for run in runs:
        numbers[run.setting] += 1
        cpu = ", ".join(f"{run.cpu[name]:.1f}" for name in SERVICES)
        lines.append(
            f"| {run.setting} | {numbers[run.setting]} | {run.load} | {run.documents} | "
            f"{run.ready} | "
            f"{run.upload_seconds:.1f} | {run.total_seconds:.1f} | {run.per_minute:.0f} | "
            f"{cpu} |"
        )
    lines.append("")
    for setting in sorted({r.setting for r in runs}):
        mine = [r.per_minute for r in runs if r.setting == setting]
        lines.append(
            f"WORKER_CONCURRENCY={setting}: median {statistics.median(mine):.0f} documents/min "
            f"over {len(mine)} runs ({', '.join(f'{m:.0f}' for m in mine)})"
        )
    failures = Counter[str]()
    for run in runs:
        failures.update(run.failed)
    if failures:
        lines.append(f"failures: {dict(failures)}")
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--uploaders", type=int, default=8)
    parser.add_argument("--worker-concurrency", type=int, nargs="+", default=[2])
    parser.add_argument("--path", choices=("gateway", "ingest"), default="gateway")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--instant-retrieval", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="parley-ingest-bench-"))
    print(
        f"host: {host()}; load before: {load_average()}; data in {workdir}",
        file=sys.stderr,
        flush=True,
    )
    runs: list[Run] = []
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(client_session(limit=args.uploaders + 10))
        settings = GatewaySettings()
        token = issue_token(settings.auth_secret, settings.auth_issuer, tenant="bench", user="b")
        ingest_env: dict[str, str] = {}
        if args.instant_retrieval:
            server = grpc.aio.server()
            ret_grpc.add_RetrievalServicer_to_server(InstantRetrieval(), server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            stack.push_async_callback(server.stop, None)
            ingest_env["RETRIEVAL_ADDR"] = f"127.0.0.1:{port}"
        targets: dict[int, tuple[Platform, Upload, Statuses]] = {}
        for setting in args.worker_concurrency:
            platform = Platform(
                data_dir=workdir / f"workers-{setting}",
                env={"LOG_LEVEL": "WARNING", "LIMITS_DEFAULT_TIER": "unlimited"},
                per_service_env={"ingest": {**ingest_env, "WORKER_CONCURRENCY": str(setting)}},
            )
            ready = await platform.start(one_at_a_time=True)
            stack.push_async_callback(platform.stop)
            print(f"WORKER_CONCURRENCY={setting} ready: {ready}", file=sys.stderr, flush=True)
            if args.path == "gateway":
                upload, statuses = over_gateway(session, platform.gateway_url, token)
            else:
                address = platform.specs["ingest"].address
                chan = await stack.enter_async_context(channel(address, "parley.ingest.v1.Ingest"))
                upload, statuses = over_ingest(ing_grpc.IngestStub(chan))
            targets[setting] = (platform, upload, statuses)
        for number in range(args.runs):
            for setting, (platform, upload, statuses) in targets.items():
                texts = documents(args.documents, seed=number * 100 + setting)
                run = await one_run(
                    setting, platform, upload, statuses, texts, args.uploaders, args.timeout
                )
                runs.append(run)
                print(
                    f"WORKER_CONCURRENCY={setting} run {number + 1}: {run.per_minute:.0f} "
                    f"documents/min ({run.ready} ready in {run.total_seconds:.1f} s, uploads "
                    f"{run.upload_seconds:.1f} s), load {run.load}, failures {dict(run.failed)}",
                    file=sys.stderr,
                    flush=True,
                )
    print(f"load after: {load_average()}", file=sys.stderr)
    print(report(runs))


if __name__ == "__main__":
    asyncio.run(main())
