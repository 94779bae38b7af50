"""Protobuf messages to the service's domain values and back (the only module knowing both)."""

from __future__ import annotations

from datetime import datetime

from parley.ingest.v1 import ingest_pb2 as pb
from parley_ingest.adapters.store import (
    FAILED,
    JOB_FAILED,
    PENDING,
    PROCESSING,
    QUEUED,
    READY,
    RUNNING,
    SUCCEEDED,
    Created,
    KnowledgeBase,
    NewDocument,
    Reindexed,
)
from parley_ingest.tables import DocumentRow, JobRow
from parley_runtime.errors import InvalidArgument
from parley_runtime.pagination import decode_cursor, encode_cursor
from parley_runtime.timestamps import aware, to_timestamp

_DOC_STATUS = {
    PENDING: pb.DOCUMENT_STATUS_PENDING,
    PROCESSING: pb.DOCUMENT_STATUS_PROCESSING,
    READY: pb.DOCUMENT_STATUS_READY,
    FAILED: pb.DOCUMENT_STATUS_FAILED,
}
_JOB_STATE = {
    QUEUED: pb.JOB_STATE_QUEUED,
    RUNNING: pb.JOB_STATE_RUNNING,
    SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JOB_FAILED: pb.JOB_STATE_FAILED,
}


def new_document(meta: pb.DocumentMetadata) -> NewDocument:
    """A client's description of a document; its content type is the client's word, which
    the bytes will confirm or refute (``sniffing``)."""
    return NewDocument(
        knowledge_base_id=meta.knowledge_base_id,
        title=meta.title,
        filename=meta.filename,
        content_type=meta.content_type,
        metadata=dict(meta.metadata),
        external_id=meta.external_id,
    )


def document(row: DocumentRow) -> pb.Document:
    return pb.Document(
        id=row.id,
        knowledge_base_id=row.knowledge_base_id,
        title=row.title,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        version=row.version,
        status=_DOC_STATUS.get(row.status, pb.DOCUMENT_STATUS_UNSPECIFIED),
        chunk_count=row.chunk_count,
        metadata=row.metadata_,
        error=row.error,
        error_code=row.error_code,
        external_id=row.external_id or "",
        job_id=row.job_id,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


def job(row: JobRow) -> pb.Job:
    message = pb.Job(
        id=row.id,
        document_id=row.document_id,
        state=_JOB_STATE.get(row.state, pb.JOB_STATE_UNSPECIFIED),
        stage=row.stage,
        progress=row.progress,
        chunks_total=row.chunks_total,
        chunks_indexed=row.chunks_indexed,
        error=row.error,
        error_code=row.error_code,
        attempts=row.attempts,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )
    if row.retry_at is not None and row.state == QUEUED:
        message.retry_time.CopyFrom(to_timestamp(row.retry_at))
    return message


def created(outcome: Created) -> pb.CreateDocumentResponse:
    return pb.CreateDocumentResponse(
        document=document(outcome.document),
        job=job(outcome.job),
        deduplicated=outcome.deduplicated,
    )


def page_after(page_token: str) -> tuple[datetime, str] | None:
    """The (created, id) cursor a page token carries; None for the first page."""
    if not page_token:
        return None
    at, did = decode_cursor(page_token, 2)
    try:
        return aware(datetime.fromisoformat(str(at))), str(did)
    except ValueError:
        raise InvalidArgument("page_token is not valid", code="invalid_page_token") from None


def next_page_token(rows: list[DocumentRow], more: bool) -> str:
    """The token of the page after ``rows``, or "" when it was the last."""
    if not more or not rows:
        return ""
    return encode_cursor(aware(rows[-1].created_at).isoformat(), rows[-1].id)


def knowledge_base(found: KnowledgeBase) -> pb.KnowledgeBase:
    return pb.KnowledgeBase(
        id=found.name,
        document_count=found.documents,
        pending_count=found.by_status.get(PENDING, 0),
        processing_count=found.by_status.get(PROCESSING, 0),
        ready_count=found.by_status.get(READY, 0),
        failed_count=found.by_status.get(FAILED, 0),
        update_time=to_timestamp(found.updated_at),
    )


def knowledge_base_after(page_token: str) -> str | None:
    """The knowledge base name a page token carries; None for the first page."""
    if not page_token:
        return None
    (name,) = decode_cursor(page_token, 1)
    if not isinstance(name, str):
        raise InvalidArgument("page_token is not valid", code="invalid_page_token")
    return name


def next_knowledge_base_token(found: list[KnowledgeBase], more: bool) -> str:
    """The token of the page after ``found``, or "" when it was the last."""
    return encode_cursor(found[-1].name) if more and found else ""


def reindexed(queued: int, listed: list[Reindexed]) -> pb.ReindexDocumentsResponse:
    return pb.ReindexDocumentsResponse(
        queued=queued,
        documents=[
            pb.ReindexedDocument(document_id=r.document_id, version=r.version, job_id=r.job_id)
            for r in listed
        ],
    )
