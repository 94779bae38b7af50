"""ingest's tables: documents, their bytes, and the jobs that index them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """The metadata of ingest's tables (and nothing else: Alembic compares against it)."""


class DocumentRow(Base):
    """A document's current version: what clients list, read and delete."""

    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    knowledge_base_id: Mapped[str] = mapped_column(String(200))
    title: Mapped[str] = mapped_column(String(300))
    filename: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    chunk_count: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict[str, str]] = mapped_column("metadata", JSON)
    error: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str] = mapped_column(String(40), default="")
    external_id: Mapped[str | None] = mapped_column(String(300), nullable=True)
    job_id: Mapped[str] = mapped_column(String(40))
    # Set when a deletion starts, before its chunks are removed: a job indexing the document
    # meanwhile sees it and removes what it added (its call may land after the deletion's).
    deleting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("tenant_id", "knowledge_base_id", "sha256", name="uq_documents_content"),
        UniqueConstraint(
            "tenant_id", "knowledge_base_id", "external_id", name="uq_documents_external_id"
        ),
        Index("ix_documents_kb_created", "tenant_id", "knowledge_base_id", "created_at", "id"),
    )


class DocumentContentRow(Base):
    """The bytes of a document's current version (kept apart: rows stay small to list)."""

    __tablename__ = "document_contents"

    document_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    content: Mapped[bytes] = mapped_column(LargeBinary)


class JobRow(Base):
    """The work of parsing, chunking and indexing one document version, with its progress."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    document_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("documents.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[str] = mapped_column(String(128))
    user_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float)
    chunks_total: Mapped[int] = mapped_column(Integer)
    chunks_indexed: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(Text)
    error_code: Mapped[str] = mapped_column(String(40), default="")
    # Attempts started (claims); past the service's limit the job fails instead of running.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # A queued job waiting for a retry is not claimed before then.
    retry_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A worker owns a running job until then; past it, any replica may take the job over.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The replica working on a running job: its next process takes the job back at start.
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # The W3C trace context of the upload that queued the job: its runs link to that trace.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("ix_jobs_state", "state"),
        # Deleting a document deletes its jobs; PostgreSQL does not index foreign keys itself.
        Index("ix_jobs_document_id", "document_id"),
    )
