"""A document version sent to retrieval in several calls replaces the previous one for readers
at once: ingest (its batches made 4 chunks long) in front of the real retrieval service,
through a gate that holds each IndexChunks call until the test lets it through, so searches
run between the calls of one job. A job that fails after staging discards what it staged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest import jobs
from parley_runtime.grpc_client import channel
from parley_runtime.grpc_server import Registration
from parley_testkit import grpc_server
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates


def policy(edition: str, rules: int) -> str:
    """A Markdown document of ``rules`` sections: one chunk each."""
    return "\n\n".join(
        f"# Rule {i}\n\nRule {i} of the {edition} leave policy: group {i} gets {20 + i} days."
        for i in range(rules)
    )


class Gate(ret_grpc.RetrievalServicer):
    """Retrieval's IndexChunks and DeleteDocument, forwarded to the real service. Each
    IndexChunks call waits until the test admits it; with ``refuse_publication`` the
    publishing call (``replace``) fails for good. Discards (a DeleteDocument naming a
    ``staged_version``) are reported with what they removed."""

    def __init__(self, real: ret_grpc.RetrievalStub) -> None:
        self.real = real
        self.arrived: asyncio.Queue[ret.IndexChunksRequest] = asyncio.Queue()
        self.admitted = asyncio.Semaphore(0)
        self.refuse_publication = False
        self.discarded: asyncio.Queue[tuple[int, int]] = asyncio.Queue()

    async def IndexChunks(
        self, request: ret.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> ret.IndexChunksResponse:
        self.arrived.put_nowait(request)
        await self.admitted.acquire()
        if request.replace and self.refuse_publication:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the test refuses it")
        response: ret.IndexChunksResponse = await self.real.IndexChunks(request)
        return response

    async def DeleteDocument(
        self, request: ret.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ret.DeleteDocumentResponse:
        response: ret.DeleteDocumentResponse = await self.real.DeleteDocument(request)
        if request.staged_version:
            self.discarded.put_nowait((request.staged_version, response.deleted_chunks))
        return response

    async def next_call(self) -> ret.IndexChunksRequest:
        """The job's next IndexChunks call (so its previous one has returned), still held."""
        return await asyncio.wait_for(self.arrived.get(), 10)

    async def admit(self, calls: int) -> None:
        """Let the job's next ``calls`` calls through as they come."""
        for _ in range(calls):
            await self.next_call()
            self.admitted.release()


@dataclass
class Running:
    gate: Gate
    ingest: pb_grpc.IngestStub
    retrieval: ret_grpc.RetrievalStub

    async def found(self) -> set[str]:
        """The ids of every chunk of the knowledge base a search finds now."""
        found = await self.retrieval.Search(
            ret.SearchRequest(
                knowledge_base_id="handbook",
                query="leave policy rule",
                top_k=50,
                mode=ret.SEARCH_MODE_DENSE,
            )
        )
        return {c.chunk_id for c in found.chunks}

    async def chunk_count(self) -> int:
        stats = await self.retrieval.GetCollectionStats(
            ret.GetCollectionStatsRequest(knowledge_base_id="handbook")
        )
        return int(stats.chunk_count)

    async def first_version(self) -> tuple[str, set[str]]:
        """A document of two chunks, indexed: its id and its chunks' ids."""
        created = await self.ingest.CreateDocument(doc(policy("old", 2), external_id="policy"))
        await self.gate.admit(1)
        assert (await job_updates(self.ingest, created.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
        document_id = created.document.id
        ids = {f"{document_id}:v1:{i}" for i in range(2)}
        assert await self.found() == ids
        return document_id, ids


@pytest.fixture
async def running(
    database_url: str, retrieval_address: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Running]:
    monkeypatch.setattr(jobs, "BATCH", 4)
    async with channel(retrieval_address, "parley.retrieval.v1.Retrieval") as chan:
        real = ret_grpc.RetrievalStub(chan)
        gate = Gate(real)  # type: ignore[abstract]  # only the calls ingest makes
        registration = Registration(
            "parley.retrieval.v1.Retrieval",
            lambda server: ret_grpc.add_RetrievalServicer_to_server(gate, server),
        )
        async with (
            grpc_server([registration]) as address,
            ingest_service(database_url, address) as ingest,
        ):
            yield Running(gate, ingest, real)


async def test_searches_see_the_old_version_until_the_new_one_is_published_whole(
    running: Running,
) -> None:
    document_id, old = await running.first_version()
    v2 = await running.ingest.CreateDocument(doc(policy("new", 10), external_id="policy"))
    calls = []
    for _ in range(3):
        request = await running.gate.next_call()
        # The job's earlier calls have returned: what they sent is stored, and hidden.
        assert await running.found() == old
        assert await running.chunk_count() == 2
        calls.append((len(request.chunks), request.staged, request.replace))
        running.gate.admitted.release()
    assert calls == [(4, True, False), (4, True, False), (2, False, True)]
    assert (await job_updates(running.ingest, v2.job.id))[-1].state == pb.JOB_STATE_SUCCEEDED
    assert await running.found() == {f"{document_id}:v2:{i}" for i in range(10)}
    assert await running.chunk_count() == 10


async def test_a_job_that_fails_after_staging_discards_what_it_staged(running: Running) -> None:
    document_id, old = await running.first_version()
    running.gate.refuse_publication = True
    v2 = await running.ingest.CreateDocument(doc(policy("new", 10), external_id="policy"))
    await running.gate.admit(3)
    failed = (await job_updates(running.ingest, v2.job.id))[-1]
    assert (failed.state, failed.chunks_indexed) == (pb.JOB_STATE_FAILED, 8)
    # The two staged calls' chunks are removed; the published version stays searchable.
    assert await asyncio.wait_for(running.gate.discarded.get(), 10) == (2, 8)
    assert await running.found() == old
    left = await running.retrieval.DeleteDocument(
        ret.DeleteDocumentRequest(
            knowledge_base_id="handbook", document_id=document_id, staged_version=2
        )
    )
    assert left.deleted_chunks == 0
