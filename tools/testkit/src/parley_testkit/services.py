"""Services started in-process for tests, each on a loopback port over real gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from parley.ingest.v1 import ingest_pb2 as ingest_pb
from parley.ingest.v1 import ingest_pb2_grpc as ingest_grpc
from parley_embeddings import Embedder
from parley_ingest.main import build as build_ingest
from parley_ingest.settings import Settings as IngestSettings
from parley_retrieval.main import build as build_retrieval
from parley_retrieval.settings import Settings as RetrievalSettings
from parley_runtime.grpc_client import channel
from parley_testkit.grpc import grpc_server


@asynccontextmanager
async def retrieval_service(embedder: Embedder) -> AsyncIterator[str]:
    """retrieval on embedded Qdrant in memory with ``embedder``; yields its address."""
    wiring = await build_retrieval(RetrievalSettings(grpc_port=0, qdrant_path=":memory:"), embedder)
    try:
        async with grpc_server(wiring.registrations) as address:
            yield address
    finally:
        await wiring.close()


@asynccontextmanager
async def ingest_service(
    database_url: str, retrieval_address: str, **settings: Any
) -> AsyncIterator[ingest_grpc.IngestStub]:
    """ingest (its job worker included) on ``database_url``, indexing into
    ``retrieval_address``; yields a client."""
    wiring = await build_ingest(
        IngestSettings(
            grpc_port=0, database_url=database_url, retrieval_addr=retrieval_address, **settings
        )
    )
    try:
        async with (
            grpc_server(wiring.registrations) as address,
            channel(address, "parley.ingest.v1.Ingest") as chan,
        ):
            yield ingest_grpc.IngestStub(chan)
    finally:
        await wiring.close()


def document(
    content: str,
    kb: str = "handbook",
    content_type: str = "text/markdown",
    metadata: dict[str, str] | None = None,
    **fields: str,
) -> ingest_pb.CreateDocumentRequest:
    """A CreateDocument request for ``content`` in knowledge base ``kb``."""
    return ingest_pb.CreateDocumentRequest(
        document=ingest_pb.DocumentMetadata(
            knowledge_base_id=kb, content_type=content_type, metadata=metadata or {}, **fields
        ),
        content=content.encode(),
    )


async def job_updates(stub: ingest_grpc.IngestStub, job_id: str) -> list[ingest_pb.Job]:
    """Every update of a job until it ends."""
    return [job async for job in stub.WatchJob(ingest_pb.WatchJobRequest(job_id=job_id))]
