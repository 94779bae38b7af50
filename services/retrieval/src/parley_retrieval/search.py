"""Indexing and searching a tenant's knowledge bases: validation, embedding, the store.

Every call takes the tenant as its first argument; the servicer takes it from the caller's
principal, so nothing in a request can name another tenant.

While tracing, a search in the store and an embedding of documents are spans of their own (a
query's embedding is one in :mod:`.query_embeddings`).
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from opentelemetry import trace

from parley_embeddings import Embedder
from parley_retrieval.chunks import (
    ChunkQuery,
    ChunkStore,
    Hit,
    MetadataFilter,
    SearchMode,
    StoredChunk,
)
from parley_retrieval.metrics import EMBED_DOCUMENTS, INDEXED_CHUNKS, SEARCH_SECONDS, SEARCHES
from parley_retrieval.query_embeddings import QueryEmbeddings
from parley_retrieval.rerank import NoReranking, Reranker
from parley_retrieval.sparse import SparseEncoder
from parley_runtime import telemetry
from parley_runtime.errors import InvalidArgument

MAX_TOP_K = 50
DEFAULT_TOP_K = 5
MAX_CHUNKS_PER_CALL = 512
MAX_CHUNK_CHARS = 20_000
MAX_QUERY_CHARS = 4_000

_tracer = trace.get_tracer("parley.retrieval")


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


def _fraction(name: str, value: float | None) -> float | None:
    if value is not None and not 0 <= value <= 1:
        raise InvalidArgument(f"{name}: must be between 0 and 1", code=f"invalid_{name}")
    return value


@dataclass(frozen=True, slots=True)
class SearchDefaults:
    """What a search uses when its request does not say: the mode, the dense ranking's weight
    in a hybrid fusion, and reciprocal rank fusion's k."""

    mode: SearchMode = SearchMode.HYBRID
    dense_weight: float = 0.5
    fusion_k: int = 60


class Retrieval:
    """The service's logic over an embedder, a keyword encoder and a chunk store."""

    def __init__(
        self,
        embedder: Embedder,
        chunks: ChunkStore,
        *,
        defaults: SearchDefaults | None = None,
        sparse: SparseEncoder | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.embedder = embedder
        self.chunks = chunks
        self.defaults = defaults or SearchDefaults()
        self.sparse = sparse or SparseEncoder()
        self.reranker = reranker or NoReranking()
        self.queries = QueryEmbeddings(embedder)

    async def search(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        query: str,
        top_k: int,
        threshold: float | None,
        filters: list[MetadataFilter],
        *,
        mode: SearchMode | None = None,
        dense_weight: float | None = None,
        diversity: float | None = None,
    ) -> tuple[list[Hit], SearchMode]:
        """The tenant's chunks that best match ``query``, best first (``top_k`` 0: the
        default), and the mode they were ranked in (``mode`` None: the default)."""
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
        if threshold is not None and not (math.isfinite(threshold) and -1 <= threshold <= 1):
            raise InvalidArgument(
                "score_threshold: a similarity between -1 and 1", code="invalid_score_threshold"
            )
        _fraction("dense_weight", dense_weight)
        _fraction("diversity", diversity)
        started = time.perf_counter()
        mode = mode or self.defaults.mode
        keywords = self.sparse.query(query) if mode is not SearchMode.DENSE else None
        if mode is SearchMode.HYBRID and not keywords:
            mode = SearchMode.DENSE  # nothing but stop words: the embedding alone ranks
        if mode is SearchMode.SPARSE and not keywords:
            SEARCHES.labels(mode.value, "empty").inc()
            return [], mode
        needs_embedding = (
            mode is not SearchMode.SPARSE or threshold is not None or diversity is not None
        )
        limit = top_k or DEFAULT_TOP_K
        request = ChunkQuery(
            mode=mode,
            limit=self.reranker.candidates(limit),
            dense=await self.queries.embed(query) if needs_embedding else None,
            sparse=keywords,
            threshold=threshold,
            filters=filters,
            dense_weight=self.defaults.dense_weight if dense_weight is None else dense_weight,
            fusion_k=self.defaults.fusion_k,
            diversity=diversity,
        )
        with telemetry.span(
            _tracer,
            "search chunks",
            {
                "db.system.name": "qdrant",
                "db.operation.name": "search",
                "parley.search.mode": mode.value,
                "parley.search.limit": request.limit,
            },
            trace.SpanKind.CLIENT,
        ) as span:
            hits = await self.chunks.search(tenant_id, kb, request)
            span.set_attribute("parley.search.hits", len(hits))
        hits = await self.reranker.rerank(query, hits, limit)
        SEARCH_SECONDS.labels(mode.value).observe(
            time.perf_counter() - started, telemetry.exemplar()
        )
        SEARCHES.labels(mode.value, "hits" if hits else "empty").inc()
        return hits, mode

    async def index(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        version: int,
        chunks: list[StoredChunk],
        replace: bool,
        staged: bool = False,
    ) -> int:
        """Embed and store one document version's chunks. ``staged`` ones are kept out of
        searches; ``replace`` publishes the version (its staged chunks and these) and drops the
        document's other versions. Returns how many chunks were stored."""
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        if staged and replace:
            raise InvalidArgument(
                "staged and replace: a call either stages chunks or publishes its version",
                code="staged_and_replace",
            )
        _check_chunks(chunks)
        if chunks:
            texts = [c.text for c in chunks]
            vectors, keywords = await asyncio.gather(
                self._embed_documents(texts), asyncio.to_thread(self.sparse.documents, texts)
            )
            # A replacing call's own chunks are staged too: its publication shows them with
            # the rest of their version, never beside the old one.
            await self.chunks.upsert(
                tenant_id, kb, chunks, vectors, keywords, staged=staged or replace
            )
            INDEXED_CHUNKS.inc(len(chunks))
        if replace:
            await self.chunks.publish(tenant_id, kb, document_id, version)
        return len(chunks)

    async def _embed_documents(self, texts: list[str]) -> list[list[float]]:
        with telemetry.span(
            _tracer, "embed documents", {"parley.embedding.batch_size": len(texts)}
        ):
            started = time.perf_counter()
            vectors = await self.embedder.embed(texts)
            EMBED_DOCUMENTS.observe(time.perf_counter() - started, telemetry.exemplar())
        return vectors

    async def delete(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        staged_version: int | None = None,
    ) -> int:
        """Remove every chunk of the tenant's document, or (``staged_version``) only that
        version's staged chunks; return how many."""
        kb = _kb(knowledge_base_id)
        if not document_id:
            raise InvalidArgument("document_id: required", code="missing_document")
        if staged_version is not None:
            return await self.chunks.discard(tenant_id, kb, document_id, staged_version)
        return await self.chunks.delete_document(tenant_id, kb, document_id)

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of the tenant's knowledge base."""
        return await self.chunks.stats(tenant_id, _kb(knowledge_base_id))
