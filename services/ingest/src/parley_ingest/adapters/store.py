"""Documents, their bytes and jobs in ingest's own database.

Calls made for a client take its principal and filter on its tenant; the job worker's calls
are internal and address jobs by id. A running job carries its worker (this replica's name)
and a lease: past the lease any replica may take the job over, and the worker's own next
process takes it back at start.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from parley_ingest.tables import DocumentContentRow, DocumentRow, JobRow
from parley_runtime.context import Principal
from parley_runtime.errors import NotFound, Unavailable
from parley_runtime.ids import new_id
from parley_runtime.timestamps import utcnow

PENDING, PROCESSING, READY, FAILED = "pending", "processing", "ready", "failed"
QUEUED, RUNNING, SUCCEEDED = "queued", "running", "succeeded"
JOB_FAILED = "failed"
TERMINAL = (SUCCEEDED, JOB_FAILED)


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document as a client describes it, before it is stored."""

    knowledge_base_id: str
    title: str
    filename: str
    content_type: str
    metadata: dict[str, str]
    external_id: str


@dataclass(frozen=True, slots=True)
class Created:
    """The outcome of storing an upload; ``deduplicated`` when the bytes were known."""

    document: DocumentRow
    job: JobRow
    deduplicated: bool


@dataclass(frozen=True, slots=True)
class Work:
    """What a worker needs to process a job."""

    job: JobRow
    document: DocumentRow
    content: bytes


