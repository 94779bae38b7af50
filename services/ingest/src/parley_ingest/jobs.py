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

Jobs of one document run one at a time in a process, and before each indexing call the job
checks that its version is still the document's current one: a superseded job stops (its
partial chunks are replaced by the newer version's), a job whose document was deleted removes
what it indexed. The last batch is sent with ``replace``, so the previous version's chunks
disappear only once the new ones are all searchable.

Any failure (retrieval unavailable, bytes that are not text, a bug) makes the job and the
document FAILED with a readable error; the worker itself never stops on a bad document.
CPU-bound parsing and chunking run in a worker thread, off the event loop.

The worker serves no caller: a job acts for its uploader, whose tenant and user its row
carries, and passes that principal explicitly to every indexing call.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from parley_ingest.adapters.store import IngestStore, Work
from parley_ingest.chunking import TextChunk, chunk_text
from parley_ingest.index import ChunkIndex
from parley_ingest.metrics import JOBS_FINISHED
from parley_ingest.parsing import has_headings, to_text
from parley_ingest.settings import Settings
from parley_runtime.context import Principal
from parley_runtime.errors import ParleyError

log = logging.getLogger("parley.ingest.jobs")

BATCH = 512  # retrieval's IndexChunks takes at most this many chunks per call


@dataclass
class _Attempt:
    """One run of a job: what it works on, for whom, where it is, whether it has indexed
    anything."""

    work: Work
    who: Principal
    stage: str = "parsing"
    indexed: bool = False


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
        self._running: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: dict[str, int] = defaultdict(int)
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    async def start(self) -> None:
        """Queue the jobs a previous process left unfinished, then start the workers."""
        # This replica's previous process died with these running: nobody else works on them.
        if taken_back := await self.store.release_own():
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
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.store.release(running)
        except Exception:
            log.exception("releasing running jobs failed; their leases will lapse instead")

    async def process(self, job_id: str) -> None:
        """Run one job to its end, if it is still to be done and no one else has it."""
        work = await self.store.claim(job_id)
        if work is None:
            return  # done already, deleted, or another worker has it
        self._running.add(job_id)
        self._notify(job_id)
        heartbeat = asyncio.create_task(self._heartbeat(job_id))
        # Act as the uploader, so retrieval files the chunks under the uploader's tenant.
        attempt = _Attempt(work, Principal(work.job.tenant_id, work.job.user_id))
        try:
            async with self._document_lock(work.document.id):
                await self._run(attempt)
        except ParleyError as error:
            await self._finish(attempt, 0, f"{attempt.stage} failed: {error.message}")
        except Exception:
            log.exception("ingest job crashed", extra={"job_id": job_id})
            await self._finish(attempt, 0, f"{attempt.stage} failed: internal error")
        finally:
            heartbeat.cancel()
            self._running.discard(job_id)

    async def _run(self, attempt: _Attempt) -> None:
        job, document = attempt.work.job, attempt.work.document
        if await self._stale(attempt):
            return
        text = await asyncio.to_thread(to_text, attempt.work.content, document.content_type)
        attempt.stage = "chunking"
        await self._progress(job.id, stage="chunking", progress=0.1)
        pieces = await asyncio.to_thread(
            chunk_text,
            text,
            self.settings.chunk_size_chars,
            self.settings.chunk_overlap_chars,
            markdown=has_headings(document.content_type),
        )
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
                # Only with the last batch: earlier versions stay searchable until then.
                replace=done == len(chunks),
            )
            attempt.indexed = True
            await self._progress(
                job.id, chunks_indexed=done, progress=0.2 + 0.8 * done / len(chunks)
            )
        if await self._stale(attempt):  # deleted during the last call: clean up after it
            return
        await self._finish(attempt, len(chunks), "")

    async def _stale(self, attempt: _Attempt) -> bool:
        """Whether the job should stop: its document was deleted or has a newer version."""
        job, document = attempt.work.job, attempt.work.document
        current = await self.store.current_version(document.id)
        if current is None:
            if attempt.indexed:
                # The deletion may have removed chunks before this job added more.
                await self.index.delete(attempt.who, document.knowledge_base_id, document.id)
            self._notify(job.id)
            return True
        if current != job.version:
            await self._finish(attempt, 0, f"superseded by version {current}")
            return True
        return False

    async def _finish(self, attempt: _Attempt, chunks: int, error: str) -> None:
        job_id = attempt.work.job.id
        await self.store.finish(job_id, attempt.work.document.id, chunks=chunks, error=error)
        JOBS_FINISHED.labels("failed" if error else "succeeded").inc()
        if error:
            log.warning("ingest job failed", extra={"job_id": job_id, "error": error})
        self._notify(job_id)

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

    @asynccontextmanager
    async def _document_lock(self, document_id: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(document_id, asyncio.Lock())
        self._lock_users[document_id] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[document_id] -= 1
            if not self._lock_users[document_id]:
                del self._lock_users[document_id]
                del self._locks[document_id]

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                for job_id in await self.store.unfinished():
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
