"""The Ingest servicer and its job worker over real gRPC, with no retrieval service behind
them (nothing at its address, or a fake that never answers): validation, listing, unknown
ids, an indexing deadline, and jobs handed back on a stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import pytest

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.adapters.store import IngestStore
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.grpc_server import Registration
from parley_testkit import acting_as, grpc_server
from parley_testkit.files import docx, pdf
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates

LEAVE = "# Leave\n\nEmployees have 25 days of paid leave a year.\n\n# Travel\n\nBook trains."
NOWHERE = "127.0.0.1:1"  # no retrieval service listens here: its calls fail at once


@pytest.fixture(autouse=True)
def caller() -> Iterator[None]:
    with acting_as("acme", "ann"):
        yield


@pytest.fixture
async def ingest(database_url: str) -> AsyncIterator[pb_grpc.IngestStub]:
    async with ingest_service(database_url, NOWHERE, max_document_bytes=4096) as stub:
        yield stub


@pytest.fixture
async def roomy(database_url: str) -> AsyncIterator[pb_grpc.IngestStub]:
    """ingest with the default size limit, for real PDF and Word files."""
    async with ingest_service(database_url, NOWHERE) as stub:
        yield stub


async def test_documents_are_listed_newest_first_a_page_at_a_time(
    ingest: pb_grpc.IngestStub,
) -> None:
    ids = [
        (await ingest.CreateDocument(doc(f"Document number {i}."))).document.id for i in range(5)
    ]
    await ingest.CreateDocument(doc("Elsewhere.", kb="other"))
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await ingest.ListDocuments(
            pb.ListDocumentsRequest(knowledge_base_id="handbook", page_size=2, page_token=token)
        )
        pages += 1
        seen += [d.id for d in page.documents]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids[::-1]
    assert pages == 3
    for bad in (
        pb.ListDocumentsRequest(knowledge_base_id="handbook", page_size=101),
        pb.ListDocumentsRequest(knowledge_base_id="handbook", page_token="not-a-token"),
        pb.ListDocumentsRequest(knowledge_base_id="handbook", page_token="WyJ4IiwieSJd"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await ingest.ListDocuments(bad)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_" in (raised.value.details() or "")


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (doc("x", content_type="application/pdf"), "declared, but the bytes are text"),
        (doc("x", content_type="t" * 101), "content_type: at most 100 characters"),
        (
            pb.CreateDocumentRequest(
                document=pb.DocumentMetadata(knowledge_base_id="kb"), content=b"\x89PNG\r\n\x1a\n"
            ),
            "the file is a PNG image",
        ),
        (doc("   "), "has no text"),
        (doc("<html><body><script>x()</script></body></html>", content_type=""), "has no text"),
        (doc("x", kb=""), "knowledge_base_id: required"),
        (
            pb.CreateDocumentRequest(
                document=pb.DocumentMetadata(knowledge_base_id="kb", content_type="text/plain"),
                content=b"caf\xe9 au lait",
            ),
            "content: not UTF-8 text",
        ),
    ],
)
async def test_bad_documents_are_invalid_argument(
    ingest: pb_grpc.IngestStub, request_: pb.CreateDocumentRequest, fragment: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest.CreateDocument(request_)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in (raised.value.details() or "")


async def test_a_single_message_over_the_limit_is_refused(ingest: pb_grpc.IngestStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest.CreateDocument(doc("x" * 4097, content_type="text/plain"))
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "limit of 4096 bytes" in (raised.value.details() or "")


async def test_ids_are_required_and_unknown_ids_are_not_found(ingest: pb_grpc.IngestStub) -> None:
    calls: list[tuple[Any, Callable[..., Any], str]] = [
        (ingest.GetDocument, pb.GetDocumentRequest, "document_id"),
        (ingest.DeleteDocument, pb.DeleteDocumentRequest, "document_id"),
        (ingest.GetJob, pb.GetJobRequest, "job_id"),
    ]
    for call, request, field in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request())
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"{field}: required" in (raised.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request(**{field: "doc_nothing"}))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await job_updates(ingest, "job_nothing")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("content", "code", "fragment"),
    [
        (pdf(["Secret plans."], password="s3cret"), "pdf_encrypted", "protected by a password"),
        (pdf(["", ""]), "pdf_no_text", "run OCR on it"),
        (docx([]), "empty_document", "has no text"),
    ],
    ids=["encrypted-pdf", "scanned-pdf", "empty-docx"],
)
async def test_a_file_without_readable_text_fails_its_document_with_a_code(
    roomy: pb_grpc.IngestStub, content: bytes, code: str, fragment: str
) -> None:
    ingest = roomy
    created = await ingest.CreateDocument(
        pb.CreateDocumentRequest(
            document=pb.DocumentMetadata(knowledge_base_id="kb", filename="file"), content=content
        )
    )
    # At once, and for good: a retry would fail the same way.
    [*_, job] = await asyncio.wait_for(job_updates(ingest, created.job.id), 10)
    assert (job.state, job.attempts, job.error_code) == (pb.JOB_STATE_FAILED, 1, code)
    assert job.error.startswith("parsing failed: ")
    assert fragment in job.error
    document = await ingest.GetDocument(pb.GetDocumentRequest(document_id=created.document.id))
    assert (document.status, document.error_code, document.error) == (
        pb.DOCUMENT_STATUS_FAILED,
        code,
        job.error,
    )


async def test_a_declared_type_the_bytes_contradict_is_refused_at_upload(
    roomy: pb_grpc.IngestStub,
) -> None:
    ingest = roomy

    async def parts() -> AsyncIterator[pb.UploadDocumentRequest]:
        yield pb.UploadDocumentRequest(
            document=pb.DocumentMetadata(knowledge_base_id="kb", content_type="text/plain")
        )
        yield pb.UploadDocumentRequest(content=pdf(["Revenue grew."]))

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ingest.UploadDocument(parts())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'text/plain' was declared, but the bytes are a PDF" in (raised.value.details() or "")
    listed = await ingest.ListDocuments(pb.ListDocumentsRequest(knowledge_base_id="kb"))
    assert list(listed.documents) == []


class _Unresponsive(ret_grpc.RetrievalServicer):
    """A retrieval service that takes calls and never answers them."""

    async def IndexChunks(
        self, request: ret.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> ret.IndexChunksResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def unresponsive_retrieval() -> AsyncIterator[str]:
    registration = Registration(
        "parley.retrieval.v1.Retrieval",
        lambda server: ret_grpc.add_RetrievalServicer_to_server(
            _Unresponsive(),  # type: ignore[abstract]  # only IndexChunks is needed
            server,
        ),
    )
    async with grpc_server([registration]) as address:
        yield address


async def test_a_retrieval_that_never_answers_fails_the_job_after_its_attempts(
    database_url: str, unresponsive_retrieval: str
) -> None:
    async with ingest_service(
        database_url,
        unresponsive_retrieval,
        index_timeout_seconds=1,
        job_max_attempts=2,
        job_retry_seconds=0.5,
    ) as ingest:
        created = await ingest.CreateDocument(doc(LEAVE))
        states = await asyncio.wait_for(job_updates(ingest, created.job.id), 15)
    # The first deadline queues the job again, due after the backoff, its error saying why.
    waiting = next(s for s in states if s.state == pb.JOB_STATE_QUEUED and s.attempts == 1)
    assert waiting.error.startswith(
        "indexing failed: the retrieval service did not answer within 1 s; attempt 1 of 2, "
        "retrying in"
    )
    assert waiting.error_code == "retrieval_timeout"
    assert waiting.HasField("retry_time")
    assert waiting.retry_time.ToDatetime() > waiting.update_time.ToDatetime()
    # The second is the last: the job fails, naming its attempts and the reason.
    last = states[-1]
    assert (last.state, last.attempts, last.error_code) == (
        pb.JOB_STATE_FAILED,
        2,
        "retrieval_timeout",
    )
    assert (
        last.error
        == "indexing failed after 2 attempts: the retrieval service did not answer within 1 s"
    )
    assert not last.HasField("retry_time")


async def test_a_job_running_when_the_service_stops_is_handed_back_to_the_queue(
    database_url: str, unresponsive_retrieval: str
) -> None:
    async with ingest_service(database_url, unresponsive_retrieval) as ingest:
        created = await ingest.CreateDocument(doc(LEAVE))
        watch = ingest.WatchJob(pb.WatchJobRequest(job_id=created.job.id))
        async for job in watch:
            if job.stage == "indexing":
                break
        watch.cancel()  # the watcher goes away; the service must still stop promptly
    engine = db.create_engine(database_url)
    try:
        left = await IngestStore(engine).job(Principal("acme", "ann"), created.job.id)
    finally:
        await engine.dispose()
    # Handed back, not left RUNNING: the next process takes it up at once (a queued job
    # being done after a restart is tested with the real retrieval, in tests/integration).
    assert (left.state, left.lease_until) == ("queued", None)
