"""A tenant's documents and jobs as clients see them: storing an upload and queueing its job,
listing, deleting, and following a job to its end.

Every call takes the principal it acts for (the servicer reads it from the request) and sees
only that principal's tenant.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

from parley_ingest.adapters.store import TERMINAL, Created, IngestStore, NewDocument
from parley_ingest.index import ChunkIndex
from parley_ingest.jobs import JobRunner
from parley_ingest.parsing import to_text
from parley_ingest.tables import DocumentRow, JobRow
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, ResourceExhausted

# A watch re-reads the job this often even without a local notification, so it also sees
# progress made by another replica's worker.
WATCH_POLL_SECONDS = 1.0


def _check(content: bytes, content_type: str) -> str:
    """Validate the bytes as a document (UTF-8 text with something in it); their sha256."""
    if not to_text(content, content_type).strip():
        raise InvalidArgument("content: the document has no text", code="empty_document")
    return hashlib.sha256(content).hexdigest()


class Documents:
    """Documents and jobs over the store, the job worker and the chunk index."""

    def __init__(
        self, store: IngestStore, jobs: JobRunner, index: ChunkIndex, max_bytes: int
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.index = index
        self.max_bytes = max_bytes

    def too_large(self) -> ResourceExhausted:
        """The error for a document over the size limit (naming the limit)."""
        return ResourceExhausted(
            f"content: the document exceeds the limit of {self.max_bytes} bytes",
            code="document_too_large",
        )

    async def create(self, who: Principal, new: NewDocument, content: bytes) -> Created:
        """Store an upload and queue its job, unless the same bytes are stored already."""
        if len(content) > self.max_bytes:
            raise self.too_large()
        # Decoding and hashing up to the size limit is CPU work: keep it off the loop.
        sha256 = await asyncio.to_thread(_check, content, new.content_type)
        created = await self.store.create(who, new, content, sha256)
        if not created.deduplicated:
            self.jobs.submit(created.job.id)
        return created

    async def document(self, who: Principal, document_id: str) -> DocumentRow:
        """One document's record."""
        return await self.store.document(who, document_id)

    async def page(
        self,
        who: Principal,
        knowledge_base_id: str,
        size: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[DocumentRow], bool]:
        """Up to ``size`` documents, newest first, after the (created, id) cursor; and
        whether more follow."""
        rows = await self.store.documents(who, knowledge_base_id, size + 1, after)
        return rows[:size], len(rows) > size

    async def delete(self, who: Principal, document_id: str) -> None:
        """Delete a document: its chunks in retrieval first, then its records (a failure
        leaves everything in place, to be retried)."""
        document = await self.store.document(who, document_id)
        await self.index.delete(who, document.knowledge_base_id, document.id)
        await self.store.delete(who, document.id)

    async def job(self, who: Principal, job_id: str) -> JobRow:
        """One job's state and progress."""
        return await self.store.job(who, job_id)

    async def watch(self, who: Principal, job_id: str) -> AsyncIterator[JobRow]:
        """The job each time it changes, ending after it succeeds or fails."""
        last: tuple[object, ...] | None = None
        while True:
            job = await self.store.job(who, job_id)
            seen = (job.state, job.stage, job.chunks_indexed, job.error)
            if seen != last:
                last = seen
                yield job
            if job.state in TERMINAL:
                return
            await self.jobs.changed(job.id, WATCH_POLL_SECONDS)
