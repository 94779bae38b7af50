"""Knowledge-base documents and their ingest jobs."""

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
from parley_gateway.inputs import KnowledgeBaseName, PageToken, ResourceId, Text
from parley_gateway.limits.http import RATE_LIMITED, route_class
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, ResourceExhausted

router = APIRouter(
    prefix="/v1", tags=["documents"], route_class=DocumentRoute, dependencies=[RATE_LIMITED]
)
Reader = Annotated[Principal, require("read")]
Editor = Annotated[Principal, require("documents")]
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
