"""The Ingest gRPC servicer: validates, reads the caller's principal once, translates through
``wire`` and delegates to :class:`~parley_ingest.documents.Documents`.

Every call acts for the principal in the request's metadata and sees only its tenant's
documents and jobs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parley.ingest.v1 import ingest_pb2 as pb
from parley.ingest.v1 import ingest_pb2_grpc as pb_grpc
from parley_ingest import wire
from parley_ingest.adapters.store import NewDocument
from parley_ingest.documents import Documents
from parley_runtime.context import current_principal
from parley_runtime.errors import InvalidArgument
from parley_runtime.pagination import page_size


def _required(name: str, value: str) -> str:
    if not value:
        raise InvalidArgument(f"{name}: required", code=f"missing_{name}")
    if len(value) > 100:
        raise InvalidArgument(f"{name}: at most 100 characters", code=f"invalid_{name}")
    return value


def _knowledge_base(value: str) -> str:
    if not value:
        raise InvalidArgument("knowledge_base_id: required", code="missing_knowledge_base")
    if len(value) > 200:
        raise InvalidArgument(
            "knowledge_base_id: at most 200 characters", code="invalid_knowledge_base"
        )
    return value


def _metadata(meta: pb.DocumentMetadata) -> NewDocument:
    """The document's metadata, within its limits."""
    if not meta.knowledge_base_id:
        raise InvalidArgument("document.knowledge_base_id: required", code="missing_knowledge_base")
    if len(meta.knowledge_base_id) > 200:
        raise InvalidArgument(
            "document.knowledge_base_id: at most 200 characters", code="invalid_document"
        )
    for name, value, limit in (
        ("title", meta.title, 300),
        ("filename", meta.filename, 300),
        ("external_id", meta.external_id, 300),
        ("content_type", meta.content_type, 100),
    ):
        if len(value) > limit:
            raise InvalidArgument(
                f"document.{name}: at most {limit} characters", code="invalid_document"
            )
    if len(meta.metadata) > 50:
        raise InvalidArgument("document.metadata: at most 50 keys", code="invalid_document")
    return wire.new_document(meta)


class IngestServicer(pb_grpc.IngestServicer):
    """Documents and jobs of the caller's tenant."""

    def __init__(self, documents: Documents) -> None:
        self.documents = documents

    async def CreateDocument(
        self, request: pb.CreateDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateDocumentResponse:
        """Store a document sent in one message and queue its job."""
        who = current_principal()
        new = _metadata(request.document)
        return wire.created(await self.documents.create(who, new, request.content))

    async def UploadDocument(
        self,
        request_iterator: AsyncIterator[pb.UploadDocumentRequest],
        context: grpc.aio.ServicerContext,
    ) -> pb.CreateDocumentResponse:
        """Store a document streamed in pieces (metadata first), refusing it as soon as it
        grows past the limit."""
        who = current_principal()
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
                new = _metadata(part.document)
            elif kind == "document":
                raise InvalidArgument("metadata must be sent once", code="metadata_twice")
            else:
                # Refused before the piece is kept: memory never holds more than the limit.
                if len(content) + len(part.content) > self.documents.max_bytes:
                    raise self.documents.too_large()
                content += part.content
        if new is None:
            raise InvalidArgument("the upload was empty", code="empty_upload")
        return wire.created(await self.documents.create(who, new, bytes(content)))

    async def GetDocument(
        self, request: pb.GetDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.Document:
        """One document's record."""
        who = current_principal()
        document_id = _required("document_id", request.document_id)
        return wire.document(await self.documents.document(who, document_id))

    async def ListDocuments(
        self, request: pb.ListDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListDocumentsResponse:
        """A knowledge base's documents, newest first."""
        who = current_principal()
        knowledge_base_id = _knowledge_base(request.knowledge_base_id)
        size = page_size(request.page_size, 20, 100)
        after = wire.page_after(request.page_token)
        rows, more = await self.documents.page(who, knowledge_base_id, size, after)
        return pb.ListDocumentsResponse(
            documents=[wire.document(r) for r in rows],
            next_page_token=wire.next_page_token(rows, more),
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        """Delete a document: its chunks in retrieval first, then its records (a failure
        leaves everything in place, to be retried)."""
        who = current_principal()
        await self.documents.delete(who, _required("document_id", request.document_id))
        return pb.DeleteDocumentResponse()

    async def ListKnowledgeBases(
        self, request: pb.ListKnowledgeBasesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListKnowledgeBasesResponse:
        """The tenant's knowledge bases by name, with their documents counted by status."""
        who = current_principal()
        size = page_size(request.page_size, 50, 200)
        after = wire.knowledge_base_after(request.page_token)
        found, more = await self.documents.knowledge_bases(who, size, after)
        return pb.ListKnowledgeBasesResponse(
            knowledge_bases=[wire.knowledge_base(k) for k in found],
            next_page_token=wire.next_knowledge_base_token(found, more),
        )

    async def ReindexDocuments(
        self, request: pb.ReindexDocumentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReindexDocumentsResponse:
        """Give a knowledge base's documents (or one) a new version of their stored bytes
        and queue their jobs."""
        who = current_principal()
        knowledge_base_id = _knowledge_base(request.knowledge_base_id)
        document_id = request.document_id or None
        if document_id is not None:
            _required("document_id", document_id)
        queued, listed = await self.documents.reindex(who, knowledge_base_id, document_id)
        return wire.reindexed(queued, listed)

    async def GetJob(self, request: pb.GetJobRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """One job's state and progress."""
        who = current_principal()
        return wire.job(await self.documents.job(who, _required("job_id", request.job_id)))

    async def ExportUserData(
        self, request: pb.ExportUserDataRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Document]:
        """Every document the caller's user created, oldest first (records, not bytes)."""
        who = current_principal()
        for row in await self.documents.user_documents(who):
            yield wire.document(row)

    async def DeleteUserData(
        self, request: pb.DeleteUserDataRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteUserDataResponse:
        """Delete every document the caller's user created, their chunks and jobs, and the
        user's other job rows (see ``Documents.delete_user``)."""
        who = current_principal()
        documents, jobs, chunks = await self.documents.delete_user(who)
        return pb.DeleteUserDataResponse(
            documents_deleted=documents, jobs_deleted=jobs, chunks_deleted=chunks
        )

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.Job]:
        """The job each time it changes, ending after it succeeds or fails.

        A client that goes away cancels this handler (and its wait) at once; the client's
        deadline bounds a job that never ends."""
        who = current_principal()
        job_id = _required("job_id", request.job_id)
        async for job in self.documents.watch(who, job_id):
            yield wire.job(job)
