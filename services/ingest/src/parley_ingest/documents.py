"""A tenant's documents and jobs as clients see them: storing an upload and queueing its job,
listing (documents, and the knowledge bases they make), deleting, indexing again, and
following a job to its end.

Every call takes the principal it acts for (the servicer reads it from the request) and sees
only that principal's tenant.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

from parley_ingest.adapters.store import (
    TERMINAL,
    Created,
    IngestStore,
    KnowledgeBase,
    NewDocument,
    Reindexed,
)
from parley_ingest.index import ChunkIndex
from parley_ingest.jobs import JobRunner
from parley_ingest.parsers.html import visible_text
from parley_ingest.parsers.text import decode
from parley_ingest.sniffing import HTML, MARKDOWN, TEXT, sniff
from parley_ingest.tables import DocumentRow, JobRow
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, NotFound, ResourceExhausted

# A watch re-reads the job this often even without a local notification, so it also sees
# progress made by another replica's worker.
WATCH_POLL_SECONDS = 1.0
# A re-index answers with at most this many of the documents it queued (it counts them all).
MAX_REINDEXED_LISTED = 100


def _inspect(content: bytes, new: NewDocument) -> tuple[str, str]:
    """The document's content type, read from its bytes, and their sha256. A text is checked
    in full here (UTF-8, something in it), so a bad one is refused at once; a PDF or Word
    file is opened by its job, whose failure says what is wrong with it."""
    content_type = sniff(content, new.content_type, new.filename)
    if content_type in (TEXT, MARKDOWN, HTML):
        text = decode(content)
        if not (visible_text(text) if content_type == HTML else text).strip():
            raise InvalidArgument("content: the document has no text", code="empty_document")
    return content_type, hashlib.sha256(content).hexdigest()


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
        # Sniffing, decoding and hashing up to the size limit is CPU work: keep it off the loop.
        content_type, sha256 = await asyncio.to_thread(_inspect, content, new)
        new = dataclasses.replace(new, content_type=content_type)
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

    async def knowledge_bases(
        self, who: Principal, size: int, after: str | None
    ) -> tuple[list[KnowledgeBase], bool]:
        """Up to ``size`` of the tenant's knowledge bases by name, after the name ``after``;
        and whether more follow."""
        rows = await self.store.knowledge_bases(who, size + 1, after)
        return rows[:size], len(rows) > size

    async def reindex(
        self, who: Principal, knowledge_base_id: str, document_id: str | None
    ) -> tuple[int, list[Reindexed]]:
        """Index the knowledge base's documents (or the one named) again from their stored
        bytes: each gets a new version and a queued job, taken up here or by any replica.
        Returns how many were queued, and the first :data:`MAX_REINDEXED_LISTED` of them."""
        if document_id is not None:
            document = await self.store.document(who, document_id)
            if document.knowledge_base_id != knowledge_base_id:
                raise NotFound(
                    f"document {document_id!r} not found in knowledge base {knowledge_base_id!r}",
                    code="document_not_found",
                )
        queued = 0
        listed: list[Reindexed] = []
        async for batch in self.store.reindex(who.tenant_id, knowledge_base_id, document_id):
            for done in batch:
                self.jobs.submit(done.job_id)
            queued += len(batch)
            listed += batch[: MAX_REINDEXED_LISTED - len(listed)]
        return queued, listed

    async def delete(self, who: Principal, document_id: str) -> None:
        """Delete a document: its chunks in retrieval first, then its records (a failure
        leaves everything in place, to be retried)."""
        document = await self.store.document(who, document_id)
        await self._remove_chunks(who, document)
        await self.store.delete(who, document.id)

    async def _remove_chunks(self, who: Principal, document: DocumentRow) -> int:
        """Remove a document's chunks, marking it first: a job indexing it on any replica
        then removes what it adds, even when its call lands after this one."""
        await self.store.mark_deleting(who, document.id)
        return await self.index.delete(who, document.knowledge_base_id, document.id)

    async def user_documents(self, who: Principal) -> list[DocumentRow]:
        """Every document the principal's user created, oldest first."""
        return await self.store.user_documents(who)

    async def delete_user(self, who: Principal) -> tuple[int, int, int]:
        """Delete every document the principal's user created (chunks first, as ``delete``
        does) and remove the user from every other job; return how many documents, jobs and
        chunks were deleted. A failure stops it part way: calling again finishes it."""
        documents = jobs = chunks = 0
        for document in await self.store.user_documents(who):
            try:
                chunks += await self._remove_chunks(who, document)
                jobs += await self.store.delete(who, document.id)
            except NotFound:
                continue  # deleted meanwhile by another request
            documents += 1
        jobs += await self.store.forget_user_jobs(who)
        return documents, jobs, chunks

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
