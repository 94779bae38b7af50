"""The Ingest gRPC servicer: validates, translates, delegates to the store and the worker.

Every call acts for the principal in the request's metadata and sees only its tenant's
documents and jobs.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from datetime import datetime

import grpc

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley_ingest.adapters.index import ChunkIndex
from parley_ingest.adapters.store import (
    FAILED,
    JOB_FAILED,
    PENDING,
    PROCESSING,
    QUEUED,
    READY,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    IngestStore,
    NewDocument,
)
from parley_ingest.jobs import JobRunner
from parley_ingest.models import DocumentRow, JobRow
from parley_ingest.parsing import check_content_type, to_text
from parley_runtime.context import current_principal
from parley_runtime.errors import InvalidArgument, ResourceExhausted
from parley_runtime.pagination import decode_cursor, encode_cursor, page_size
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
# WatchJob re-reads the job this often even without a local notification, so it also sees
# progress made by another replica's worker.
WATCH_POLL_SECONDS = 1.0


def _required(name: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{name}: required", code=f"missing_{name}")
    if len(value) > 100:
        raise InvalidArgument(f"{name}: at most 100 characters", code=f"invalid_{name}")
    return value


def _check(content: bytes, content_type: str) -> str:
    """Validate the bytes as a document (UTF-8 text with something in it); their sha256."""
    if not to_text(content, content_type).strip():
        raise InvalidArgument("content: the document has no text", code="empty_document")
    return hashlib.sha256(content).hexdigest()


def document_proto(row: DocumentRow) -> pb.Document:
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
        external_id=row.external_id or "",
        job_id=row.job_id,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


def job_proto(row: JobRow) -> pb.Job:
    return pb.Job(
        id=row.id,
        document_id=row.document_id,
        state=_JOB_STATE.get(row.state, pb.JOB_STATE_UNSPECIFIED),
        stage=row.stage,
        progress=row.progress,
        chunks_total=row.chunks_total,
        chunks_indexed=row.chunks_indexed,
        error=row.error,
        create_time=to_timestamp(row.created_at),
        update_time=to_timestamp(row.updated_at),
    )


class IngestServicer(pb_grpc.IngestServicer):
    """Documents and jobs of the caller's tenant."""

    def __init__(
        self, store: IngestStore, jobs: JobRunner, index: ChunkIndex, max_bytes: int
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.index = index
        self.max_bytes = max_bytes

    def _metadata(self, meta: pb.DocumentMetadata) -> NewDocument:
        if not meta.knowledge_base_id:
            raise InvalidArgument(
                "document.knowledge_base_id: required", code="missing_knowledge_base"
            )
        if len(meta.knowledge_base_id) > 200:
            raise InvalidArgument(
                "document.knowledge_base_id: at most 200 characters", code="invalid_document"
            )
        for name, value, limit in (
            ("title", meta.title, 300),
            ("filename", meta.filename, 300),
            ("external_id", meta.external_id, 300),
        ):
            if len(value) > limit:
                raise InvalidArgument(
                    f"document.{name}: at most {limit} characters", code="invalid_document"
                )
        if len(meta.metadata) > 50:
            raise InvalidArgument("document.metadata: at most 50 keys", code="invalid_document")
        return NewDocument(
            knowledge_base_id=meta.knowledge_base_id,
            title=meta.title,
            filename=meta.filename,
            content_type=check_content_type(meta.content_type),
            metadata=dict(meta.metadata),
            external_id=meta.external_id,
        )

    def _too_large(self) -> ResourceExhausted:
        return ResourceExhausted(
            f"content: the document exceeds the limit of {self.max_bytes} bytes",
            code="document_too_large",
        )

    async def _create(self, new: NewDocument, content: bytes) -> pb.CreateDocumentResponse:
        if len(content) > self.max_bytes:
            raise self._too_large()
        # Decoding and hashing up to MAX_DOCUMENT_BYTES is CPU work: keep it off the loop.
        sha256 = await asyncio.to_thread(_check, content, new.content_type)
        created = await self.store.create(current_principal(), new, content, sha256)
        if not created.deduplicated:
            self.jobs.submit(created.job.id)
        return pb.CreateDocumentResponse(
            document=document_proto(created.document),
            job=job_proto(created.job),
            deduplicated=created.deduplicated,
        )

    async def CreateDocument(
        self, request: pb.CreateDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDocumentResponse:
        """Store a document sent in one message and queue its job."""
        return await self._create(self._metadata(request.document), request.content)

    async def UploadDocument(
        self,
        request_iterator: AsyncIterator[pb.UploadDocumentRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.CreateDocumentResponse:
        """Store a document streamed in pieces (metadata first), refusing it as soon as it
        grows past the limit."""
        new: NewDocument | None = None
        content = bytearray()
        async for part in request_iterator:
            kind = part.WhichOneof("part")
            if new is None:
                if kind != "document":
                    raise InvalidArgument(
                        "the first message must carry the document's metadata",
                        code="metadata_first",
                    )
                new = self._metadata(part.document)
            elif kind == "document":
                raise InvalidArgument("metadata must be sent once", code="metadata_twice")
            else:
                content += part.content
                if len(content) > self.max_bytes:
                    raise self._too_large()
        if new is None:
            raise InvalidArgument("the upload was empty", code="empty_upload")
        return await self._create(new, bytes(content))

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Document:
        """One document's record."""
        document_id = _required("document_id", request.document_id)
        return document_proto(await self.store.document(current_principal(), document_id))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        """A knowledge base's documents, newest first."""
        if not request.knowledge_base_id:
            raise InvalidArgument("knowledge_base_id: required", code="missing_knowledge_base")
        size = page_size(request.page_size, 20, 100)
        after = None
        if request.page_token:
            at, did = decode_cursor(request.page_token, 2)
            try:
                after = (aware(datetime.fromisoformat(str(at))), str(did))
            except ValueError:
                raise InvalidArgument(
                    "page_token is not valid", code="invalid_page_token"
                ) from None
        rows = await self.store.documents(
            current_principal(), request.knowledge_base_id, size + 1, after
        )
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = encode_cursor(aware(rows[-1].created_at).isoformat(), rows[-1].id)
        return pb.ListDocumentsResponse(
            documents=[document_proto(r) for r in rows], next_page_token=token
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        """Delete a document: its chunks in retrieval first, then its records (a failure
        leaves everything in place, to be retried)."""
        who = current_principal()
        document = await self.store.document(who, _required("document_id", request.document_id))
        await self.index.delete(document.knowledge_base_id, document.id)
        await self.store.delete(who, document.id)
        return pb.DeleteDocumentResponse()

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """One job's state and progress."""
        return job_proto(
            await self.store.job(current_principal(), _required("job_id", request.job_id))
        )

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Job]:
        """The job each time it changes, ending after it succeeds or fails.

        A client that goes away cancels this handler (and its wait) at once; the client's
        deadline bounds a job that never ends."""
        who = current_principal()
        job_id = _required("job_id", request.job_id)
        last: tuple[object, ...] | None = None
        while True:
            job = await self.store.job(who, job_id)
            seen = (job.state, job.stage, job.chunks_indexed, job.error)
            if seen != last:
                last = seen
                yield job_proto(job)
            if job.state in TERMINAL:
                return
            await self.jobs.changed(job.id, WATCH_POLL_SECONDS)
