"""Running jobs and their workers in the store: a replica's next process takes back what its
predecessor left running, at once; another replica waits for the lease. Attempts: a clean stop
gives one back, a death does not, and repeated deaths are taken up after a backoff."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from parley_ingest.adapters.retrieval import RetrievalIndex
from parley_ingest.adapters.store import IngestStore, NewDocument
from parley_ingest.jobs import JobRunner
from parley_ingest.main import MIGRATIONS, VERSION_TABLE
from parley_ingest.settings import Settings
from parley_ingest.tables import JobRow
from parley_runtime import db
from parley_runtime.context import Principal
from parley_runtime.timestamps import aware, utcnow

ANN = Principal("acme", "ann")


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await db.upgrade(MIGRATIONS, database_url, VERSION_TABLE)
    engine = db.create_engine(database_url)
    yield engine
    await engine.dispose()


async def _running_job(store: IngestStore) -> str:
    content = b"Employees have 25 days of paid leave a year."
    created = await store.create(
        ANN,
        NewDocument("handbook", "Leave", "", "text/plain", {}, ""),
        content,
        hashlib.sha256(content).hexdigest(),
    )
    assert await store.claim(created.job.id) is not None
    return created.job.id


async def test_the_next_process_of_a_replica_takes_its_running_jobs_back_at_once(
    engine: AsyncEngine,
) -> None:
    job_id = await _running_job(IngestStore(engine, "ingest-a", lease_seconds=30))

    # Another replica leaves a job with a live lease alone.
    other = IngestStore(engine, "ingest-b", lease_seconds=30)
    assert await other.release_own() == 0
    assert job_id not in await other.unfinished()
    assert await other.claim(job_id) is None

    # The same replica, restarted: the job is queued again and claimed.
    again = IngestStore(engine, "ingest-a", lease_seconds=30)
    assert await again.release_own() == 1
    job = await again.job(ANN, job_id)
    assert (job.state, job.worker, job.lease_until) == ("queued", None, None)
    assert job_id in await again.unfinished()
    work = await again.claim(job_id)
    assert work is not None
    assert (work.job.worker, work.document.status) == ("ingest-a", "processing")


async def test_a_job_taken_over_keeps_the_lease_of_its_new_worker(engine: AsyncEngine) -> None:
    dead = IngestStore(engine, "ingest-a", lease_seconds=1)
    job_id = await _running_job(dead)
    taker = IngestStore(engine, "ingest-b", lease_seconds=30)
    async with taker.sessions.begin() as session:  # the dead worker's lease runs out
        job = await session.get(JobRow, job_id)
        assert job is not None
        job.lease_until = utcnow() - timedelta(seconds=1)
    assert job_id in await taker.unfinished()
    assert await taker.claim(job_id) is not None
    renewed = (await taker.job(ANN, job_id)).lease_until
    assert renewed is not None

    # The old worker, only slow, renews no lease that is not its own any more.
    await dead.renew(job_id)
    job = await taker.job(ANN, job_id)
    assert (job.worker, job.lease_until) == ("ingest-b", renewed)


def test_a_replica_is_named_by_its_host_and_port_unless_told() -> None:
    assert Settings(grpc_port=50064).worker.endswith(":50064")
    assert Settings(replica_id="ingest-0").worker == "ingest-0"


async def test_a_clean_stop_gives_the_attempt_back_and_a_death_does_not(
    engine: AsyncEngine,
) -> None:
    store = IngestStore(engine, "ingest-a", lease_seconds=30)
    job_id = await _running_job(store)
    assert (await store.job(ANN, job_id)).attempts == 1
    await store.release([job_id])  # a clean stop: not the job's fault
    assert (await store.job(ANN, job_id)).attempts == 0

    index = RetrievalIndex("127.0.0.1:1", 1)  # never called
    runner = JobRunner(store, index, Settings(job_retry_seconds=10))
    assert await store.claim(job_id) is not None
    await store.release_own(runner.backoff_after_death)  # the first death: taken up again at once
    job = await store.job(ANN, job_id)
    assert (job.state, job.attempts, job.retry_at) == ("queued", 1, None)
    assert job_id in await store.unfinished()

    assert await store.claim(job_id) is not None
    await store.release_own(runner.backoff_after_death)  # the second: after a backoff
    job = await store.job(ANN, job_id)
    assert job.attempts == 2
    assert job.retry_at is not None
    assert timedelta(seconds=7) < aware(job.retry_at) - utcnow() <= timedelta(seconds=12)
    assert job_id not in await store.unfinished()
    assert await store.claim(job_id) is None  # not due yet
    await index.close()


async def test_the_backoff_doubles_within_a_fifth_and_has_a_ceiling(engine: AsyncEngine) -> None:
    index = RetrievalIndex("127.0.0.1:1", 1)
    runner = JobRunner(IngestStore(engine), index, Settings(job_retry_seconds=2))
    for attempts, seconds in ((1, 2), (2, 4), (3, 8), (4, 16)):
        assert seconds * 0.8 <= runner.backoff(attempts) <= seconds * 1.2
    assert runner.backoff(30) <= 300 * 1.2
    await index.close()
