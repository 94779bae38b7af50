"""Sending chunks to the retrieval service, and removing them.

:class:`RetrievalIndex` is :class:`~parley_ingest.index.ChunkIndex` over gRPC. Every call
carries the principal it is given in its metadata, so chunks land in, and are deleted from,
that principal's tenant whether the call serves a request or a job. gRPC failures come out as
domain errors whose message says retrieval is at fault, so a failed job reads clearly.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import grpc

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.chunking import TextChunk, chunk_id
from parley_runtime.context import Principal
from parley_runtime.errors import DeadlineExceeded, ParleyError, Unavailable, from_rpc_error
from parley_runtime.grpc_client import channel

T = TypeVar("T")


class RetrievalIndex:
    """:class:`~parley_ingest.index.ChunkIndex` on the retrieval service's IndexChunks and
    DeleteDocument."""

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
        who: Principal,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        title: str,
        source_uri: str,
        chunks: list[TextChunk],
        *,
        replace: bool,
        staged: bool = False,
    ) -> None:
        request = ret.IndexChunksRequest(
            knowledge_base_id=knowledge_base_id,
            document_id=document_id,
            document_version=version,
            title=title,
            source_uri=source_uri,
            replace=replace,
            staged=staged,
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
        await self._call(self._stub.IndexChunks(request, metadata=who.to_metadata()))

    async def delete(self, who: Principal, knowledge_base_id: str, document_id: str) -> int:
        request = ret.DeleteDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id
        )
        deleted = await self._call(self._stub.DeleteDocument(request, metadata=who.to_metadata()))
        return int(deleted.deleted_chunks)

    async def discard(
        self, who: Principal, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        request = ret.DeleteDocumentRequest(
            knowledge_base_id=knowledge_base_id, document_id=document_id, staged_version=version
        )
        deleted = await self._call(self._stub.DeleteDocument(request, metadata=who.to_metadata()))
        return int(deleted.deleted_chunks)

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
