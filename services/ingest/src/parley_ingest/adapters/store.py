"""Documents, their bytes and jobs in ingest's own database.

Calls made for a client take its principal and filter on its tenant; the job worker's calls
are internal and address jobs by id. A running job carries its worker (this replica's name)
and a lease: past the lease any replica may take the job over, and the worker's own next
process takes it back at start. A document has at most one running job, whichever replica
runs it: a claim locks the document's row while it checks (see :meth:`IngestStore.claim`).

The worker's calls on every job (claim, progress, the version check, finish, the next job of
the document) run as one plain function of a connection each (``parley_runtime.db``): on the
SQLite file of the embedded defaults, one thread hand-off a transaction where the async
driver makes three or four a statement, and reads on the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Session, aliased

from parley_ingest.tables import DocumentContentRow, DocumentRow, JobRow
from parley_runtime import db, telemetry
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
class Reindexed:
    """A document given a new version of its stored bytes, and the job queued to index it."""

    tenant_id: str
    knowledge_base_id: str
    document_id: str
    version: int
    job_id: str


@dataclass(frozen=True, slots=True)
class KnowledgeBase:
    """A knowledge base as its documents make it: how many, by status, and when one last
    changed."""

    name: str
    documents: int
    by_status: dict[str, int]
    updated_at: datetime


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
                .values(
                    status=PENDING,
                    error="",
                    error_code="",
                    job_id=job.id,
                    deleting_since=None,  # sent again after a deletion that failed: revived
                    updated_at=at,
                )
            )
            if changed.rowcount != 1:  # type: ignore[attr-defined]
                return None
            session.add(job)
            row = await session.get(DocumentRow, document.id, populate_existing=True)
            assert row is not None
        return Created(row, job, deduplicated=False)

    async def _by_content(self, who: Principal, kb: str, sha256: str) -> Created | None:
        return await db.reading(self.engine, _by_content, who.tenant_id, kb, sha256)

    async def _write(
        self, who: Principal, new: NewDocument, content: bytes, sha256: str
    ) -> Created:
        return await db.transaction(self.engine, _write, who, new, content, sha256, utcnow())

    async def document(self, who: Principal, document_id: str) -> DocumentRow:
        """The tenant's document; another tenant's id is as unknown as a made-up one."""
        query = select(DocumentRow).where(
            DocumentRow.id == document_id, DocumentRow.tenant_id == who.tenant_id
        )
        rows: list[DocumentRow] = await db.reading(self.engine, _objects, query)
        if not rows:
            raise NotFound(f"document {document_id!r} not found", code="document_not_found")
        return rows[0]

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
        found: list[DocumentRow] = await db.reading(self.engine, _objects, query)
        return found

    async def mark_deleting(self, who: Principal, document_id: str) -> None:
        """Mark the tenant's document as being deleted, before its chunks are removed: from
        now on a job indexing it removes what it adds (see ``current_version``)."""
        async with self.sessions.begin() as session:
            marked = await session.execute(
                update(DocumentRow)
                .where(DocumentRow.id == document_id, DocumentRow.tenant_id == who.tenant_id)
                .values(deleting_since=utcnow())
            )
        if marked.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFound(f"document {document_id!r} not found", code="document_not_found")

    async def delete(self, who: Principal, document_id: str) -> int:
        """Delete the tenant's document, its bytes and its jobs; return how many jobs."""
        async with self.sessions.begin() as session:
            row = await session.scalar(
                select(DocumentRow).where(
                    DocumentRow.id == document_id, DocumentRow.tenant_id == who.tenant_id
                )
            )
            if row is None:
                raise NotFound(f"document {document_id!r} not found", code="document_not_found")
            jobs = await session.execute(delete(JobRow).where(JobRow.document_id == document_id))
            await session.execute(
                delete(DocumentContentRow).where(DocumentContentRow.document_id == document_id)
            )
            await session.delete(row)
        return int(jobs.rowcount)  # type: ignore[attr-defined]

    async def user_documents(self, who: Principal) -> list[DocumentRow]:
        """Every document the principal's user created in its tenant, oldest first."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(DocumentRow)
                .where(DocumentRow.tenant_id == who.tenant_id, DocumentRow.user_id == who.user_id)
                .order_by(DocumentRow.created_at, DocumentRow.id)
            )
            return list(rows.all())

    async def forget_user_jobs(self, who: Principal) -> int:
        """Remove the user's name from the jobs left after their documents were deleted
        (versions they uploaded of other users' documents): a document's current job is
        handed to the document's creator (it still speaks for the document), the others are
        deleted. Returns how many were deleted."""
        mine = (JobRow.tenant_id == who.tenant_id) & (JobRow.user_id == who.user_id)
        async with self.sessions.begin() as session:
            current = select(DocumentRow.id).where(DocumentRow.job_id == JobRow.id)
            creator = (
                select(DocumentRow.user_id)
                .where(DocumentRow.id == JobRow.document_id)
                .scalar_subquery()
            )
            await session.execute(
                update(JobRow).where(mine, current.exists()).values(user_id=creator)
            )
            deleted = await session.execute(delete(JobRow).where(mine))
        return int(deleted.rowcount)  # type: ignore[attr-defined]

    async def job(self, who: Principal, job_id: str) -> JobRow:
        """The tenant's job; another tenant's id is as unknown as a made-up one."""
        async with self.sessions() as session:
            row = await session.scalar(
                select(JobRow).where(JobRow.id == job_id, JobRow.tenant_id == who.tenant_id)
            )
        if row is None:
            raise NotFound(f"job {job_id!r} not found", code="job_not_found")
        return row

    async def knowledge_bases(
        self, who: Principal, limit: int, after: str | None
    ) -> list[KnowledgeBase]:
        """Up to ``limit`` of the tenant's knowledge bases (names its documents carry), by
        name, after the name ``after``."""
        statuses = (PENDING, PROCESSING, READY, FAILED)
        counts = [func.sum(case((DocumentRow.status == s, 1), else_=0)) for s in statuses]
        query = (
            select(
                DocumentRow.knowledge_base_id,
                func.count(),
                func.max(DocumentRow.updated_at),
                *counts,
            )
            .where(DocumentRow.tenant_id == who.tenant_id)
            .group_by(DocumentRow.knowledge_base_id)
            .order_by(DocumentRow.knowledge_base_id)
            .limit(limit)
        )
        if after is not None:
            query = query.where(DocumentRow.knowledge_base_id > after)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [
            KnowledgeBase(
                name=name,
                documents=int(total),
                by_status={s: int(n or 0) for s, n in zip(statuses, by_status, strict=True)},
                updated_at=updated_at,
            )
            for name, total, updated_at, *by_status in rows
        ]

    async def reindex(
        self,
        tenant_id: str | None,
        knowledge_base_id: str | None = None,
        document_id: str | None = None,
        batch: int = 200,
    ) -> AsyncIterator[list[Reindexed]]:
        """Give each document in scope that is not being deleted a new version of its stored
        bytes and a queued job, as an upload of a new version would; yield them a committed
        batch at a time, oldest first. The scope is a tenant (None: every tenant), narrowed
        to a knowledge base, or to one document. A document changed meanwhile (a new version
        uploaded, a deletion begun) is left to that change."""
        scope: list[ColumnElement[bool]] = [DocumentRow.deleting_since.is_(None)]
        if tenant_id is not None:
            scope.append(DocumentRow.tenant_id == tenant_id)
        if knowledge_base_id is not None:
            scope.append(DocumentRow.knowledge_base_id == knowledge_base_id)
        if document_id is not None:
            scope.append(DocumentRow.id == document_id)
        last = ""
        while True:
            at = utcnow()
            done: list[Reindexed] = []
            async with self.sessions.begin() as session:
                rows = (
                    await session.execute(
                        select(
                            DocumentRow.id,
                            DocumentRow.version,
                            DocumentRow.tenant_id,
                            DocumentRow.user_id,
                            DocumentRow.knowledge_base_id,
                        )
                        .where(*scope, DocumentRow.id > last)
                        .order_by(DocumentRow.id)
                        .limit(batch)
                    )
                ).all()
                for found, version, tenant, user, kb in rows:
                    # As the document's creator: chunks are filed under the document's tenant.
                    job = _new_job(found, tenant, user, version + 1, at)
                    changed = await session.execute(
                        update(DocumentRow)
                        .where(
                            DocumentRow.id == found,
                            DocumentRow.version == version,
                            DocumentRow.deleting_since.is_(None),
                        )
                        .values(
                            version=version + 1,
                            status=PENDING,
                            error="",
                            error_code="",
                            job_id=job.id,
                            updated_at=at,
                        )
                    )
                    if changed.rowcount == 1:  # type: ignore[attr-defined]
                        session.add(job)
                        done.append(Reindexed(tenant, kb, found, version + 1, job.id))
            if done:
                yield done
            if len(rows) < batch:
                return
            last = rows[-1][0]

    async def reindex_counts(
        self, tenant_id: str | None, knowledge_base_id: str | None = None
    ) -> list[tuple[str, str, int]]:
        """(tenant, knowledge base, documents) that :meth:`reindex` would give a new
        version, by tenant and name."""
        query = (
            select(DocumentRow.tenant_id, DocumentRow.knowledge_base_id, func.count())
            .where(DocumentRow.deleting_since.is_(None))
            .group_by(DocumentRow.tenant_id, DocumentRow.knowledge_base_id)
            .order_by(DocumentRow.tenant_id, DocumentRow.knowledge_base_id)
        )
        if tenant_id is not None:
            query = query.where(DocumentRow.tenant_id == tenant_id)
        if knowledge_base_id is not None:
            query = query.where(DocumentRow.knowledge_base_id == knowledge_base_id)
        async with self.sessions() as session:
            rows = (await session.execute(query)).all()
        return [(tenant, kb, int(count)) for tenant, kb, count in rows]

    # -- the worker's side ------------------------------------------------------------------

    async def claim(self, job_id: str) -> Work | None:
        """Take a queued job that is due (or one whose worker's lease ran out), counting the
        attempt; None if it is not ours to run: done, deleted, running elsewhere, waiting
        for a retry, or another job of its document is running (on any replica)."""
        return await db.transaction(
            self.engine, _claim, job_id, utcnow(), self.lease, self.worker or None
        )

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
        process takes them up at once instead of waiting for their leases to lapse. A stop
        is no fault of the job's: the attempt it interrupted is not counted."""
        if not job_ids:
            return
        at = utcnow()
        mine = JobRow.worker == self.worker if self.worker else JobRow.worker.is_(None)
        async with self.sessions.begin() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(job_ids), JobRow.state == RUNNING, mine)
                .values(
                    state=QUEUED,
                    stage="queued",
                    attempts=JobRow.attempts - 1,
                    lease_until=None,
                    worker=None,
                    updated_at=at,
                )
            )
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.job_id.in_(job_ids), DocumentRow.status == PROCESSING)
                .values(status=PENDING, updated_at=at)
            )

    async def release_own(self, backoff: Callable[[int], float] = lambda attempts: 0.0) -> int:
        """Put the jobs this replica's previous process left running back in the queue (it
        died, and nothing of this process works on them yet); return how many. Each is due
        ``backoff(attempts)`` seconds from now: a job that keeps killing its worker (a file
        that exhausts memory, say) is tried again less and less often, until its attempts
        run out."""
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
            attempts = await session.execute(
                select(JobRow.id, JobRow.attempts).where(JobRow.id.in_(ids))
            )
            for job_id, count in attempts.all():
                delay = backoff(count)
                # The worker named again: another replica may have taken it over meanwhile.
                still_ours = (JobRow.state == RUNNING) & (JobRow.worker == self.worker)
                await session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, still_ours)
                    .values(
                        state=QUEUED,
                        stage="queued",
                        retry_at=at + timedelta(seconds=delay) if delay > 0 else None,
                        lease_until=None,
                        worker=None,
                        updated_at=at,
                    )
                )
        return len(ids)

    async def current_version(self, document_id: str) -> int | None:
        """The document's current version; None once it is deleted, or being deleted."""
        query = select(DocumentRow.version).where(
            DocumentRow.id == document_id, DocumentRow.deleting_since.is_(None)
        )
        version: int | None = await db.reading(self.engine, Connection.scalar, query)
        return version

    async def progress(self, job_id: str, **values: Any) -> None:
        at = utcnow()
        statement = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(**values, lease_until=at + self.lease, updated_at=at)
        )
        await db.transaction(self.engine, _execute, statement)

    async def finish(
        self, job_id: str, document_id: str, *, chunks: int, error: str = "", code: str = ""
    ) -> None:
        """End a job: SUCCEEDED, or FAILED with ``error`` and its ``code``; the document
        follows when the job is its current one."""
        at = utcnow()
        ok = not error
        job = (
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(
                state=SUCCEEDED if ok else JOB_FAILED,
                stage="done" if ok else "failed",
                progress=1.0 if ok else JobRow.progress,
                chunks_indexed=chunks if ok else JobRow.chunks_indexed,
                error=error,
                error_code=code,
                retry_at=None,
                lease_until=None,
                worker=None,
                updated_at=at,
            )
        )
        # Only the job of the document's current version speaks for the document.
        document = (
            update(DocumentRow)
            .where(DocumentRow.id == document_id, DocumentRow.job_id == job_id)
            .values(
                status=READY if ok else FAILED,
                chunk_count=chunks if ok else DocumentRow.chunk_count,
                error=error,
                error_code=code,
                updated_at=at,
            )
        )
        await db.transaction(self.engine, _execute, job, document)

    async def retry_later(
        self, job_id: str, document_id: str, delay: float, *, error: str, code: str
    ) -> None:
        """Put a job whose attempt failed for a passing reason back in the queue, due in
        ``delay`` seconds; its error says why meanwhile. Its document waits (PENDING)."""
        at = utcnow()
        async with self.sessions.begin() as session:
            await session.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.state == RUNNING)
                .values(
                    state=QUEUED,
                    stage="queued",
                    error=error,
                    error_code=code,
                    retry_at=at + timedelta(seconds=delay),
                    lease_until=None,
                    worker=None,
                    updated_at=at,
                )
            )
            await session.execute(
                update(DocumentRow)
                .where(DocumentRow.id == document_id, DocumentRow.job_id == job_id)
                .values(status=PENDING, updated_at=at)
            )

    async def unfinished(self) -> list[str]:
        """Jobs to (re)start: queued and due, or running with a lapsed lease."""
        async with self.sessions() as session:
            rows = await session.scalars(
                select(JobRow.id).where(_claimable(utcnow())).order_by(JobRow.created_at)
            )
            return list(rows.all())

    async def queued(self) -> int:
        """How many jobs wait in the queue, due or not (every replica's)."""
        async with self.sessions() as session:
            count = await session.scalar(select(func.count()).where(JobRow.state == QUEUED))
            return int(count or 0)

    async def queued_of(self, document_id: str) -> list[str]:
        """The document's jobs that are queued and due, oldest first: the next to run once
        its running job ends."""
        query = (
            select(JobRow.id)
            .where(JobRow.document_id == document_id, _claimable(utcnow()))
            .order_by(JobRow.created_at)
        )
        ids: list[str] = await db.reading(self.engine, _scalars, query)
        return ids


