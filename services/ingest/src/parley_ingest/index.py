"""Where a document's chunks are indexed for search: the port the retrieval adapter fills."""

from __future__ import annotations

from typing import Protocol

from parley_ingest.chunking import TextChunk
from parley_runtime.context import Principal


class ChunkIndex(Protocol):
    """Where a document's chunks are indexed for search, under the tenant of ``who``."""

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
    ) -> None:
        """Index ``chunks`` of one document version; with ``replace``, drop other versions."""
        ...

    async def delete(self, who: Principal, knowledge_base_id: str, document_id: str) -> int:
        """Remove every chunk of a document; return how many there were."""
        ...
