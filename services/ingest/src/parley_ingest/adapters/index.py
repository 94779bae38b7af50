"""Sending chunks to the retrieval service."""

from __future__ import annotations

from parley.retrieval.v1 import retrieval_pb2 as ret
from parley.retrieval.v1 import retrieval_pb2_grpc as ret_grpc
from parley_ingest.chunking import TextChunk
from parley_runtime.grpc_client import channel


class RetrievalIndex:
    """IndexChunks and DeleteDocument on retrieval, as the principal in context."""

    def __init__(self, address: str, timeout: float) -> None:
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
        await self._stub.IndexChunks(
            ret.IndexChunksRequest(
                knowledge_base_id=knowledge_base_id,
                document_id=document_id,
                document_version=version,
                title=title,
                source_uri=source_uri,
                replace=replace,
                chunks=[
                    ret.Chunk(
                        chunk_id=f"{document_id}:v{version}:{c.position}",
                        text=c.text,
                        position=c.position,
                        metadata=c.metadata,
                    )
                    for c in chunks
                ],
            )
        )

    async def delete(self, knowledge_base_id: str, document_id: str) -> None:
        await self._stub.DeleteDocument(
            ret.DeleteDocumentRequest(knowledge_base_id=knowledge_base_id, document_id=document_id)
        )

    async def close(self) -> None:
        await self._channel.close()
