"""What a stored chunk is, and the store that keeps them (the port the Qdrant adapter fills).

Every store call names the tenant: the store scopes each read and write to it, so one tenant
never reads or removes another's chunks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """One passage of a document version, as indexed and as found."""

    chunk_id: str
    document_id: str
    document_version: int
    text: str
    title: str
    source_uri: str
    position: int
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk found by a search, with its similarity to the query."""

    chunk: StoredChunk
    score: float


@dataclass(frozen=True, slots=True)
class MetadataFilter:
    """Keep chunks whose ``key`` (``document_id``, or a metadata key) is one of ``values``."""

    key: str
    values: tuple[str, ...]


class ChunkStore(Protocol):
    """Where a tenant's chunks and their vectors are kept and searched."""

    async def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
    ) -> None:
        """Store ``chunks`` with their vectors; a chunk id stored before is overwritten."""
        ...

    async def search(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        vector: list[float],
        limit: int,
        threshold: float | None,
        filters: list[MetadataFilter],
    ) -> list[Hit]:
        """The chunks closest to ``vector``, best first."""
        ...

    async def delete_document(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        keep_version: int | None = None,
    ) -> int:
        """Remove a document's chunks (all, or all but ``keep_version``); return how many."""
        ...

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of a knowledge base."""
        ...