class IngestStore:
    """The repository of the ingest service (see the module docstring)."""

    def __init__(self, engine: AsyncEngine, worker: str = "", lease_seconds: float = 30.0) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        self.worker = worker
        self.lease = timedelta(seconds=lease_seconds)

    async def create(
        self, who: Principal, new: NewDocument, content: bytes, sha256: str
    ) -> Created:
        """A new document, a new version of one (same external id), or the existing one
        with the same bytes. Identical bytes whose document FAILED get a new job instead:
        otherwise a document that failed (say, retrieval was down) could never be retried."""
        for _ in range(3):
            existing = await self._by_content(who, new.knowledge_base_id, sha256)
            if existing is not None:
                if existing.document.status != FAILED:
                    return existing
                if retried := await self._retry(existing.document):
                    return retried
                continue  # a concurrent retry or new version changed it; look again
            try:
                return await self._write(who, new, content, sha256)
            except IntegrityError:
                continue  # a concurrent upload of the same bytes or external id won
        existing = await self._by_content(who, new.knowledge_base_id, sha256)
        if existing is None:
            raise Unavailable("the document changed while it was stored; retry", code="conflict")
        return existing

    async def _retry(self, document: DocumentRow) -> Created | None:
        """A fresh job for a FAILED document's current version (its bytes are stored);
        None when the document stopped being FAILED meanwhile."""
        at = utcnow()
        job = _new_job(document.id, document.tenant_id, document.user_id, document.version, at)
        async with self.sessions.begin() as session:
            changed = await session.execute(
                update(DocumentRow)
                .where(DocumentRow.id == document.id, DocumentRow.status == FAILED)
                .values(status=PENDING, error="", job_id=job.id, updated_at=at)
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add(job)
            row = await session.get(DocumentRow, document.id, populate_existing=True)
            assert row is not None
        return Created(row, job, deduplicated=False)

    async def _by_content(self, who: Principal, kb: str, sha256: str) -> Created | None:
        async with self.sessions() as session:
            document = await session.scalar(
                select(DocumentRow).where(
                    DocumentRow.tenant_id == who.tenant_id,
                    DocumentRow.knowledge_base_id == kb,
                    DocumentRow.sha256 == sha256,
                )
            )
            if document is None:
                return None
            job = await session.get(JobRow, document.job_id)
            assert job is not None
            return Created(document, job, deduplicated=True)

    async def _write(
        self, who: Principal, new: NewDocument, content: bytes, sha256: str
    ) -> Created:
        at = utcnow()
        async with self.sessions.begin() as session:
            document = None
            if new.external_id:
                document = await session.scalar(
                    select(DocumentRow).where(
                        DocumentRow.tenant_id == who.tenant_id,
                        DocumentRow.knowledge_base_id == new.knowledge_base_id,
                        DocumentRow.external_id == new.external_id,
                    )
                )
            job_id = new_id("job")
            if document is None:
                document = DocumentRow(
                    id=new_id("doc"),
                    tenant_id=who.tenant_id,
                    user_id=who.user_id,
                    knowledge_base_id=new.knowledge_base_id,
                    external_id=new.external_id or None,
                    version=1,
                    created_at=at,
                )
                session.add(document)
                new_content: DocumentContentRow | None = DocumentContentRow(
                    document_id=document.id, content=content
                )
            else:
                new_content = None
                document.version += 1
                stored = await session.get(DocumentContentRow, document.id)
                assert stored is not None
                stored.content = content
            document.title = new.title or new.filename or "untitled"
            document.filename = new.filename
            document.content_type = new.content_type
            document.size_bytes = len(content)
            document.sha256 = sha256
            document.status = PENDING
            document.chunk_count = 0
            document.metadata_ = dict(new.metadata)
            document.error = ""
            document.job_id = job_id
            document.updated_at = at
            await session.flush()
            if new_content is not None:
                # Added after the document's row exists (no ORM relationship orders them).
                session.add(new_content)
            job = _new_job(document.id, who.tenant_id, who.user_id, document.version, at, job_id)
            session.add(job)
        return Created(document, job, deduplicated=False)

    async def document(self, who: Principal, document_id: str) -> DocumentRow:
        """The tenant's document; another tenant's id is as unknown as a made-up one."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(DocumentRow).where(
                    DocumentRow.id == document_id, DocumentRow.tenant_id == who.tenant_id
                )
            )
        if row is None:
            raise NotFound(f"document {document_id!r} not found", code="document_not_found")
        return row

    async def documents(
        self, who: Principal, kb: str, limit: int, after: tuple[datetime, str] | None
    ) -> list[DocumentRow]:
        query = (
            select(DocumentRow)
            .where(DocumentRow.tenant_id == who.tenant_id, DocumentRow.knowledge_base_id == kb)
            .order_by(DocumentRow.created_at.desc(), DocumentRow.id.desc())
            .limit(limit)
        )
        if after is not None:
            at, did = after
            query = query.where(
                (DocumentRow.created_at < at)
                | ((DocumentRow.created_at == at) & (DocumentRow.id < did))
            )
        async with self.sessions() as session:
            return list((await session.scalars(query)).all())

    async def delete(self, who: Principal, document_id: str) -> None:
        async with self.sessions.begin() as session:
            row = await session.scalar(
                select(DocumentRow).where(
                    DocumentRow.id == document_id, DocumentRow.tenant_id == who.tenant_id
                )
            )
            if row is None:
                raise NotFound(f"document {document_id!r} not found", code="document_not_found")
            await session.execute(delete(JobRow).where(JobRow.document_id == document_id))
            await session.execute(
                delete(DocumentContentRow).where(DocumentContentRow.document_id == document_id)
            )
            await session.delete(row)

    async def job(self, who: Principal, job_id: str) -> JobRow:
        """The tenant's job; another tenant's id is as unknown as a made-up one."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(JobRow).where(JobRow.id == job_id, JobRow.tenant_id == who.tenant_id)
            )
        if row is None:
            raise NotFound(f"job {job_id!r} not found", code="job_not_found")
        return row

    # -- the worker's side ------------------------------------------------------------------

    async def claim(self, job_id: str) -> Work | None:
        """Take a queued job (or one whose worker's lease ran out); None if it is not ours."""
        at = utcnow()
        async with self.sessions.begin() as session:
            taken = await session.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    or_(
                        JobRow.state == QUEUED,
                        (JobRow.state == RUNNING) & (JobRow.lease_until < at),
                    ),
                )
                .values(
                    state=RUNNING,
                    stage="parsing",
                    lease_until=at + self.lease,
                    worker=self.worker or None,
                    updated_at=at,
                )
            )
            if taken.rowcount != 1:  # type: ignore[attr-defined]
                return None
            job = await session.get(JobRow, job_id)
            assert job is not None
            document = await session.get(DocumentRow, job.document_id)
            content = await session.get(DocumentContentRow, job.document_id)
            if document is None or content is None:
                return None
            if document.job_id == job_id:  # a superseded job does not speak for the document
                document.status = PROCESSING
                document.updated_at = at
        return Work(job, document, content.content)

    async def renew(self, job_id: str) -> None:
        """Extend a running job's lease (the worker's heartbeat)."""
        mine = JobRow.worker == self.worker if self.worker else JobRow.worker.is_(None)
        async with self.sessions.begin() as session:
            # Only while it is still ours: a replica that took it over owns the lease now.
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING, mine)
                .values(lease_until=utcnow() + self.lease)
            )

    async def release(self, job_ids: list[str]) -> None:
        """Put running jobs back in the queue (this process is stopping), so the next
        process takes them up at once instead of waiting for their leases to lapse."""
        if not job_ids:
            return
        at = utcnow()
        async with self.sessions.begin() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(job_ids), JobRow.state == RUNNING)
                .values(state=QUEUED, stage="queued", lease_until=None, worker=None, updated_at=at)
            )
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.job_id.in_(job_ids), DocumentRow.status == PROCESSING)
                .values(status=PENDING, updated_at=at)
            )

    async def release_own(self) -> int:
        """Put the jobs this replica's previous process left running back in the queue (it
        died, and nothing of this process works on them yet); return how many."""
        if not self.worker:
            return 0
        at = utcnow()
        async with self.sessions.begin() as session:
            own = select(JobRow.id).where(JobRow.state == RUNNING, JobRow.worker == self.worker)
            ids = list((await session.scalars(own)).all())
            if not ids:
                return 0
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.job_id.in_(ids), DocumentRow.status == PROCESSING)
                .values(status=PENDING, updated_at=at)
            )
            # The worker named again: another replica may have taken a job over meanwhile.
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(ids), JobRow.state == RUNNING, JobRow.worker == self.worker)
                .values(state=QUEUED, stage="queued", lease_until=None, worker=None, updated_at=at)
            )
        return len(ids)

    async def current_version(self, document_id: str) -> int | None:
        """The document's current version, or None once it is deleted."""
        async with self.sessions() as session:
            version: int | None = await session.scalar(
                select(DocumentRow.version).where(DocumentRow.id == document_id)
            )
            return version

    async def progress(self, job_id: str, **values: Any) -> None:
        at = utcnow()
        async with self.sessions.begin() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(**values, lease_until=at + self.lease, updated_at=at)
            )

    async def finish(self, job_id: str, document_id: str, *, chunks: int, error: str = "") -> None:
        at = utcnow()
        ok = not error
        async with self.sessions.begin() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id)
                .values(
                    state=SUCCEEDED if ok else JOB_FAILED,
                    stage="done" if ok else "failed",
                    progress=1.0 if ok else JobRow.progress,
                    error=error,
                    lease_until=None,
                    worker=None,
                    updated_at=at,
                )
            )
            # Only the job of the document's current version speaks for the document.
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.id == document_id, DocumentRow.job_id == job_id)
                .values(
                    status=READY if ok else FAILED,
                    chunk_count=chunks if ok else DocumentRow.chunk_count,
                    error=error,
                    updated_at=at,
                )
            )

    async def unfinished(self) -> list[str]:
        """Jobs to (re)start: queued, or running with a lapsed lease."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(JobRow.id)
                .where(
                    or_(
                        JobRow.state == QUEUED,
                        (JobRow.state == RUNNING) & (JobRow.lease_until < utcnow()),
                    )
                )
                .order_by(JobRow.created_at)
            )
            return list(rows.all())


def _new_job(
    document_id: str, tenant_id: str, user_id: str, version: int, at: datetime, job_id: str = ""
) -> JobRow:
    return JobRow(
        id=job_id or new_id("job"),
        document_id=document_id,
        tenant_id=tenant_id,
        user_id=user_id,
        version=version,
        state=QUEUED,
        stage="queued",
        progress=0.0,
        chunks_total=0,
        chunks_indexed=0,
        error="",
        created_at=at,
        updated_at=at,
    )
