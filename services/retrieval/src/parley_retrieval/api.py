"""The Retrieval gRPC servicer: reads the caller's tenant (and, for memories, user),
translates through ``wire``, and delegates to :class:`~parley_retrieval.search.Retrieval` and
:class:`~parley_retrieval.memories.MemoryIndex`."""

from __future__ import annotations

import grpc

from parley.retrieval.v1 import retrieval_pb2 as pb
from parley.retrieval.v1 import retrieval_pb2_grpc as pb_grpc
from parley_retrieval import wire
from parley_retrieval.memories import MemoryIndex
from parley_retrieval.search import Retrieval
from parley_runtime.context import current_principal


class RetrievalServicer(pb_grpc.RetrievalServicer):
    """Search and indexing for the caller's tenant; memories for the caller's user."""

    def __init__(self, retrieval: Retrieval, memories: MemoryIndex) -> None:
        self.retrieval = retrieval
        self.memories = memories

    async def Search(
        self, request: pb.SearchRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchResponse:
        """The chunks of a knowledge base that best match the query, best first."""
        tenant_id = current_principal().tenant_id
        hits, mode = await self.retrieval.search(
            tenant_id,
            request.knowledge_base_id,
            request.query,
            request.top_k,
            wire.threshold(request),
            wire.filters(request),
            mode=wire.mode(request),
            dense_weight=wire.dense_weight(request),
            diversity=wire.diversity(request),
        )
        return wire.search_response(hits, self.retrieval.embedder.model, mode)

    async def IndexChunks(
        self, request: pb.IndexChunksRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexChunksResponse:
        """Embed and store one document version's chunks."""
        tenant_id = current_principal().tenant_id
        indexed = await self.retrieval.index(
            tenant_id,
            request.knowledge_base_id,
            request.document_id,
            request.document_version,
            wire.stored_chunks(request),
            request.replace,
            request.staged,
        )
        return pb.IndexChunksResponse(
            indexed=indexed, embedding_model=self.retrieval.embedder.model
        )

    async def DeleteDocument(
        self, request: pb.DeleteDocumentRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteDocumentResponse:
        """Remove every chunk of a document, or only a version's staged chunks."""
        tenant_id = current_principal().tenant_id
        deleted = await self.retrieval.delete(
            tenant_id,
            request.knowledge_base_id,
            request.document_id,
            wire.staged_version(request),
        )
        return pb.DeleteDocumentResponse(deleted_chunks=deleted)

    async def GetCollectionStats(
        self, request: pb.GetCollectionStatsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CollectionStats:
        """How many chunks and documents a knowledge base holds."""
        tenant_id = current_principal().tenant_id
        chunks, documents = await self.retrieval.stats(tenant_id, request.knowledge_base_id)
        return pb.CollectionStats(
            knowledge_base_id=request.knowledge_base_id,
            chunk_count=chunks,
            document_count=documents,
            embedding_model=self.retrieval.embedder.model,
            dimensions=self.retrieval.embedder.dimensions,
        )

    async def IndexMemories(
        self, request: pb.IndexMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.IndexMemoriesResponse:
        """Embed and store memories of the caller's user."""
        who = current_principal()
        indexed = await self.memories.index(who.tenant_id, who.user_id, wire.memory_texts(request))
        return pb.IndexMemoriesResponse(
            indexed=indexed, embedding_model=self.memories.embedder.model
        )

    async def SearchMemories(
        self, request: pb.SearchMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchMemoriesResponse:
        """The caller's user's memories most similar to the query."""
        who = current_principal()
        found = await self.memories.search(
            who.tenant_id,
            who.user_id,
            request.query,
            request.top_k,
            request.score_threshold if request.HasField("score_threshold") else None,
        )
        return wire.memories_response(found, self.memories.embedder.model)

    async def DeleteMemories(
        self, request: pb.DeleteMemoriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteMemoriesResponse:
        """Remove the caller's user's memories named, or all of them."""
        who = current_principal()
        if request.all:
            deleted = await self.memories.delete_all(who.tenant_id, who.user_id)
        else:
            deleted = await self.memories.delete(
                who.tenant_id, who.user_id, list(request.memory_ids)
            )
        return pb.DeleteMemoriesResponse(deleted=deleted)
