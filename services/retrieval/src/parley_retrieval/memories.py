"""Users' long-term memories: indexing, similarity search and deletion.

Memories live in a collection of their own, apart from knowledge bases (the service opens a
second :class:`~parley_retrieval.chunks.ChunkStore` for them, on the same backend). In that
store a memory is a point scoped like a chunk, by tenant and by a second key that, in the
memory collection, is the user: every call names both, and the servicer takes both from the
caller's principal, so one user never reads or removes another's memories. The memory's id is
the point's document id; indexing an id again replaces its text.

The text and ids are the conversation service's (its database is the source of truth); this
index only finds which of them are similar to a query, by cosine similarity of embeddings.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from parley_embeddings import Embedder
from parley_retrieval.chunks import ChunkQuery, ChunkStore, SearchMode, StoredChunk
from parley_retrieval.query_embeddings import QueryEmbeddings
from parley_retrieval.sparse import SparseEncoder
from parley_runtime.errors import InvalidArgument

MAX_MEMORIES_PER_CALL = 100
MAX_MEMORY_ID_CHARS = 200
MAX_MEMORY_CHARS = 2_000
MAX_QUERY_CHARS = 4_000
MAX_TOP_K = 50
DEFAULT_TOP_K = 5


@dataclass(frozen=True, slots=True)
class MemoryText:
    """A memory as indexed: its id and its text."""

    memory_id: str
    text: str


@dataclass(frozen=True, slots=True)
class FoundMemory:
    """A memory found by a search, with its cosine similarity to the query."""

    memory_id: str
    text: str
    score: float


def _user(user_id: str) -> str:
    if not user_id:
        raise InvalidArgument("the caller has no user", code="missing_user")
    return user_id


def _check_memory_id(name: str, memory_id: str) -> None:
    if not memory_id or len(memory_id) > MAX_MEMORY_ID_CHARS:
        raise InvalidArgument(
            f"{name}: 1 to {MAX_MEMORY_ID_CHARS} characters", code="invalid_memory"
        )


def _check(memories: list[MemoryText]) -> None:
    if len(memories) > MAX_MEMORIES_PER_CALL:
        raise InvalidArgument(
            f"memories: at most {MAX_MEMORIES_PER_CALL} per call", code="too_many_memories"
        )
    seen: set[str] = set()
    for index, memory in enumerate(memories):
        _check_memory_id(f"memories[{index}].memory_id", memory.memory_id)
        if memory.memory_id in seen:
            raise InvalidArgument(
                f"memories[{index}].memory_id: {memory.memory_id!r} is repeated",
                code="invalid_memory",
            )
        seen.add(memory.memory_id)
        if not memory.text.strip():
            raise InvalidArgument(
                f"memories[{index}].text: must not be empty", code="invalid_memory"
            )
        if len(memory.text) > MAX_MEMORY_CHARS:
            raise InvalidArgument(
                f"memories[{index}].text: at most {MAX_MEMORY_CHARS} characters",
                code="invalid_memory",
            )


def _point(memory: MemoryText) -> StoredChunk:
    return StoredChunk(
        chunk_id=memory.memory_id,
        document_id=memory.memory_id,
        document_version=1,
        text=memory.text,
        title="",
        source_uri="",
        position=0,
        metadata={},
    )


class MemoryIndex:
    """The memory collection of every tenant and user (see the module docstring)."""

    def __init__(
        self,
        embedder: Embedder,
        store: ChunkStore,
        *,
        queries: QueryEmbeddings | None = None,
        sparse: SparseEncoder | None = None,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.queries = queries or QueryEmbeddings(embedder)
        self.sparse = sparse or SparseEncoder()

    async def index(self, tenant_id: str, user_id: str, memories: list[MemoryText]) -> int:
        """Embed and store the user's ``memories``; return how many."""
        user = _user(user_id)
        _check(memories)
        if not memories:
            return 0
        texts = [m.text for m in memories]
        vectors, keywords = await asyncio.gather(
            self.embedder.embed(texts), asyncio.to_thread(self.sparse.documents, texts)
        )
        await self.store.upsert(tenant_id, user, [_point(m) for m in memories], vectors, keywords)
        return len(memories)

    async def search(
        self, tenant_id: str, user_id: str, query: str, top_k: int, threshold: float | None
    ) -> list[FoundMemory]:
        """The user's memories most similar to ``query``, most similar first (``top_k`` 0:
        the default)."""
        user = _user(user_id)
        if not query.strip():
            raise InvalidArgument("query: must not be empty", code="empty_query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(
                f"query: at most {MAX_QUERY_CHARS} characters", code="query_too_long"
            )
        if not 0 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k: must be between 1 and {MAX_TOP_K}", code="invalid_top_k")
        if threshold is not None and not (math.isfinite(threshold) and -1 <= threshold <= 1):
            raise InvalidArgument(
                "score_threshold: a similarity between -1 and 1", code="invalid_score_threshold"
            )
        request = ChunkQuery(
            mode=SearchMode.DENSE,
            limit=top_k or DEFAULT_TOP_K,
            dense=await self.queries.embed(query),
            threshold=threshold,
        )
        hits = await self.store.search(tenant_id, user, request)
        return [FoundMemory(h.chunk.document_id, h.chunk.text, h.score) for h in hits]

    async def delete(self, tenant_id: str, user_id: str, memory_ids: list[str]) -> int:
        """Remove the user's memories named; return how many were found."""
        user = _user(user_id)
        if len(memory_ids) > MAX_MEMORIES_PER_CALL:
            raise InvalidArgument(
                f"memory_ids: at most {MAX_MEMORIES_PER_CALL} per call", code="too_many_memories"
            )
        for index, memory_id in enumerate(memory_ids):
            _check_memory_id(f"memory_ids[{index}]", memory_id)
        deleted = 0
        for memory_id in dict.fromkeys(memory_ids):
            deleted += await self.store.delete_document(tenant_id, user, memory_id)
        return deleted

    async def delete_all(self, tenant_id: str, user_id: str) -> int:
        """Remove every memory of the user; return how many."""
        return await self.store.delete_scope(tenant_id, _user(user_id))
