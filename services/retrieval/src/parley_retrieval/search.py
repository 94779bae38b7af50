"""Indexing and searching a tenant's knowledge bases: validation, embedding, the store.

The tenant always comes from the caller's principal; nothing in a request can name another.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Histogram

from parley_embeddings import Embedder
from parley_retrieval.adapters.qdrant import Hit, QdrantChunks, StoredChunk, metadata_condition
from parley_runtime.context import current_principal
from parley_runtime.errors import InvalidArgument

MAX_TOP_K = 50
DEFAULT_TOP_K = 5
MAX_CHUNKS_PER_CALL = 512
MAX_CHUNK_CHARS = 20_000
MAX_QUERY_CHARS = 4_000

SEARCH_SECONDS = Histogram(
    "parley_retrieval_search_seconds",
    "Search latency, embedding included.",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
INDEXED = Counter("parley_retrieval_indexed_chunks_total", "Chunks embedded and stored.")


def _kb(knowledge_base_id: str) -> str:
    if not knowledge_base_id:
        raise InvalidArgument("knowledge_base_id: required", code="missing_knowledge_base")
    if len(knowledge_base_id) > 200:
        raise InvalidArgument(
            "knowledge_base_id: at most 200 characters", code="invalid_knowledge_base"
        )
    return knowledge_base_id


class Retrieval:
    """The service's logic over an embedder and a chunk store."""

    def __init__(self, embedder: Embedder, chunks: QdrantChunks) -> None:
        self.embedder = embedder
        self.chunks = chunks

    async def search(
        self,
        knowledge_base_id: str,
        query: str,
        top_k: int,
        threshold: float | None,
        filters: list[tuple[str, list[str]]],
    ) -> list[Hit]:
        kb = _kb(knowledge_base_id)
        if not query.strip():
            raise InvalidArgument("query: must not be empty", code="empty_query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(
                f"query: at most {MAX_QUERY_CHARS} characters", code="query_too_long"
            )
        if not 0 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k: must be between 1 and {MAX_TOP_K}", code="invalid_top_k")
        conditions = []
        for index, (key, values) in enumerate(filters):
            if not key or not values or any(not v for v in values):
                raise InvalidArgument(
                    f"filters[{index}]: needs a key and at least one non-empty value",
                    code="invalid_filter",
                )
            conditions.append(metadata_condition(key, values))
        tenant = current_principal().tenant_id
        started = time.perf_counter()
        [vector] = await self.embedder.embed([query])
        hits = await self.chunks.search(
            tenant, kb, vector, top_k or DEFAULT_TOP_K, threshold, conditions
        )
        SEARCH_SECONDS.observe(time.perf_counter() - started)
        return hits

    async def index(
        self,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        chunks: list[StoredChunk],
        replace: bool,
    ) -> int:
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        if len(chunks) > MAX_CHUNKS_PER_CALL:
            raise InvalidArgument(
                f"chunks: at most {MAX_CHUNKS_PER_CALL} per call", code="too_many_chunks"
            )
        seen: set[str] = set()
        for index, chunk in enumerate(chunks):
            if not chunk.chunk_id:
                raise InvalidArgument(f"chunks[{index}].chunk_id: required", code="invalid_chunk")
            if chunk.chunk_id in seen:
                raise InvalidArgument(
                    f"chunks[{index}].chunk_id: {chunk.chunk_id!r} is repeated",
                    code="invalid_chunk",
                )
            seen.add(chunk.chunk_id)
            if not chunk.text.strip():
                raise InvalidArgument(
                    f"chunks[{index}].text: must not be empty", code="invalid_chunk"
                )
            if len(chunk.text) > MAX_CHUNK_CHARS:
                raise InvalidArgument(
                    f"chunks[{index}].text: at most {MAX_CHUNK_CHARS} characters",
                    code="invalid_chunk",
                )
        tenant = current_principal().tenant_id
        if chunks:
            vectors = await self.embedder.embed([c.text for c in chunks])
            await self.chunks.upsert(tenant, kb, chunks, vectors)
            INDEXED.inc(len(chunks))
        if replace:
            await self.chunks.delete_document(tenant, kb, document_id, keep_version=version)
        return len(chunks)

    async def delete(self, knowledge_base_id: str, document_id: str) -> int:
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        return await self.chunks.delete_document(current_principal().tenant_id, kb, document_id)

    async def stats(self, knowledge_base_id: str) -> tuple[int, int]:
        return await self.chunks.stats(current_principal().tenant_id, _kb(knowledge_base_id))
