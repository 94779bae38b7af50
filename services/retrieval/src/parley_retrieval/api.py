"""The Retrieval gRPC servicer: translates protobuf to the service's calls and back."""

from __future__ import annotations

import grpc

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_retrieval.adapters.qdrant import StoredChunk
from parley_retrieval.search import Retrieval
from parley_runtime.errors import InvalidArgument

_SUPPORTED_MODES = (pb.SEARCH_MODE_UNSPECIFIED, pb.SEARCH_MODE_DENSE)


class RetrievalServicer(pb_grpc.RetrievalServicer):
    """Search and indexing for the caller's tenant."""

    def __init__(self, retrieval: Retrieval) -> None:
        self.retrieval = retrieval

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """The chunks of a knowledge base closest to the query, best first."""
        if request.mode not in _SUPPORTED_MODES:
            raise InvalidArgument(
                "mode: this version searches dense embeddings only (SEARCH_MODE_DENSE)",
                code="unsupported_search_mode",
            )
        filters = []
        for condition in request.filters:
            kind = condition.WhichOneof("match")
            values = [condition.equals] if kind == "equals" else list(condition.any_of.values)
            filters.append((condition.key, values))
        hits = await self.retrieval.search(
            request.knowledge_base_id,
            request.query,
            request.top_k,
            request.score_threshold if request.HasField("score_threshold") else None,
            filters,
        )
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
            embedding_model=self.retrieval.embedder.model,
        )

    async def IndexChunks(
        self, request: pb.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexChunksResponse:
        """Embed and store one document version's chunks."""
        chunks = [
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
        indexed = await self.retrieval.index(
            request.knowledge_base_id,
            request.document_id,
            request.document_version,
            chunks,
            request.replace,
        )
        return pb.IndexChunksResponse(
            indexed=indexed, embedding_model=self.retrieval.embedder.model
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        """Remove every chunk of a document."""
        deleted = await self.retrieval.delete(request.knowledge_base_id, request.document_id)
        return pb.DeleteDocumentResponse(deleted_chunks=deleted)

    async def GetCollectionStats(
        self, request: pb.GetCollectionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionStats:
        """How many chunks and documents a knowledge base holds."""
        chunks, documents = await self.retrieval.stats(request.knowledge_base_id)
        return pb.CollectionStats(
            knowledge_base_id=request.knowledge_base_id,
            chunk_count=chunks,
            document_count=documents,
            embedding_model=self.retrieval.embedder.model,
            dimensions=self.retrieval.embedder.dimensions,
        )