def _objects(conn: Connection, query: Any) -> list[Any]:
    """The ORM objects ``query`` selects, detached from ``conn``."""
    with Session(bind=conn, expire_on_commit=False) as session:
        found = list(session.scalars(query).all())
        session.expunge_all()
    return found


def _by_content(conn: Connection, tenant_id: str, kb: str, sha256: str) -> Created | None:
    """The tenant's document of ``kb`` holding these bytes (by their SHA-256), with its job."""
    with Session(bind=conn, expire_on_commit=False) as session:
        document = session.scalar(
            select(DocumentRow).where(
                DocumentRow.tenant_id == tenant_id,
                DocumentRow.knowledge_base_id == kb,
                DocumentRow.sha256 == sha256,
            )
        )
        if document is None:
            return None
        job = session.get(JobRow, document.job_id)
        assert job is not None
        session.expunge_all()
    return Created(document, job, deduplicated=True)


def _write(
    conn: Connection,
    who: Principal,
    new: NewDocument,
    content: bytes,
    sha256: str,
    at: datetime,
) -> Created:
    """:meth:`IngestStore.create`'s transaction for new bytes: a new document, or a new
    version of the one with the same external id."""
    with Session(bind=conn, expire_on_commit=False) as session:
        document = None
        if new.external_id:
            document = session.scalar(
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
            stored = session.get(DocumentContentRow, document.id)
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
        document.error_code = ""
        document.deleting_since = None  # a new version revives a deletion that failed
        document.job_id = job_id
        document.updated_at = at
        session.flush()
        if new_content is not None:
            # Added after the document's row exists (no ORM relationship orders them).
            session.add(new_content)
        job = _new_job(document.id, who.tenant_id, who.user_id, document.version, at, job_id)
        session.add(job)
        # Written now: the connection's transaction commits when this returns.
        session.flush()
        session.expunge_all()
    return Created(document, job, deduplicated=False)


def _claim(
    conn: Connection, job_id: str, at: datetime, lease: timedelta, worker: str | None
) -> Work | None:
    """:meth:`IngestStore.claim`'s transaction."""
    # Claims of one document's jobs queue on its row (PostgreSQL; SQLite has one writer, and
    # the update below is a single statement), so two replicas cannot both see "no other job
    # running" and both start one.
    document_id = conn.scalar(
        select(DocumentRow.id)
        .join(JobRow, JobRow.document_id == DocumentRow.id)
        .where(JobRow.id == job_id)
        .with_for_update(of=DocumentRow)
    )
    if document_id is None:
        return None
    other = aliased(JobRow)
    busy = (
        select(other.id)
        .where(
            other.document_id == document_id,
            other.id != job_id,
            other.state == RUNNING,
            other.lease_until >= at,
        )
        .exists()
    )
    taken = conn.execute(
        update(JobRow)
        .where(JobRow.id == job_id, _claimable(at), ~busy)
        .values(
            state=RUNNING,
            stage="parsing",
            attempts=JobRow.attempts + 1,
            retry_at=None,
            lease_until=at + lease,
            worker=worker,
            updated_at=at,
        )
    )
    if taken.rowcount != 1:
        return None
    # A superseded job does not speak for the document.
    conn.execute(
        update(DocumentRow)
        .where(DocumentRow.id == document_id, DocumentRow.job_id == job_id)
        .values(status=PROCESSING, updated_at=at)
    )
    # The rows as objects the worker reads, detached from this connection.
    with Session(bind=conn, expire_on_commit=False) as session:
        job, document, content = session.execute(
            select(JobRow, DocumentRow, DocumentContentRow.content)
            .join(DocumentRow, DocumentRow.id == JobRow.document_id)
            .join(DocumentContentRow, DocumentContentRow.document_id == DocumentRow.id)
            .where(JobRow.id == job_id)
        ).one()
        session.expunge_all()
    return Work(job, document, content)


def _execute(conn: Connection, *statements: Any) -> None:
    for statement in statements:
        conn.execute(statement)


def _scalars(conn: Connection, query: Any) -> list[Any]:
    return list(conn.scalars(query).all())


def _claimable(at: datetime) -> ColumnElement[bool]:
    """A job that may be claimed at ``at``: queued and due, or running with a lapsed lease."""
    due = JobRow.retry_at.is_(None) | (JobRow.retry_at <= at)
    return or_(
        (JobRow.state == QUEUED) & due,
        (JobRow.state == RUNNING) & (JobRow.lease_until < at),
    )


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
        error_code="",
        attempts=0,
        # Made while serving the upload: its runs link to the upload's trace.
        traceparent=telemetry.traceparent(),
        created_at=at,
        updated_at=at,
    )
