"""Indexing and searching a tenant's knowledge bases: validation, embedding, the store.

Every call takes the tenant as its first argument; the servicer takes it from the caller's
principal, so nothing in a request can name another tenant.
"""

from __future__ import annotations

import time

from parley_embeddings import Embedder
from parley_retrieval.chunks import ChunkStore, Hit, MetadataFilter, StoredChunk
from parley_retrieval.metrics import INDEXED_CHUNKS, SEARCH_SECONDS
from parley_runtime.errors import InvalidArgument

MAX_TOP_K = 50
DEFAULT_TOP_K = 5
MAX_CHUNKS_PER_CALL = 512
MAX_CHUNK_CHARS = 20_000
MAX_QUERY_CHARS = 4_000


def _kb(knowledge_base_id: str) -> str:
    if not knowledge_base_id:
        raise InvalidArgument("knowledge_base_id: required", code="missing_knowledge_base")
    if len(knowledge_base_id) > 200:
        raise InvalidArgument(
            "knowledge_base_id: at most 200 characters", code="invalid_knowledge_base"
        )
    return knowledge_base_id


def _check_chunks(chunks: list[StoredChunk]) -> None:
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
            raise InvalidArgument(f"chunks[{index}].text: must not be empty", code="invalid_chunk")
        if len(chunk.text) > MAX_CHUNK_CHARS:
            raise InvalidArgument(
                f"chunks[{index}].text: at most {MAX_CHUNK_CHARS} characters",
                code="invalid_chunk",
            )


class Retrieval:
    """The service's logic over an embedder and a chunk store."""

    def __init__(self, embedder: Embedder, chunks: ChunkStore) -> None:
        self.embedder = embedder
        self.chunks = chunks

    async def search(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        query: str,
        top_k: int,
        threshold: float | None,
        filters: list[MetadataFilter],
    ) -> list[Hit]:
        """The tenant's chunks closest to ``query``, best first (``top_k`` 0: the default)."""
        kb = _kb(knowledge_base_id)
        if not query.strip():
            raise InvalidArgument("query: must not be empty", code="empty_query")
        if len(query) > MAX_QUERY_CHARS:
            raise InvalidArgument(
                f"query: at most {MAX_QUERY_CHARS} characters", code="query_too_long"
            )
        if not 0 <= top_k <= MAX_TOP_K:
            raise InvalidArgument(f"top_k: must be between 1 and {MAX_TOP_K}", code="invalid_top_k")
        for index, condition in enumerate(filters):
            if not condition.key or not condition.values or any(not v for v in condition.values):
                raise InvalidArgument(
                    f"filters[{index}]: needs a key and at least one non-empty value",
                    code="invalid_filter",
                )
        started = time.perf_counter()
        [vector] = await self.embedder.embed([query])
        hits = await self.chunks.search(
            tenant_id, kb, vector, top_k or DEFAULT_TOP_K, threshold, filters
        )
        SEARCH_SECONDS.observe(time.perf_counter() - started)
        return hits

    async def index(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        chunks: list[StoredChunk],
        replace: bool,
    ) -> int:
        """Embed and store one document version's chunks; with ``replace``, drop the
        document's other versions afterwards. Returns how many chunks were stored."""
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        _check_chunks(chunks)
        if chunks:
            vectors = await self.embedder.embed([c.text for c in chunks])
            await self.chunks.upsert(tenant_id, kb, chunks, vectors)
            INDEXED_CHUNKS.inc(len(chunks))
        if replace:
            await self.chunks.delete_document(tenant_id, kb, document_id, keep_version=version)
        return len(chunks)

    async def delete(self, tenant_id: str, knowledge_base_id: str, document_id: str) -> int:
        """Remove every chunk of the tenant's document; return how many."""
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        return await self.chunks.delete_document(tenant_id, kb, document_id)

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of the tenant's knowledge base."""
        return await self.chunks.stats(tenant_id, _kb(knowledge_base_id))
