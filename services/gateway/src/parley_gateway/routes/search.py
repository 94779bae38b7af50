"""Search over a knowledge base: the passages a question would be answered from."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley_gateway import views
from parley_gateway.adapters import Peers
from parley_gateway.auth import require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.inputs import KnowledgeBaseName, Name, Text
from parley_gateway.limits.http import RATE_LIMITED
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument

router = APIRouter(
    prefix="/v1", tags=["documents"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
MetadataValue = Annotated[Text, Field(min_length=1, max_length=300)]
MODES = {
    "dense": ret.SEARCH_MODE_DENSE,
    "sparse": ret.SEARCH_MODE_SPARSE,
    "hybrid": ret.SEARCH_MODE_HYBRID,
}
SEARCH_EXAMPLE = {
    "results": [
        {
            "chunk_id": "doc_1:v1:0",
            "document_id": "doc_1",
            "title": "Leave policy",
            "source_uri": "leave.md",
            "position": 0,
            "text": "Employees have 25 days of leave a year.",
            "score": 0.8123,
            "metadata": {"team": "hr"},
        }
    ],
    "embedding_model": "all-MiniLM-L6-v2",
}


class SearchBody(BaseModel):
    """A question, and optional limits on what is returned."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"query": "How many days of leave?", "top_k": 3, "filters": {"team": "hr"}}
            ]
        },
    )

    query: Text = Field(min_length=1, max_length=4000)
    top_k: int = Field(5, ge=1, le=50, strict=True, description="How many passages, best first.")
    score_threshold: float | None = Field(
        None, ge=-1, le=1, strict=True, allow_inf_nan=False, description="Drop weaker passages."
    )
    mode: Literal["hybrid", "dense", "sparse"] | None = Field(
        None,
        description="How passages are ranked: by meaning (dense), by keywords (sparse), or "
        "both fused (hybrid); by default, the best the knowledge base's index offers.",
    )
    filters: dict[Name, MetadataValue | list[MetadataValue]] = Field(
        default_factory=dict,
        max_length=20,
        description="Metadata every passage must match: a value, or any of a list of values; "
        "the key document_id filters by document.",
    )


def _condition(key: str, value: str | list[str]) -> ret.FieldCondition:
    if isinstance(value, str):
        return ret.FieldCondition(key=key, equals=value)
    return ret.FieldCondition(key=key, any_of=ret.StringList(values=value))


@router.post(
    "/knowledge-bases/{knowledge_base_id}/search",
    responses={
        200: {"content": {"application/json": {"example": SEARCH_EXAMPLE}}},
        **responses(400, 401, 403, 413, 422, 429, 500, 503),
    },
)
async def search(
    knowledge_base_id: KnowledgeBaseName,
    body: SearchBody,
    request: Request,
    caller: Annotated[Principal, require("read")],
) -> dict[str, Any]:
    """The knowledge base's passages closest to the query, best first (the caller's tenant's
    only)."""
    if not body.query.strip():
        raise InvalidArgument("body.query: must not be empty", code="empty_query")
    search_request = ret.SearchRequest(
        knowledge_base_id=knowledge_base_id,
        query=body.query,
        top_k=body.top_k,
        filters=[_condition(key, value) for key, value in body.filters.items()],
    )
    if body.score_threshold is not None:
        search_request.score_threshold = body.score_threshold
    if body.mode is not None:
        search_request.mode = MODES[body.mode]
    peers: Peers = request.app.state.peers
    found = await peers.retrieval.Search(search_request)
    return {
        "results": [views.scored_chunk(chunk) for chunk in found.chunks],
        "embedding_model": found.embedding_model,
    }
