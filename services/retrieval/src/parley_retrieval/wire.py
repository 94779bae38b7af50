"""Protobuf messages to the service's domain values and back (the only module knowing both)."""

from __future__ import annotations

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley_retrieval.chunks import Hit, MetadataFilter, SearchMode, StoredChunk
from parley_retrieval.memories import FoundMemory, MemoryText
from parley_runtime.errors import InvalidArgument

_MODES = {
    pb.SEARCH_MODE_DENSE: SearchMode.DENSE,
    pb.SEARCH_MODE_SPARSE: SearchMode.SPARSE,
    pb.SEARCH_MODE_HYBRID: SearchMode.HYBRID,
}
_PB_MODES = {mode: value for value, mode in _MODES.items()}


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


def mode(request: pb.SearchRequest) -> SearchMode | None:
    """The requested mode; None for the service's default."""
    if request.mode == pb.SEARCH_MODE_UNSPECIFIED:
        return None
    if request.mode not in _MODES:
        raise InvalidArgument(f"mode: unknown value {request.mode}", code="invalid_search_mode")
    return _MODES[request.mode]


def dense_weight(request: pb.SearchRequest) -> float | None:
    return request.dense_weight if request.HasField("dense_weight") else None


def diversity(request: pb.SearchRequest) -> float | None:
    return request.diversity if request.HasField("diversity") else None


def search_response(hits: list[Hit], embedding_model: str, mode: SearchMode) -> pb.SearchResponse:
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
        mode=_PB_MODES[mode],
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


def staged_version(request: pb.DeleteDocumentRequest) -> int | None:
    """The version whose staged chunks alone are to go; None for the whole document."""
    if request.staged_version < 0:
        raise InvalidArgument(
            "staged_version: a version, from 1 (0: the whole document)",
            code="invalid_staged_version",
        )
    return request.staged_version or None


def memory_texts(request: pb.IndexMemoriesRequest) -> list[MemoryText]:
    return [MemoryText(m.memory_id, m.text) for m in request.memories]


def memories_response(found: list[FoundMemory], embedding_model: str) -> pb.SearchMemoriesResponse:
    return pb.SearchMemoriesResponse(
        memories=[
            pb.ScoredMemory(memory_id=m.memory_id, text=m.text, score=m.score) for m in found
        ],
        embedding_model=embedding_model,
    )
