"""The ingest job worker: parse, chunk and index documents, with progress.

Jobs live in the database, so nothing is lost when a process stops: at start, and every
``SWEEP_SECONDS`` after, the worker takes up queued jobs and running jobs whose lease lapsed
(their worker died). A job is claimed atomically, so two replicas never process the same job
at once. Indexing is idempotent (stable chunk ids), so a job done twice does no harm.
Retrieval failing makes the job and the document FAILED with a readable error; the worker
itself never stops on a bad document.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

import grpc
from prometheus_client import Counter

from parley_ingest.adapters.index import RetrievalIndex
from parley_ingest.adapters.store import IngestStore
from parley_ingest.chunking import TextChunk, chunk_text
from parley_ingest.parsing import to_text
from parley_ingest.settings import Settings
from parley_runtime.context import Principal, principal_var
from parley_runtime.errors import ParleyError, from_rpc_error

log = logging.getLogger("parley.ingest.jobs")

BATCH = 512
SWEEP_SECONDS = 30.0
JOBS = Counter("parley_ingest_jobs_total", "Ingest jobs finished, by outcome.", ["outcome"])


class JobRunner:
    """Workers over a queue of job ids (see the module docstring)."""

    def __init__(self, store: IngestStore, index: RetrievalIndex, settings: Settings) -> None:
        self.store = store
        self.index = index
        self.settings = settings
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._waiters: dict[str, list[asyncio.Future[None]]] = defaultdict(list)

    async def start(self) -> None:
        for job_id in await self.store.unfinished():
            self.queue.put_nowait(job_id)
        self._tasks = [
            asyncio.create_task(self._work(), name=f"ingest-worker-{i}")
            for i in range(self.settings.worker_concurrency)
        ]
        self._tasks.append(asyncio.create_task(self._sweep(), name="ingest-sweep"))

    def submit(self, job_id: str) -> None:
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

    def _notify(self, job_id: str) -> None:
        for waiter in self._waiters.get(job_id, []):
            if not waiter.done():
                waiter.set_result(None)

    async def _progress(self, job_id: str, **values: object) -> None:
        await self.store.progress(job_id, **values)
        self._notify(job_id)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            try:
                for job_id in await self.store.unfinished():
                    self.queue.put_nowait(job_id)
            except Exception:
                log.exception("looking for unfinished jobs failed")

    async def _work(self) -> None:
        while True:
            job_id = await self.queue.get()
            try:
                await self.process(job_id)
            except Exception:
                log.exception("ingest job crashed", extra={"job_id": job_id})
            finally:
                self.queue.task_done()

    async def process(self, job_id: str) -> None:
        work = await self.store.claim(job_id)
        if work is None:
            return  # done already, or another worker has it
        job, document = work.job, work.document
        self._notify(job_id)
        token = principal_var.set(Principal(job.tenant_id, job.user_id))
        try:
            if job.version != document.version:
                await self._finish(job_id, document.id, 0, "superseded by a newer version")
                return
            text = to_text(work.content, document.content_type)
            await self._progress(job_id, stage="chunking", progress=0.1)
            # The document's metadata goes on every chunk, so searches can filter on it.
            chunks = [
                TextChunk(c.position, c.text, {**document.metadata_, **c.metadata})
                for c in chunk_text(
                    text, self.settings.chunk_size_chars, self.settings.chunk_overlap_chars
                )
            ]
            await self._progress(job_id, stage="indexing", progress=0.2, chunks_total=len(chunks))
            for start in range(0, len(chunks), BATCH):
                batch = chunks[start : start + BATCH]
                await self.index.index(
                    document.knowledge_base_id,
                    document.id,
                    document.version,
                    document.title,
                    document.filename,
                    batch,
                    replace=False,
                )
                done = start + len(batch)
                await self._progress(
                    job_id, chunks_indexed=done, progress=0.2 + 0.8 * done / len(chunks)
                )
            # Only now drop the previous version's chunks: search never sees a gap.
            await self.index.index(
                document.knowledge_base_id,
                document.id,
                document.version,
                document.title,
                document.filename,
                [],
                replace=True,
            )
            await self._finish(job_id, document.id, len(chunks), "")
        except ParleyError as error:
            await self._finish(job_id, document.id, 0, error.message)
        except grpc.RpcError as error:
            failure = from_rpc_error(error)
            await self._finish(job_id, document.id, 0, f"indexing failed: {failure.message}")
        finally:
            principal_var.reset(token)

    async def _finish(self, job_id: str, document_id: str, chunks: int, error: str) -> None:
        await self.store.finish(job_id, document_id, chunks=chunks, error=error)
        JOBS.labels("failed" if error else "succeeded").inc()
        if error:
            log.warning("ingest job failed", extra={"job_id": job_id, "error": error})
        self._notify(job_id)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
