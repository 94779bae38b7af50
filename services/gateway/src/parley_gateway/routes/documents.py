"""Knowledge bases, their documents and the ingest jobs that index them.

A knowledge base is a name that the tenant's documents carry: it exists while it holds some.
Re-indexing one (``admin``) gives each of its documents a new version of the bytes ingest
keeps and queues its job, as after a change of the embedding model or of chunking; search
keeps finding each document's old version until the new one is indexed whole.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from parley.ingest.v1 import ingest_pb2 as ing
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import DocumentRoute
from parley_gateway.errors import responses
from parley_gateway.inputs import KnowledgeBaseName, Name, PageToken, ResourceId, Text
from parley_gateway.limits.http import RATE_LIMITED, route_class
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, ResourceExhausted

router = APIRouter(
    prefix="/v1", tags=["documents"], route_class=DocumentRoute, dependencies=[RATE_LIMITED]
)
Reader = Annotated[Principal, require("read")]
Editor = Annotated[Principal, require("documents")]
Admin = Annotated[Principal, require("admin")]
TEXT_TYPES = ("text/plain", "text/markdown", "text/html")


class CreateDocumentBody(BaseModel):
    """A text document sent as JSON."""

    model_config = ConfigDict(extra="forbid")

    content: Text = Field(min_length=1)
    title: Text = Field("", max_length=300)
    content_type: Text = Field("text/markdown")
    filename: Text = Field("", max_length=300)
    metadata: dict[Text, Text] = Field(default_factory=dict)
    external_id: Text = Field("", max_length=300)


class ReindexBody(BaseModel):
    """Which documents to index again; the body may be left out (all of them)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{}]})

    document_id: Name | None = Field(
        None, description="Only this document of the knowledge base (404 when it is not one)."
    )


REINDEXED_EXAMPLE = {
    "queued": 1,
    "documents": [
        {
            "document_id": "doc_0193a1b2c3d4e5f6a7b8c9d0",
            "version": 3,
            "job_id": "job_0193a1b2c3d4f0e1d2c3b4a5",
        }
    ],
}
REINDEXED = {"content": {"application/json": {"example": REINDEXED_EXAMPLE}}}


def _peers(request: Request) -> Peers:
    peers: Peers = request.app.state.peers
    return peers


@router.post(
    "/knowledge-bases/{knowledge_base_id}/documents",
    status_code=201,
    responses=responses(400, 401, 403, 413, 415, 422, 429, 500, 503),
    openapi_extra=route_class("documents"),
)
async def create_document(
    knowledge_base_id: KnowledgeBaseName, body: CreateDocumentBody, request: Request, caller: Editor
) -> dict[str, Any]:
    """Add a document to a knowledge base; it is parsed, chunked and indexed by a job."""
    limit = request.app.state.settings.max_document_bytes
    content = body.content.encode()
    if len(content) > limit:
        # RESOURCE_EXHAUSTED, as ingest reports it; the code makes it a 413 (errors.py).
        raise ResourceExhausted(
            f"body.content: the document exceeds the limit of {limit} bytes",
            code="document_too_large",
        )
    if body.content_type not in TEXT_TYPES:
        raise InvalidArgument(
            f"body.content_type: must be one of {', '.join(TEXT_TYPES)}",
            code="unsupported_content_type",
        )
    created = await _peers(request).ingest.CreateDocument(
        ing.CreateDocumentRequest(
            document=ing.DocumentMetadata(
                knowledge_base_id=knowledge_base_id,
                title=body.title,
                filename=body.filename,
                content_type=body.content_type,
                metadata=body.metadata,
                external_id=body.external_id,
            ),
            content=content,
        )
    )
    return {
        "document": views.document(created.document),
        "job": views.job(created.job),
        "deduplicated": created.deduplicated,
    }


@router.get(
    "/knowledge-bases/{knowledge_base_id}/documents",
    responses=responses(401, 403, 422, 429, 500, 503),
)
async def list_documents(
    knowledge_base_id: KnowledgeBaseName,
    request: Request,
    caller: Reader,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """A knowledge base's documents, newest first."""
    page = await _peers(request).ingest.ListDocuments(
        ing.ListDocumentsRequest(
            knowledge_base_id=knowledge_base_id, page_size=page_size, page_token=page_token
        )
    )
    return {
        "documents": [views.document(d) for d in page.documents],
        "next_page_token": page.next_page_token or None,
    }


@router.get("/knowledge-bases", responses=responses(401, 403, 422, 429, 500, 503))
async def list_knowledge_bases(
    request: Request,
    caller: Reader,
    page_size: Annotated[int, Query(ge=1, le=200)] = 50,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """The tenant's knowledge bases (the names its documents carry), by name, with their
    documents counted by status."""
    page = await _peers(request).ingest.ListKnowledgeBases(
        ing.ListKnowledgeBasesRequest(page_size=page_size, page_token=page_token)
    )
    return {
        "knowledge_bases": [views.knowledge_base(k) for k in page.knowledge_bases],
        "next_page_token": page.next_page_token or None,
    }


@router.post(
    "/knowledge-bases/{knowledge_base_id}/reindex",
    status_code=202,
    responses={202: REINDEXED, **responses(400, 401, 403, 404, 413, 422, 429, 500, 503)},
    openapi_extra=route_class("documents"),
)
async def reindex_knowledge_base(
    knowledge_base_id: KnowledgeBaseName,
    request: Request,
    caller: Admin,
    body: ReindexBody | None = None,
) -> dict[str, Any]:
    """Index the knowledge base's documents (or the one named) again from their stored bytes:
    each gets a new version and a queued job (``GET /v1/jobs/{id}`` follows it). ``queued``
    counts them; ``documents`` lists the first 100. A knowledge base without documents queues
    nothing."""
    found = await _peers(request).ingest.ReindexDocuments(
        ing.ReindexDocumentsRequest(
            knowledge_base_id=knowledge_base_id,
            document_id=body.document_id if body and body.document_id else "",
        )
    )
    return views.reindexed(found)


@router.get("/documents/{document_id}", responses=responses(401, 403, 404, 422, 429, 500, 503))
async def get_document(document_id: ResourceId, request: Request, caller: Reader) -> dict[str, Any]:
    """One document and its ingest status."""
    found = await _peers(request).ingest.GetDocument(
        ing.GetDocumentRequest(document_id=document_id)
    )
    return views.document(found)


@router.delete(
    "/documents/{document_id}",
    status_code=204,
    responses=responses(401, 403, 404, 422, 429, 500, 503),
)
async def delete_document(document_id: ResourceId, request: Request, caller: Editor) -> Response:
    """Delete a document and its chunks."""
    await _peers(request).ingest.DeleteDocument(ing.DeleteDocumentRequest(document_id=document_id))
    return Response(status_code=204)


@router.get("/jobs/{job_id}", responses=responses(401, 403, 404, 422, 429, 500, 503))
async def get_job(job_id: ResourceId, request: Request, caller: Reader) -> dict[str, Any]:
    """An ingest job's progress."""
    found = await _peers(request).ingest.GetJob(ing.GetJobRequest(job_id=job_id))
    return views.job(found)
