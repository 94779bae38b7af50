"""ingest with the real retrieval service, both in-process over real gRPC: documents end up
searchable, versions replace their chunks, deletion removes them, jobs survive restarts and a
retrieval outage."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import update

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.adapters.store import IngestStore, NewDocument
from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.tables import JobRow
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.grpc_client import channel
from parley_runtime.timestamps import utcnow
from parley_testkit import acting_as
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates

LEAVE = "# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains."


@dataclass
class Running:
    ingest: pb_grpc.IngestStub
    retrieval: ret_grpc.RetrievalStub


@pytest.fixture
async def running(database_url: str, retrieval_address: str) -> AsyncIterator[Running]:
    async with (
        channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan,
        ingest_service(database_url, retrieval_address, max_document_bytes=4096) as ingest,
    ):
        yield Running(ingest, ret_grpc.RetrievalStub(chan))


async def search(running: Running, query: str, kb: str = "handbook") -> list[ret.ScoredChunk]:
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id=kb, query=query, top_k=20)
    )
    return list(found.chunks)


async def stored_but_not_processed(url: str, content: str = LEAVE) -> str:
    """What a process that died right after storing an upload leaves: a QUEUED job."""
    await db.upgrade(MIGRATIONS, url, VERSION_TABLE)
    engine = db.create_engine(url)
    try:
        created = await IngestStore(engine).create(
            Principal("acme", "ann"),
            NewDocument("handbook", "Policy", "", "text/markdown", {}, ""),
            content.encode(),
            hashlib.sha256(content.encode()).hexdigest(),
        )
    finally:
        await engine.dispose()
    assert created.job.state == "queued"
    return created.job.id


async def test_a_document_is_chunked_indexed_and_found(running: Running) -> None:
    created = await running.ingest.CreateDocument(
        doc(LEAVE, title="Policy", metadata={"team": "hr"})
    )
    assert not created.deduplicated
    states = await job_updates(running.ingest, created.job.id)
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
    assert found.chunks[0].chunk_id == f"{created.document.id}:v1:0"


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
    await job_updates(running.ingest, v1.job.id)
    v2 = await running.ingest.CreateDocument(
        doc("# Leave\n\nLeave is now 30 days.", external_id="policy")
    )
    assert v2.document.id == v1.document.id
    assert v2.document.version == 2
    assert (await job_updates(running.ingest, v2.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    found = await running.retrieval.Search(
        ret.SearchRequest(knowledge_base_id="handbook", query="leave days", top_k=10)
    )
    texts = " ".join(c.text for c in found.chunks)
    assert "30 days" in texts
    assert "25 days" not in texts
    assert {c.chunk_id for c in found.chunks} == {f"{v1.document.id}:v2:0"}


async def test_versions_uploaded_back_to_back_end_with_the_last(running: Running) -> None:
    # The second upload arrives while the first version's job may still be running.
    v1 = await running.ingest.CreateDocument(doc(LEAVE, external_id="policy"))
    v2 = await running.ingest.CreateDocument(
        doc("# Leave\n\nLeave is now 30 days.", external_id="policy")
    )
    first, second = await asyncio.gather(
        job_updates(running.ingest, v1.job.id), job_updates(running.ingest, v2.job.id)
    )
    assert second[-1].state == pb.JOB_STATE_SUCCEEDED
    assert first[-1].state == pb.JOB_STATE_SUCCEEDED or "superseded" in first[-1].error
    document = await running.ingest.GetDocument(pb.GetDocumentRequest(document_id=v1.document.id))
    assert (document.version, document.status, document.job_id) == (
        2,
        pb.DOCUMENT_STATUS_READY,
        v2.job.id,
    )
    texts = " ".join(c.text for c in await search(running, "leave days"))
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
    assert (await job_updates(running.ingest, created.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.ingest.UploadDocument(parts(b"x" * 5000))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 4096 bytes" in (raised.value.details() or "")


async def test_a_finished_job_is_watched_once(running: Running) -> None:
    created = await running.ingest.CreateDocument(doc(LEAVE))
    await job_updates(running.ingest, created.job.id)
    [job] = await job_updates(running.ingest, created.job.id)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    assert job.stage == "done"
    assert job.progress == pytest.approx(1.0)


async def test_delete_removes_the_chunks(running: Running) -> None:
    created = await running.ingest.CreateDocument(doc(LEAVE))
    await job_updates(running.ingest, created.job.id)
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
        # The same bytes in the same knowledge base id are a new document for another tenant.
        theirs = await running.ingest.CreateDocument(doc(LEAVE))
        assert not theirs.deduplicated
        assert theirs.document.id != created.document.id
        assert (await job_updates(running.ingest, theirs.job.id))[-1].state == (
            pb.JOB_STATE_SUCCEEDED
        )
        assert {c.document_id for c in await search(running, "leave")} == {theirs.document.id}
    assert (await job_updates(running.ingest, created.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    assert {c.document_id for c in await search(running, "leave")} == {created.document.id}


async def test_retrieval_down_fails_the_job_and_a_new_upload_retries_it(
    database_url: str, retrieval_address: str
) -> None:
    async with ingest_service(
        database_url,
        "127.0.0.1:1",
        index_timeout_seconds=2,
        job_max_attempts=2,
        job_retry_seconds=0.2,
    ) as ingest:
        created = await ingest.CreateDocument(doc(LEAVE))
        states = await asyncio.wait_for(job_updates(ingest, created.job.id), 10)
        assert states[-1].state == pb.JOB_STATE_FAILED
        assert states[-1].error == (
            "indexing failed after 2 attempts: the retrieval service is unavailable"
        )
        assert states[-1].error_code == "retrieval_unavailable"
        document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
        assert document.status == pb.DOCUMENT_STATUS_FAILED
        assert document.error == states[-1].error
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await ingest.DeleteDocument(pb.DeleteDocumentRequest(document_id=created.document.id))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "retrieval" in (raised.value.details() or "")
        # Nothing was deleted: the delete can be retried.
        await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))

    # Once retrieval is back, sending the same bytes again retries the failed document.
    async with ingest_service(database_url, retrieval_address) as ingest:
        again = await ingest.CreateDocument(doc(LEAVE))
        assert not again.deduplicated
        assert again.document.id == created.document.id
        assert again.job.id != created.job.id
        states = await asyncio.wait_for(job_updates(ingest, again.job.id), 15)
        assert states[-1].state == pb.JOB_STATE_SUCCEEDED
        document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
        assert (document.status, document.error) == (pb.DOCUMENT_STATUS_READY, "")


async def test_a_job_left_queued_is_done_after_a_restart(
    database_url: str, retrieval_address: str
) -> None:
    job_id = await stored_but_not_processed(database_url)
    async with ingest_service(database_url, retrieval_address) as ingest:
        states = await asyncio.wait_for(job_updates(ingest, job_id), 15)
    assert states[-1].state == pb.JOB_STATE_SUCCEEDED
    assert states[-1].chunks_indexed == 2


async def test_a_job_whose_worker_died_is_taken_over(
    database_url: str, retrieval_address: str
) -> None:
    job_id = await stored_but_not_processed(database_url)
    # A worker claimed it, then its process died: the job is RUNNING and its lease lapses.
    engine = db.create_engine(database_url)
    try:
        store = IngestStore(engine)
        assert await store.claim(job_id) is not None
        async with store.sessions.begin() as session:
            await session.execute(
                update(JobRow).where(JobRow.id == job_id).values(lease_until=utcnow())
            )
    finally:
        await engine.dispose()
    async with ingest_service(database_url, retrieval_address) as ingest:
        states = await asyncio.wait_for(job_updates(ingest, job_id), 15)
    assert states[-1].state == pb.JOB_STATE_SUCCEEDED
