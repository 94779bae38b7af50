"""What a stored chunk is, how a search asks for chunks, and the store that keeps them (the
port that the embedded engine's and the Qdrant server's adapters fill).

Every store call names the tenant: the store scopes each read and write to it, so one tenant
never reads or removes another's chunks.

A chunk is stored searchable, or staged: kept, but found by no search and counted by no stats
until its version is published, which also removes the document's other versions. That is how
a version sent in several calls replaces the previous one for readers all at once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from parley_retrieval.sparse import SparseVector


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


class SearchMode(enum.Enum):
    """How chunks are ranked: by embedding similarity, by keywords, or both fused."""

    DENSE = "dense"
    SPARSE = "sparse"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class ChunkQuery:
    """What a search asks the store for, within one tenant's knowledge base.

    ``dense`` is the query's embedding: required by the dense and hybrid modes, by a
    threshold and by diversity. ``sparse`` is its keyword vector (sparse and hybrid modes).
    ``threshold`` is a minimum cosine similarity to the query in every mode. ``dense_weight``
    is the dense ranking's share of a hybrid fusion (the sparse one has the rest); ``fusion_k``
    is reciprocal rank fusion's constant. ``diversity`` (0 to 1) re-ranks the candidates by
    maximal marginal relevance; None keeps the ranking as it is.
    """

    mode: SearchMode
    limit: int
    dense: list[float] | None = None
    sparse: SparseVector | None = None
    threshold: float | None = None
    filters: list[MetadataFilter] = field(default_factory=list)
    dense_weight: float = 0.5
    fusion_k: int = 60
    diversity: float | None = None


class ChunkStore(Protocol):
    """Where a tenant's chunks and their vectors are kept and searched."""

    async def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
        sparse: list[SparseVector],
        staged: bool = False,
    ) -> None:
        """Store ``chunks`` with their embeddings and keyword vectors (``staged``: not
        searchable until :meth:`publish`); a chunk id stored before is overwritten."""
        ...

    async def search(self, tenant_id: str, knowledge_base_id: str, query: ChunkQuery) -> list[Hit]:
        """The searchable chunks that best match ``query``, best first."""
        ...

    async def publish(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Make the staged chunks of a document's ``version`` searchable and remove the
        document's other versions (staged or not); return how many chunks were removed."""
        ...

    async def discard(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Remove the chunks of a document's ``version`` that are still staged; return how
        many."""
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

    async def delete_scope(self, tenant_id: str, knowledge_base_id: str) -> int:
        """Remove every chunk of a knowledge base; return how many."""
        ...

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of a knowledge base, searchable ones only."""
        ...

    async def close(self) -> None:
        """Persist what is pending and release the store."""
        ...
