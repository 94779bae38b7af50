"""Documents and jobs over real gRPC, with the real retrieval service in-process."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_embeddings import LocalEmbedder
from parley_ingest.adapters.store import IngestStore, NewDocument
from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.main import build as build_ingest
from parley_ingest.settings import Settings
from parley_retrieval.main import build as build_retrieval
from parley_retrieval.settings import Settings as RetrievalSettings
from parley_runtime import db
from parley_runtime.grpc_client import channel
from parley_runtime.testing import acting_as, grpc_server

LEAVE = "# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains."


@dataclass
class Running:
    ingest: pb_grpc.IngestStub
    retrieval: ret_grpc.RetrievalStub


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


async def _ingest(
    database_url: str, retrieval_address: str, **kw: object
) -> AsyncIterator[pb_grpc.IngestStub]:
    wiring = await build_ingest(
        Settings(grpc_port=0, database_url=database_url, retrieval_addr=retrieval_address, **kw)  # type: ignore[arg-type]
    )
    async with (
        grpc_server(wiring.registrations) as address,
        channel(address, "parley.ingest.v1.Ingest") as chan,
    ):
        yield pb_grpc.IngestStub(chan)
    await wiring.close()


@pytest.fixture
async def running(database_url: str, local_embedder: LocalEmbedder) -> AsyncIterator[Running]:
    retrieval = await build_retrieval(
        RetrievalSettings(grpc_port=0, qdrant_path=":memory:"), local_embedder
    )
    async with (
        grpc_server(retrieval.registrations) as retrieval_address,
        channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan,
    ):
        async for ingest in _ingest(database_url, retrieval_address, max_document_bytes=4096):
            yield Running(ingest, ret_grpc.RetrievalStub(chan))
    await retrieval.close()


def doc(
    content: str,
    kb: str = "handbook",
    content_type: str = "text/markdown",
    metadata: dict[str, str] | None = None,
    **fields: str,
) -> pb.CreateDocumentRequest:
    return pb.CreateDocumentRequest(
        document=pb.DocumentMetadata(
            knowledge_base_id=kb, content_type=content_type, metadata=metadata or {}, **fields
        ),
        content=content.encode(),
    )


async def finished(stub: pb_grpc.IngestStub, job_id: str) -> list[pb.Job]:
    return [job async for job in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]


async def test_migrations_go_up_and_down(database_url: str) -> None:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.downgrade(MIGRATIONS, database_url, VERSION_TABLE)
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)


async def test_a_document_is_chunked_indexed_and_found(running: Running) -> None:
    created = await running.ingest.CreateDocument(
        doc(LEAVE, title="Policy", metadata={"team": "hr"})
    )
    assert not created.deduplicated
    states = await finished(running.ingest, created.job.id)
    assert states[-1].state == pb.JOB_STATE_SUCCEEDED
    assert states[-1].chunks_indexed == states[-1].chunks_total == 2
    document = await running.ingest.GetDocument(
        pb.GetDocumentRequest(document_id=created.document.id)
    )
    assert document.status == pb.DOCUMENT_STATUS_READY
    assert document.chunk_count == 2
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id="handbook", query="how many vacation days")
    )
    assert found.chunks[0].document_id == created.document.id
    assert "25 days" in found.chunks[0].text
    assert found.chunks[0].title == "Policy"
    assert found.chunks[0].metadata["team"] == "hr"
    assert found.chunks[0].metadata["section"] == "Leave"


async def test_the_same_bytes_are_stored_once(running: Running) -> None:
    first = await running.ingest.CreateDocument(doc(LEAVE))
    again = await running.ingest.CreateDocument(doc(LEAVE, title="other title"))
    assert again.deduplicated
    assert again.document.id == first.document.id
    listed = await running.ingest.ListDocuments(
        pb.ListDocumentsRequest(knowledge_base_id="handbook")
    )
    assert len(listed.documents) == 1


async def test_a_new_version_replaces_the_chunks(running: Running) -> None:
    v1 = await running.ingest.CreateDocument(doc(LEAVE, external_id="policy"))
    await finished(running.ingest, v1.job.id)
    v2 = await running.ingest.CreateDocument(
        doc("# Leave\n\nLeave is now 30 days.", external_id="policy")
    )
    assert v2.document.id == v1.document.id
    assert v2.document.version == 2
    assert (await finished(running.ingest, v2.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id="handbook", query="leave days", top_k=10)
    )
    texts = " ".join(c.text for c in found.chunks)
    assert "30 days" in texts
    assert "25 days" not in texts


async def test_a_streamed_upload_and_the_size_limit(running: Running) -> None:
    async def parts(body: bytes) -> AsyncIterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            document=pb.DocumentMetadata(knowledge_base_id="kb2", content_type="text/plain")
        )
        for start in range(0, len(body), 100):
            yield pb.UploadDocumentRequest(content=body[start : start + 100])

    created = await running.ingest.UploadDocument(parts(b"Streamed text about trains. " * 20))
    assert created.document.size_bytes == 560
    assert (await finished(running.ingest, created.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.ingest.UploadDocument(parts(b"x" * 5000))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 4096 bytes" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (doc("x", content_type="application/pdf"), "is not supported"),
        (doc("   "), "has no text"),
        (doc("x", kb=""), "knowledge_base_id: required"),
    ],
)
async def test_bad_documents_are_invalid_argument(
    running: Running, request_: pb.CreateDocumentRequest, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.ingest.CreateDocument(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")


async def test_delete_removes_the_chunks(running: Running) -> None:
    created = await running.ingest.CreateDocument(doc(LEAVE))
    await finished(running.ingest, created.job.id)
    await running.ingest.DeleteDocument(pb.DeleteDocumentRequest(document_id=created.document.id))
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id="handbook", query="leave")
    )
    assert list(found.chunks) == []
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_another_tenant_sees_nothing(running: Running) -> None:
    created = await running.ingest.CreateDocument(doc(LEAVE))
    with acting_as("globex", "eve"):
        for call in (
            running.ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id)),
            running.ingest.GetJob(pb.GetJobRequest(job_id=created.job.id)),
            running.ingest.DeleteDocument(
                pb.DeleteDocumentRequest(document_id=created.document.id)
            ),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        listed = await running.ingest.ListDocuments(
            pb.ListDocumentsRequest(knowledge_base_id="handbook")
        )
        assert list(listed.documents) == []


async def test_retrieval_down_fails_the_job_with_a_reason(database_url: str) -> None:
    async for ingest in _ingest(database_url, "127.0.0.1:1", index_timeout_seconds=2):
        created = await ingest.CreateDocument(doc(LEAVE))
        states = await asyncio.wait_for(finished(ingest, created.job.id), 10)
        assert states[-1].state == pb.JOB_STATE_FAILED
        assert "indexing failed" in states[-1].error
        document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
        assert document.status == pb.DOCUMENT_STATUS_FAILED


async def test_a_job_left_queued_is_done_after_a_restart(
    tmp_path: Path, local_embedder: LocalEmbedder
) -> None:
    url = f"sqlite:///{tmp_path}/ingest.db"
    # A process stored the document and its job, then died before working on it.
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    engine = db.create_engine(url)
    with acting_as("acme", "ann") as who:
        created = await IngestStore(engine).create(
            who,
            NewDocument("handbook", "Policy", "", "text/markdown", {}, ""),
            LEAVE.encode(),
            hashlib.sha256(LEAVE.encode()).hexdigest(),
        )
    await engine.dispose()
    assert created.job.state == "queued"
    retrieval = await build_retrieval(
        RetrievalSettings(grpc_port=0, qdrant_path=":memory:"), local_embedder
    )
    async with grpc_server(retrieval.registrations) as retrieval_address:
        async for ingest in _ingest(url, retrieval_address):
            states = await asyncio.wait_for(finished(ingest, created.job.id), 15)
    await retrieval.close()
    assert states[-1].state == pb.JOB_STATE_SUCCEEDED
    assert states[-1].chunks_indexed == 2
