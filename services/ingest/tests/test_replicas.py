"""Two ingest replicas on one database (SQLite and PostgreSQL): a document's jobs never run at
once, whichever replica holds them; other documents' jobs do run side by side; a deletion made
on one replica while the other indexes leaves no chunk behind; passing failures are retried
with a backoff, then fail with their reason; a job's progress is seen from either replica.

Retrieval is a fake that speaks its gRPC contract over a real socket and keeps an index of
chunk ids per document, so what a search would find can be read at any moment.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

import grpc
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from parley.ingest.v1 import ingest_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.adapters.retrieval import RetrievalIndex
from parley_ingest.adapters.store import IngestStore, NewDocument
from parley_ingest.documents import Documents
from parley_ingest.jobs import JobRunner
from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.settings import Settings
from parley_ingest.tables import JobRow
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.grpc_server import Registration
from parley_runtime.timestamps import utcnow
from parley_testkit import acting_as, grpc_server
from parley_testkit.services import document as doc
from parley_testkit.services import ingest_service, job_updates

ANN = Principal("acme", "ann")


class FakeRetrieval(ret_grpc.RetrievalServicer):
    """Retrieval's contract over an index of chunk ids (document → chunk id → version), with
    the ids of staged chunks apart (found by no search until their version is published).

    ``hold`` (when cleared) keeps IndexChunks calls waiting once they are recorded;
    ``answer_deletions`` (when cleared) keeps DeleteDocument calls from answering once they
    removed the chunks; ``unavailable`` fails that many calls with UNAVAILABLE first."""

    def __init__(self) -> None:
        self.index: dict[str, dict[str, int]] = defaultdict(dict)
        self.staged: dict[str, set[str]] = defaultdict(set)
        self.discards: list[tuple[str, int]] = []
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self.arrived: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.hold = asyncio.Event()
        self.hold.set()
        self.unavailable = 0
        self.calls: list[tuple[str, int]] = []
        self.deletions: list[str] = []
        self.deleted = asyncio.Condition()
        self.answer_deletions = asyncio.Event()
        self.answer_deletions.set()

    async def IndexChunks(
        self, request: ret.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> ret.IndexChunksResponse:
        document = request.document_id
        if self.unavailable:
            self.unavailable -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "retrieval is restarting")
        self.in_flight[document] += 1
        self.most_in_flight[document] = max(self.most_in_flight[document], self.in_flight[document])
        self.calls.append((document, request.document_version))
        self.arrived[document].set()
        try:
            await self.hold.wait()
            chunks, staged = self.index[document], self.staged[document]
            for chunk in request.chunks:
                chunks[chunk.chunk_id] = request.document_version
                if request.staged:
                    staged.add(chunk.chunk_id)
            if request.replace:
                for chunk_id in [c for c, v in chunks.items() if v != request.document_version]:
                    del chunks[chunk_id]
                staged.clear()
        finally:
            self.in_flight[document] -= 1
        return ret.IndexChunksResponse(indexed=len(request.chunks))

    async def DeleteDocument(
        self, request: ret.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> ret.DeleteDocumentResponse:
        document, version = request.document_id, request.staged_version
        if version:  # a failed or superseded job's staged chunks
            chunks, staged = self.index[document], self.staged[document]
            gone = [c for c in staged if chunks.get(c) == version]
            for chunk_id in gone:
                del chunks[chunk_id]
                staged.discard(chunk_id)
            self.discards.append((document, version))
            return ret.DeleteDocumentResponse(deleted_chunks=len(gone))
        removed = self.index.pop(document, {})
        self.staged.pop(document, None)
        async with self.deleted:
            self.deletions.append(request.document_id)
            self.deleted.notify_all()
        await self.answer_deletions.wait()
        return ret.DeleteDocumentResponse(deleted_chunks=len(removed))

    def versions(self, document_id: str) -> set[int]:
        """The versions of a document a search could find now."""
        staged = self.staged.get(document_id, set())
        return {v for c, v in self.index.get(document_id, {}).items() if c not in staged}


@dataclass
class Replica:
    """One ingest replica: its store, job worker and documents, as main.build wires them."""

    store: IngestStore
    jobs: JobRunner
    documents: Documents


@pytest.fixture
async def retrieval() -> AsyncIterator[tuple[FakeRetrieval, str]]:
    fake = FakeRetrieval()  # type: ignore[abstract]  # only the calls ingest makes
    registration = Registration(
        "parley.retrieval.v1.Retrieval",
        lambda server: ret_grpc.add_RetrievalServicer_to_server(fake, server),
    )
    async with grpc_server([registration]) as address:
        yield fake, address


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


@asynccontextmanager
async def replica(
    engine: AsyncEngine, address: str, name: str, **settings: float
) -> AsyncIterator[Replica]:
    config = Settings(replica_id=name, retrieval_addr=address, **settings)  # type: ignore[arg-type]
    store = IngestStore(engine, config.worker, config.job_lease_seconds)
    index = RetrievalIndex(address, config.index_timeout_seconds)
    jobs = JobRunner(store, index, config)
    await jobs.start()
    try:
        yield Replica(store, jobs, Documents(store, jobs, index, config.max_document_bytes))
    finally:
        await jobs.close()
        await index.close()


def upload(external_id: str = "policy") -> NewDocument:
    return NewDocument("handbook", "Policy", "", "text/plain", {}, external_id)


async def stored(store: IngestStore, text: str, external_id: str = "policy") -> tuple[str, str]:
    """(document id, job id) of an upload stored as a process that died before its job
    started would leave it."""
    created = await store.create(
        ANN, upload(external_id), text.encode(), hashlib.sha256(text.encode()).hexdigest()
    )
    return created.document.id, created.job.id


async def ended(store: IngestStore, job_id: str, within: float = 15.0) -> JobRow:
    """The job once it succeeded or failed, read from the database (any replica's work)."""
    async with asyncio.timeout(within):
        while True:
            job = await store.job(ANN, job_id)
            if job.state in ("succeeded", "failed"):
                return job
            await asyncio.sleep(0.05)


async def test_a_documents_jobs_are_claimed_one_at_a_time_across_replicas(
    engine: AsyncEngine,
) -> None:
    a = IngestStore(engine, "ingest-a", lease_seconds=30)
    b = IngestStore(engine, "ingest-b", lease_seconds=30)
    document_id, v1 = await stored(a, "Leave is 25 days.")
    _, v2 = await stored(a, "Leave is 30 days.")
    _, other = await stored(a, "Trains in second class.", external_id="travel")

    assert await a.claim(v1) is not None
    assert await b.claim(v2) is None  # v1 runs on replica a
    assert await b.claim(other) is not None  # another document is not held up
    await a.finish(v1, document_id, chunks=1)
    assert await b.queued_of(document_id) == [v2]
    work = await b.claim(v2)
    assert work is not None
    assert (work.job.version, work.job.attempts, work.job.worker) == (2, 1, "ingest-b")


async def test_concurrent_claims_of_one_documents_jobs_let_exactly_one_through(
    engine: AsyncEngine,
) -> None:
    stores = [IngestStore(engine, f"ingest-{i}", lease_seconds=30) for i in range(4)]
    jobs = [(await stored(stores[0], f"Leave is {days} days."))[1] for days in range(20, 26)]
    claims = await asyncio.gather(*(s.claim(j) for s in stores for j in jobs))
    assert len([c for c in claims if c is not None]) == 1


async def test_a_dead_workers_job_holds_its_document_only_while_its_lease_lasts(
    engine: AsyncEngine,
) -> None:
    dead = IngestStore(engine, "ingest-a", lease_seconds=30)
    live = IngestStore(engine, "ingest-b", lease_seconds=30)
    _, v1 = await stored(dead, "Leave is 25 days.")
    _, v2 = await stored(dead, "Leave is 30 days.")
    assert await dead.claim(v1) is not None
    assert await live.claim(v2) is None
    async with live.sessions.begin() as session:  # the dead worker's lease runs out
        await session.execute(
            update(JobRow).where(JobRow.id == v1).values(lease_until=utcnow() - timedelta(1))
        )
    assert await live.claim(v2) is not None


async def test_versions_uploaded_to_two_replicas_are_indexed_one_at_a_time_ending_with_the_last(
    engine: AsyncEngine, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    async with replica(engine, address, "ingest-a") as a, replica(engine, address, "ingest-b") as b:
        fake.hold.clear()
        first = await a.documents.create(ANN, upload(), b"Leave is 25 days.")
        await asyncio.wait_for(fake.arrived[first.document.id].wait(), 5)
        # Newer versions arrive at both replicas while the first is being indexed.
        second = await b.documents.create(ANN, upload(), b"Leave is 30 days.")
        a.jobs.submit(second.job.id)
        third = await a.documents.create(ANN, upload(), b"Leave is 35 days.")
        b.jobs.submit(third.job.id)
        await asyncio.sleep(0.3)  # time enough for a second claim to slip through, were it let
        assert fake.in_flight[first.document.id] == 1
        fake.hold.set()
        jobs = [await ended(a.store, c.job.id) for c in (first, second, third)]
    assert fake.most_in_flight[first.document.id] == 1
    assert jobs[2].state == "succeeded"
    for job in jobs[:2]:
        assert job.state == "succeeded" or job.error_code == "superseded"
    assert fake.versions(first.document.id) == {3}
    document = await a.store.document(ANN, first.document.id)
    assert (document.version, document.status, document.chunk_count) == (3, "ready", 1)


async def test_other_documents_are_indexed_side_by_side(
    engine: AsyncEngine, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    async with replica(engine, address, "ingest-a", worker_concurrency=2) as a:
        fake.hold.clear()
        leave = await a.documents.create(ANN, upload("leave"), b"Leave is 25 days.")
        travel = await a.documents.create(ANN, upload("travel"), b"Trains, second class.")
        # Both calls are in retrieval at once: a lock per document, not one for all.
        await asyncio.wait_for(fake.arrived[leave.document.id].wait(), 5)
        await asyncio.wait_for(fake.arrived[travel.document.id].wait(), 5)
        fake.hold.set()
        for created in (leave, travel):
            assert (await ended(a.store, created.job.id)).state == "succeeded"


async def test_a_deletion_on_one_replica_during_indexing_on_another_leaves_no_chunk(
    engine: AsyncEngine, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    async with replica(engine, address, "ingest-a") as a, replica(engine, address, "ingest-b") as b:
        fake.hold.clear()
        created = await a.documents.create(ANN, upload(), b"Leave is 25 days.")
        await asyncio.wait_for(fake.arrived[created.document.id].wait(), 5)
        await b.documents.delete(ANN, created.document.id)  # replica b, while a indexes
        assert fake.deletions == [created.document.id]
        fake.hold.set()  # a's call lands after the deletion...
        async with asyncio.timeout(10), fake.deleted:
            await fake.deleted.wait_for(lambda: len(fake.deletions) >= 2)
    # ... and a removes what it added once it sees the document is gone.
    assert fake.deletions == [created.document.id] * 2
    assert fake.versions(created.document.id) == set()


async def test_a_call_landing_between_a_deletions_two_steps_is_cleaned_up_too(
    engine: AsyncEngine, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    async with replica(engine, address, "ingest-a") as a, replica(engine, address, "ingest-b") as b:
        fake.hold.clear()
        created = await a.documents.create(ANN, upload(), b"Leave is 25 days.")
        await asyncio.wait_for(fake.arrived[created.document.id].wait(), 5)
        # b's deletion removes the chunks, and has yet to delete the records...
        fake.answer_deletions.clear()
        deletion = asyncio.create_task(b.documents.delete(ANN, created.document.id))
        async with asyncio.timeout(5), fake.deleted:
            await fake.deleted.wait_for(lambda: len(fake.deletions) == 1)
        fake.hold.set()  # ... when a's call adds them back
        async with asyncio.timeout(10), fake.deleted:
            await fake.deleted.wait_for(lambda: len(fake.deletions) == 2)
        fake.answer_deletions.set()
        await asyncio.wait_for(deletion, 5)
    assert fake.versions(created.document.id) == set()


async def test_a_passing_failure_is_retried_after_a_backoff_and_the_job_succeeds(
    database_url: str, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    fake.unavailable = 3  # the client's own three tries of the first attempt
    async with ingest_service(
        database_url, address, job_retry_seconds=0.5, job_max_attempts=3
    ) as ingest:
        with acting_as("acme", "ann"):
            created = await ingest.CreateDocument(doc("Leave is 25 days."))
            states = await asyncio.wait_for(job_updates(ingest, created.job.id), 15)
    waiting = [s for s in states if s.state == pb.JOB_STATE_QUEUED and s.attempts == 1]
    assert waiting
    assert waiting[0].error_code == "retrieval_unavailable"
    assert "attempt 1 of 3, retrying in" in waiting[0].error
    last = states[-1]
    assert (last.state, last.attempts, last.error, last.error_code) == (
        pb.JOB_STATE_SUCCEEDED,
        2,
        "",
        "",
    )
    waited = last.update_time.ToDatetime() - waiting[0].update_time.ToDatetime()
    assert waited >= timedelta(seconds=0.4)  # the backoff (0.5 s, within a fifth)
    assert fake.versions(created.document.id) == {1}


async def test_a_job_whose_workers_keep_dying_fails_once_its_attempts_are_spent(
    engine: AsyncEngine, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    doomed = IngestStore(engine, "ingest-a", lease_seconds=30)
    _, job_id = await stored(doomed, "A file that kills its worker.")
    for _ in range(2):  # claimed, then the process is killed: its next process takes it back
        assert await doomed.claim(job_id) is not None
        await doomed.release_own()
    async with replica(engine, address, "ingest-b", job_max_attempts=2) as b:
        job = await ended(b.store, job_id)
    assert (job.state, job.attempts, job.error_code) == ("failed", 3, "worker_lost")
    assert job.error.startswith("abandoned after 2 attempts: the last one's worker stopped")
    assert fake.calls == []  # not run a third time


async def test_progress_made_on_one_replica_is_watched_on_another(
    database_url: str, retrieval: tuple[FakeRetrieval, str]
) -> None:
    fake, address = retrieval
    fake.hold.clear()
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(
            ingest_service(database_url, address, replica_id="ingest-a")
        )
        b = await stack.enter_async_context(
            ingest_service(database_url, address, replica_id="ingest-b")
        )
        with acting_as("acme", "ann"):
            created = await a.CreateDocument(doc("Leave is 25 days."))
            await asyncio.wait_for(fake.arrived[created.document.id].wait(), 5)
            seen: list[pb.Job] = []
            async with asyncio.timeout(10):
                async for job in b.WatchJob(pb.WatchJobRequest(job_id=created.job.id)):
                    seen.append(job)
                    if job.stage == "indexing":
                        fake.hold.set()  # let a's worker finish
    assert seen[0].state == pb.JOB_STATE_RUNNING
    assert [s.stage for s in seen][-2:] == ["indexing", "done"]
    assert seen[-1].state == pb.JOB_STATE_SUCCEEDED
