"""Sending chunks to the retrieval service, and removing them.

The job worker and the servicer see only :class:`ChunkIndex`; :class:`RetrievalIndex` is its
gRPC implementation. Calls carry the principal in context (the client interceptor propagates
it), so chunks land in, and are deleted from, the caller's tenant. gRPC failures come out as
domain errors whose message says retrieval is at fault, so a failed job reads clearly.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol, TypeVar

import grpc

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.chunking import TextChunk, chunk_id
from parley_runtime.errors import DeadlineExceeded, ParleyError, Unavailable, from_rpc_error
from parley_runtime.grpc_client import channel

T = TypeVar("T")


class ChunkIndex(Protocol):
    """Where a document's chunks are indexed for search."""

    async def index(
        self,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        title: str,
        source_uri: str,
        chunks: list[TextChunk],
        *,
        replace: bool,
    ) -> None:
        """Index ``chunks`` of one document version; with ``replace``, drop other versions."""
        ...

    async def delete(self, knowledge_base_id: str, document_id: str) -> None:
        """Remove every chunk of a document."""
        ...


class RetrievalIndex:
    """:class:`ChunkIndex` on the retrieval service (IndexChunks, DeleteDocument)."""

    def __init__(self, address: str, timeout: float) -> None:
        self._timeout = timeout
        self._channel = channel(
            address,
            "parley.retrieval.v1.Retrieval",
            # Indexing is idempotent (chunk ids are stable), so a retry is safe.
            idempotent_methods=["IndexChunks", "DeleteDocument"],
            default_timeout=timeout,
        )
        self._stub = ret_grpc.RetrievalStub(self._channel)

    async def index(
        self,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        title: str,
        source_uri: str,
        chunks: list[TextChunk],
        *,
        replace: bool,
    ) -> None:
        request = ret.IndexChunksRequest(
            knowledge_base_id=knowledge_base_id,
            document_id=document_id,
            document_version=version,
            title=title,
            source_uri=source_uri,
            replace=replace,
            chunks=[
                ret.Chunk(
                    chunk_id=chunk_id(document_id, version, c.position),
                    text=c.text,
                    position=c.position,
                    metadata=c.metadata,
                )
                for c in chunks
            ],
        )
        await self._call(self._stub.IndexChunks(request))

    async def delete(self, knowledge_base_id: str, document_id: str) -> None:
        request = ret.DeleteDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        await self._call(self._stub.DeleteDocument(request))

    async def close(self) -> None:
        await self._channel.close()

    async def _call(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.RpcError as error:
            raise self._error(error) from None

    def _error(self, error: grpc.RpcError) -> ParleyError:
        failure = from_rpc_error(error)
        if isinstance(failure, Unavailable):
            return Unavailable("the retrieval service is unavailable", code="retrieval_unavailable")
        if isinstance(failure, DeadlineExceeded):
            return Unavailable(
                f"the retrieval service did not answer within {self._timeout:g} s",
                code="retrieval_timeout",
            )
        # Retrieval's own verdict (e.g. a chunk it refuses) is already readable.
        return failure
