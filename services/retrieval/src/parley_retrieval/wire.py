"""Protobuf messages to the service's domain values and back (the only module knowing both)."""

from __future__ import annotations

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley_retrieval.chunks import Hit, MetadataFilter, StoredChunk


def filters(request: pb.SearchRequest) -> list[MetadataFilter]:
    """The request's field conditions: ``equals`` becomes a single value."""
    found = []
    for condition in request.filters:
        if condition.WhichOneof("match") == "equals":
            values: tuple[str, ...] = (condition.equals,)
        else:
            values = tuple(condition.any_of.values)
        found.append(MetadataFilter(condition.key, values))
    return found


def threshold(request: pb.SearchRequest) -> float | None:
    """The minimum score, or None when the request sets none."""
    return request.score_threshold if request.HasField("score_threshold") else None


def search_response(hits: list[Hit], embedding_model: str) -> pb.SearchResponse:
    return pb.SearchResponse(
        chunks=[
            pb.ScoredChunk(
                chunk_id=h.chunk.chunk_id,
                document_id=h.chunk.document_id,
                text=h.chunk.text,
                score=h.score,
                title=h.chunk.title,
                source_uri=h.chunk.source_uri,
                position=h.chunk.position,
                metadata=h.chunk.metadata,
            )
            for h in hits
        ],
        embedding_model=embedding_model,
    )


def stored_chunks(request: pb.IndexChunksRequest) -> list[StoredChunk]:
    """The request's chunks, each with the document fields the request carries once."""
    return [
        StoredChunk(
            chunk_id=c.chunk_id,
            document_id=request.document_id,
            document_version=request.document_version,
            text=c.text,
            title=request.title,
            source_uri=request.source_uri,
            position=c.position,
            metadata=dict(c.metadata),
        )
        for c in request.chunks
    ]
