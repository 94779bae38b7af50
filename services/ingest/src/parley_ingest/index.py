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
        staged: bool = False,
    ) -> None:
        """Index ``chunks`` of one document version. ``staged`` ones are not searchable until
        a call with ``replace`` publishes the version (its own chunks with them) and drops the
        document's other versions."""
        ...

    async def delete(self, who: Principal, knowledge_base_id: str, document_id: str) -> int:
        """Remove every chunk of a document; return how many there were."""
        ...

    async def discard(
        self, who: Principal, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Remove the chunks of a document version that are still staged (its publication
        will not come); return how many there were."""
        ...
