"""The ingest job worker: parse, chunk and index documents, with progress.

Jobs live in the database, so nothing is lost when a process stops: at start, and every half
lease (``JOB_LEASE_SECONDS``) after, the worker takes up queued jobs and running jobs whose
lease lapsed (their worker died). A job is claimed atomically under this replica's name
(``REPLICA_ID``), so two replicas never process the same job at once; while it runs, a
heartbeat renews its lease every third of it, and a clean stop puts it back in the queue. A
process killed without a clean stop is usually restarted under the same name (a container
keeps its host name and port): the new process takes the jobs of its predecessor back at
start instead of waiting for their leases.
Indexing is idempotent (stable chunk ids), so a job done twice does no harm.

Jobs of one document run one at a time across every replica: a job is claimed only while no
other job of its document runs (the store checks under a lock on the document's row), and a
job that ends hands its document to the next one queued for it. Before each indexing call the
job checks that its version is still the document's current one: a superseded job stops, a
job whose document was deleted removes what it indexed. A version goes to retrieval in calls
of up to ``BATCH`` chunks: every one but the last is ``staged`` (stored, found by no search),
and the last is sent with ``replace``, which publishes the whole version and removes the
previous one, so searches see the old version until then and the new one after, never a mix.
Staged chunks whose publication will not come go with the next version's publication or the
document's deletion; a job that fails or is superseded discards its own at once (best effort:
when retrieval cannot be reached, those two remain).

Every claim counts an attempt. A passing failure (retrieval unavailable or too slow) puts the
job back in the queue, due after a backoff that doubles each time (``JOB_RETRY_SECONDS``, 2,
4, 8 s...); a job whose worker died is taken up again at once the first time, then after the
same backoff. Once ``JOB_MAX_ATTEMPTS`` are spent, or at once for a failure that would happen
again (a password-protected PDF, a scan without text, a bug), the job and its document are
FAILED with a readable error and its code; the worker itself never stops on a bad document.
CPU-bound parsing and chunking run in a worker thread, off the event loop.

The worker serves no caller: a job acts for its uploader, whose tenant and user its row
carries, and passes that principal explicitly to every indexing call.

Each attempt is a trace of its own, linked to the upload's (the job keeps the upload's
``traceparent``): the span ``ingest job`` and, under it, the database and the indexing calls.
The worker samples the queue's depth every :data:`QUEUE_SAMPLE_SECONDS`; a job's lag (upload
to first start) and each attempt's duration are histograms.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace

from parley_ingest.adapters.store import IngestStore, Work
from parley_ingest.chunking import TextChunk, chunk_text
from parley_ingest.index import ChunkIndex
from parley_ingest.metrics import (
    JOB_DURATION,
    JOB_LAG,
    JOB_RETRIES,
    JOBS_FINISHED,
    QUEUE_DEPTH,
)
from parley_ingest.parsers import UnreadableDocument
from parley_ingest.parsing import parse
from parley_ingest.settings import Settings
from parley_runtime import telemetry
from parley_runtime.context import Principal
from parley_runtime.errors import ParleyError
from parley_runtime.timestamps import utcnow

log = logging.getLogger("parley.ingest.jobs")

BATCH = 512  # retrieval's IndexChunks takes at most this many chunks per call
MAX_RETRY_SECONDS = 300.0  # the longest wait between two attempts
QUEUE_SAMPLE_SECONDS = 5.0

_tracer = trace.get_tracer("parley.ingest")


@dataclass
class _Attempt:
    """One run of a job: what it works on, for whom, where it is, whether it has indexed
    anything."""

    work: Work
    who: Principal
    stage: str = "parsing"
    indexed: bool = False
    outcome: str = "failed"  # succeeded, failed, retried


class JobRunner:
    """Workers over an in-process queue of job ids (see the module docstring)."""

    def __init__(self, store: IngestStore, index: ChunkIndex, settings: Settings) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        lease = store.lease.total_seconds()
        self.heartbeat_seconds = lease / 3
        self.sweep_seconds = lease / 2
        self._tasks: list[asyncio.Task[None]] = []
        # Ids queued or being processed here: the sweep must not queue them again.
        self._scheduled: set[str] = set()
        # Jobs due again while a worker still held them (``_due``).
        self._again: set[str] = set()
        self._running: set[str] = set()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before the attempt after ``attempts`` failed ones: the setting,
        doubled each time, within a fifth either way (so jobs that failed together, when
        retrieval went down, do not all come back at once)."""
        base: float = self.settings.job_retry_seconds * 2 ** max(attempts - 1, 0)
        return min(base, MAX_RETRY_SECONDS) * random.uniform(0.8, 1.2)

    def backoff_after_death(self, attempts: int) -> float:
        """Seconds before a job whose worker died, after ``attempts``, is taken up again: at
        once the first time (most often a restart or an eviction), then the backoff."""
        return self.backoff(attempts - 1) if attempts > 1 else 0.0

    async def start(self) -> None:
        """Queue the jobs a previous process left unfinished, then start the workers."""
        # This replica's previous process died with these running: nobody else works on them.
        if taken_back := await self.store.release_own(self.backoff_after_death):
            log.warning("took back jobs left running", extra={"count": taken_back})
        for job_id in await self.store.unfinished():
            self.submit(job_id)
        # An empty context: no principal, request id or deadline of whoever started the
        # service may ride on a job's calls.
        self._tasks = [
            asyncio.create_task(
                self._work(), name=f"ingest-worker-{i}", context=contextvars.Context()
            )
            for i in range(self.settings.worker_concurrency)
        ]
        self._tasks.append(
            asyncio.create_task(self._sweep(), name="ingest-sweep", context=contextvars.Context())
        )
        self._tasks.append(
            asyncio.create_task(
                self._sample_queue(), name="ingest-queue-depth", context=contextvars.Context()
            )
        )

    def submit(self, job_id: str) -> None:
        """Queue a job (already stored as QUEUED); a job queued here already is left alone."""
        if job_id not in self._scheduled:
            self._scheduled.add(job_id)
            self.queue.put_nowait(job_id)

    async def changed(self, job_id: str, within: float) -> None:
        """Return when the job changes here, or after ``within`` seconds (other replicas' changes
        are seen by reading again)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[job_id].append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), within)
        except TimeoutError:
            pass
        finally:
            waiters = self._waiters.get(job_id, [])
            if waiter in waiters:
                waiters.remove(waiter)
            if not waiters:
                self._waiters.pop(job_id, None)

    async def close(self) -> None:
        """Stop the workers and hand their jobs back to the queue for the next process."""
        running = list(self._running)
        for retry in self._retries.values():
            retry.cancel()  # the jobs stay queued with their due time: any replica takes them
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.store.release(running)
        except Exception:
            log.exception("releasing running jobs failed; their leases will lapse instead")

    async def process(self, job_id: str) -> None:
        """Run one job to its end, if it is still to be done and no one else has it."""
        with telemetry.untraced():  # most claims take nothing: the job's span says what ran
            work = await self.store.claim(job_id)
        if work is None:
            return  # done already, deleted, not due, or its document's other job is running
        started = time.perf_counter()
        self._running.add(job_id)
        self._notify(job_id)
        # Act as the uploader, so retrieval files the chunks under the uploader's tenant.
        attempt = _Attempt(work, Principal(work.job.tenant_id, work.job.user_id))
        with telemetry.span(
            _tracer,
            "ingest job",
            {
                "parley.job.id": job_id,
                "parley.document.id": work.document.id,
                "parley.job.attempt": work.job.attempts,
            },
            trace.SpanKind.CONSUMER,
            telemetry.links(work.job.traceparent),
        ) as span:
            if work.job.attempts == 1:
                lag = (utcnow() - _aware(work.job.created_at)).total_seconds()
                JOB_LAG.observe(max(lag, 0.0), telemetry.exemplar(span))
            await self._attempt(attempt)
            span.set_attribute("parley.job.outcome", attempt.outcome)
            JOB_DURATION.labels(attempt.outcome).observe(
                time.perf_counter() - started, telemetry.exemplar(span)
            )
        # Its document's next job (a newer version, queued meanwhile) may run now.
        with telemetry.untraced():
            queued = await self.store.queued_of(work.document.id)
        for next_id in queued:
            self.submit(next_id)

    async def _attempt(self, attempt: _Attempt) -> None:
        """Run the claimed job to its end, a retry or a failure (see the module docstring)."""
        work, job_id = attempt.work, attempt.work.job.id
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        limit = self.settings.job_max_attempts
        try:
            if work.job.attempts > limit:  # the last attempt's worker died mid-job
                await self._finish(
                    attempt,
                    0,
                    f"abandoned after {limit} attempts: the last one's worker stopped before "
                    "finishing (crashed, or was killed)",
                    "worker_lost",
                )
            else:
                await self._run(attempt)
        except ParleyError as error:
            if error.retryable and work.job.attempts < limit:
                await self._retry_later(attempt, error)
            else:
                tries = f" after {work.job.attempts} attempts" if error.retryable else ""
                message = f"{attempt.stage} failed{tries}: {error.message}"
                await self._finish(attempt, 0, message, error.code)
        except Exception:
            log.exception("ingest job crashed", extra={"job_id": job_id})
            await self._finish(attempt, 0, f"{attempt.stage} failed: internal error", "internal")
        finally:
            heartbeat.cancel()
            self._running.discard(job_id)

    async def _retry_later(self, attempt: _Attempt, error: ParleyError) -> None:
        job, document = attempt.work.job, attempt.work.document
        delay = self.backoff(job.attempts)
        message = f"{attempt.stage} failed: {error.message}; attempt {job.attempts} of "
        message += f"{self.settings.job_max_attempts}, retrying in {delay:.1f} s"
        await self.store.retry_later(job.id, document.id, delay, error=message, code=error.code)
        JOB_RETRIES.inc()
        attempt.outcome = "retried"
        log.warning("ingest job will be retried", extra={"job_id": job.id, "error": message})
        self._notify(job.id)
        # Here, when it is due; any replica's sweep takes it up if this one is gone by then.
        loop = asyncio.get_running_loop()
        self._retries[job.id] = loop.call_later(delay, self._due, job.id)

    def _due(self, job_id: str) -> None:
        self._retries.pop(job_id, None)
        if job_id in self._scheduled:
            # Its last attempt's worker has not let go of it yet: queued once it has.
            self._again.add(job_id)
        else:
            self.submit(job_id)

    async def _run(self, attempt: _Attempt) -> None:
        job, document = attempt.work.job, attempt.work.document
        # The document as it was claimed: deleted or superseded since the job was queued?
        if await self._stop(attempt, None if document.deleting_since else document.version):
            return
        parsed = await asyncio.to_thread(parse, attempt.work.content, document.content_type)
        # Chunking takes a fraction of parsing's time: no stage of its own is written.
        attempt.stage = "chunking"
        pieces = await asyncio.to_thread(
            chunk_text,
            parsed.text,
            self.settings.chunk_size_chars,
            self.settings.chunk_overlap_chars,
            markdown=parsed.markdown,
            paged=parsed.paged,
        )
        if not pieces:
            raise UnreadableDocument("the document has no text", code="empty_document")
        # The document's metadata goes on every chunk, so searches can filter on it.
        chunks = [
            TextChunk(c.position, c.text, {**document.metadata_, **c.metadata}) for c in pieces
        ]
        attempt.stage = "indexing"
        await self._progress(job.id, stage="indexing", progress=0.2, chunks_total=len(chunks))
        for start in range(0, len(chunks), BATCH):
            if await self._stale(attempt):
                return
            batch = chunks[start : start + BATCH]
            done = start + len(batch)
            await self.index.index(
                attempt.who,
                document.knowledge_base_id,
                document.id,
                job.version,
                document.title,
                document.filename,
                batch,
                # The last batch publishes the version: searches switch to it whole.
                replace=done == len(chunks),
                staged=done < len(chunks),
            )
            attempt.indexed = True
            if done < len(chunks):  # the last one's progress is the job's end
                await self._progress(
                    job.id, chunks_indexed=done, progress=0.2 + 0.8 * done / len(chunks)
                )
        if await self._stale(attempt):  # deleted during the last call: clean up after it
            return
        await self._finish(attempt, len(chunks), "")

    async def _stale(self, attempt: _Attempt) -> bool:
        """Whether the job should stop: its document was deleted (or is being deleted) or
        has a newer version."""
        return await self._stop(attempt, await self.store.current_version(attempt.work.document.id))

    async def _stop(self, attempt: _Attempt, current: int | None) -> bool:
        """Stop the job if ``current`` (the document's version; None once deleted) says so."""
        job, document = attempt.work.job, attempt.work.document
        if current is None:
            if attempt.indexed:
                # The deletion may have removed chunks before this job added more.
                await self.index.delete(attempt.who, document.knowledge_base_id, document.id)
            # Its rows went with the document; or the deletion failed part way, and the job
            # ends rather than stay running (the same upload again revives the document).
            await self.store.finish(
                job.id,
                document.id,
                chunks=0,
                error="the document is being deleted",
                code="document_deleted",
            )
            self._notify(job.id)
            return True
        if current != job.version:
            await self._finish(attempt, 0, f"superseded by version {current}", "superseded")
            return True
        return False

    async def _finish(self, attempt: _Attempt, chunks: int, error: str, code: str = "") -> None:
        job_id = attempt.work.job.id
        await self.store.finish(
            job_id, attempt.work.document.id, chunks=chunks, error=error, code=code
        )
        JOBS_FINISHED.labels("failed" if error else "succeeded").inc()
        attempt.outcome = "failed" if error else "succeeded"
        if error:
            log.warning("ingest job failed", extra={"job_id": job_id, "error": error})
        self._notify(job_id)
        # This attempt, or an earlier one, may have staged chunks its version never published.
        if error and (attempt.indexed or attempt.work.job.attempts > 1):
            await self._discard(attempt)

    async def _discard(self, attempt: _Attempt) -> None:
        """Remove the job's staged chunks; on failure they wait for the document's next
        version or its deletion."""
        job, document = attempt.work.job, attempt.work.document
        try:
            await self.index.discard(
                attempt.who, document.knowledge_base_id, document.id, job.version
            )
        except Exception:
            log.warning(
                "discarding a failed job's staged chunks failed",
                extra={"job_id": job.id},
                exc_info=True,
            )

    async def _progress(self, job_id: str, **values: object) -> None:
        await self.store.progress(job_id, **values)
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        for waiter in self._waiters.get(job_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def _heartbeat(self, job_id: str) -> None:
        # An indexing call may outlast the lease; without this, a sweep would take the job
        # over while it is still running.
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            try:
                await self.store.renew(job_id)
            except Exception:
                log.warning("renewing a job's lease failed", extra={"job_id": job_id})

    async def _sample_queue(self) -> None:
        while True:
            try:
                with telemetry.untraced():
                    QUEUE_DEPTH.set(await self.store.queued())
            except Exception:
                log.warning("counting the queued jobs failed", exc_info=True)
            await asyncio.sleep(QUEUE_SAMPLE_SECONDS)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                with telemetry.untraced():
                    unfinished = await self.store.unfinished()
                for job_id in unfinished:
                    self.submit(job_id)
            except Exception:
                log.exception("looking for unfinished jobs failed")

    async def _work(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await self.process(job_id)
            except Exception:
                # Even recording the failure failed (the database, most likely): the job's
                # lease lapses and a sweep takes it up again.
                log.exception("ingest job could not be finished", extra={"job_id": job_id})
            finally:
                self._scheduled.discard(job_id)
                self.queue.task_done()
                if job_id in self._again:
                    self._again.discard(job_id)
                    self.submit(job_id)


def _aware(at: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
