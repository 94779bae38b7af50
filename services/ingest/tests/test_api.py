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
        (doc("x", content_type="application/pdf"), "use one of text/plain, text/markdown"),
        (doc("x", content_type=""), "content_type"),
        (doc("   "), "has no text"),
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


async def test_a_retrieval_that_never_answers_fails_the_job_at_its_deadline(
    database_url: str, unresponsive_retrieval: str
) -> None:
    async with ingest_service(
        database_url, unresponsive_retrieval, index_timeout_seconds=1
    ) as ingest:
        created = await ingest.CreateDocument(doc(LEAVE))
        states = await asyncio.wait_for(job_updates(ingest, created.job.id), 10)
        assert states[-1].state == pb.JOB_STATE_FAILED
        assert states[-1].error == (
            "indexing failed: the retrieval service did not answer within 1 s"
        )


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
