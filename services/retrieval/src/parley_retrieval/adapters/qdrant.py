"""Chunks on a Qdrant server (``QDRANT_URL``), through qdrant-client's Query API.

One collection per embedding model and dimension, shared by every tenant (points as
:mod:`~parley_retrieval.adapters.points` lays them out), with ``tenant_id`` indexed as the
tenant key (``is_tenant``: Qdrant keeps each tenant's points together) and
``knowledge_base_id`` and ``document_id`` as keywords, ``staged`` as a bool. A hybrid search
is one call: a dense and a sparse prefetch fused by weighted reciprocal rank; diversity
re-ranks the candidates by maximal marginal relevance; keyword IDF is counted over the searched
knowledge base only, so one tenant's documents never weigh in another's ranking.

Publishing a version is two server calls, each awaited: its chunks unstaged, then the
document's other versions deleted. A search between the two may find both versions (never
neither); a failure between them leaves both until the publication is sent again.

qdrant-client's local mode (``QdrantClient(location=":memory:")``) speaks the same API in
pure Python; the tests run this adapter on it, as a stand-in for a server.
"""

from __future__ import annotations

from typing import Any

from qdrant_client import AsyncQdrantClient, models

from parley_retrieval import ranking
from parley_retrieval.adapters.points import (
    DENSE,
    DOCUMENT,
    KNOWLEDGE_BASE,
    SPARSE,
    STAGED,
    TENANT,
    VERSION,
    chunk,
    field,
    payload,
    point_id,
)
from parley_retrieval.chunks import ChunkQuery, Hit, MetadataFilter, SearchMode, StoredChunk
from parley_retrieval.sparse import SparseVector


def _scope(tenant_id: str, knowledge_base_id: str) -> list[models.Condition]:
    return [
        models.FieldCondition(key=TENANT, match=models.MatchValue(value=tenant_id)),
        models.FieldCondition(key=KNOWLEDGE_BASE, match=models.MatchValue(value=knowledge_base_id)),
    ]


def _match(key: str, value: str | int | bool) -> models.Condition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def _searchable(tenant_id: str, knowledge_base_id: str, *more: models.Condition) -> models.Filter:
    """The scope's points that searches and counts may see: every one not staged."""
    return models.Filter(
        must=[*_scope(tenant_id, knowledge_base_id), *more], must_not=[_match(STAGED, True)]
    )


def _condition(condition: MetadataFilter) -> models.Condition:
    """A filter on ``document_id`` or on a metadata key, matching any of its values."""
    key, values = field(condition.key), list(condition.values)
    if len(values) == 1:
        return models.FieldCondition(key=key, match=models.MatchValue(value=values[0]))
    return models.FieldCondition(key=key, match=models.MatchAny(any=values))


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


class QdrantChunks:
    """:class:`~parley_retrieval.chunks.ChunkStore` on Qdrant's API (see the module
    docstring). ``hnsw`` is (m, ef_construct) for a new collection, ``hnsw_ef`` the search's."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        dimensions: int,
        *,
        hnsw: tuple[int, int] = (16, 200),
        hnsw_ef: int = 256,
    ) -> None:
        self.client = client
        self.collection = collection
        self.dimensions = dimensions
        self.hnsw = hnsw
        self.hnsw_ef = hnsw_ef

    async def ensure_collection(self) -> None:
        if not await self.client.collection_exists(self.collection):
            await self._create_collection()
        described = await self.client.get_collection(self.collection)
        if STAGED not in (described.payload_schema or {}):  # also in collections made before it
            await self.client.create_payload_index(
                self.collection, STAGED, models.PayloadSchemaType.BOOL
            )

    async def _create_collection(self) -> None:
        m, ef_construct = self.hnsw
        await self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE: models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE)
            },
            sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            hnsw_config=models.HnswConfigDiff(m=m, ef_construct=ef_construct),
        )
        for name, tenant in ((TENANT, True), (KNOWLEDGE_BASE, False), (DOCUMENT, False)):
            await self.client.create_payload_index(
                self.collection,
                name,
                models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=tenant),
            )

    async def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
        sparse: list[SparseVector],
        staged: bool = False,
    ) -> None:
        points = [
            models.PointStruct(
                id=point_id(tenant_id, knowledge_base_id, c.chunk_id),
                vector={DENSE: vector, SPARSE: _sparse(keywords)},
                payload=payload(tenant_id, knowledge_base_id, c, staged),
            )
            for c, vector, keywords in zip(chunks, vectors, sparse, strict=True)
        ]
        # Staged: a searchable point of the same id is left alone (points.py says why).
        only_staged = models.Filter(must=[_match(STAGED, True)]) if staged else None
        await self.client.upsert(
            self.collection, points=points, wait=True, update_filter=only_staged
        )

    async def search(self, tenant_id: str, knowledge_base_id: str, query: ChunkQuery) -> list[Hit]:
        where = _searchable(tenant_id, knowledge_base_id, *(_condition(f) for f in query.filters))
        depth = ranking.candidates(query)
        dense_params = models.SearchParams(hnsw_ef=max(self.hnsw_ef, depth))
        # IDF over the searched knowledge base: another tenant's documents never count.
        corpus = models.IdfCorpusParams(corpus=_searchable(tenant_id, knowledge_base_id))
        sparse_params = models.SearchParams(idf=corpus)
        dense_vector = query.dense or []
        keyword_vector = _sparse(query.sparse or SparseVector((), ()))
        dense = models.Prefetch(
            query=dense_vector,
            using=DENSE,
            limit=depth,
            params=dense_params,
            filter=where,
            score_threshold=query.threshold,
        )
        keywords = models.Prefetch(
            query=keyword_vector, using=SPARSE, limit=depth, params=sparse_params, filter=where
        )
        weights = list(ranking.fusion_weights(query.dense_weight))
        fusion = models.RrfQuery(rrf=models.Rrf(k=query.fusion_k, weights=weights))
        vectors = ranking.needs_vectors(query)
        request: dict[str, Any] = {
            "query_filter": where,
            "limit": depth if vectors else query.limit,
            "with_payload": True,
            "with_vectors": [DENSE] if vectors else False,
        }
        if query.diversity is not None:
            # Maximal marginal relevance over the mode's candidates, by the dense vector.
            stage = {
                SearchMode.DENSE: dense,
                SearchMode.SPARSE: keywords,
                SearchMode.HYBRID: models.Prefetch(
                    prefetch=[dense, keywords], query=fusion, limit=depth, filter=where
                ),
            }[query.mode]
            mmr = models.Mmr(diversity=query.diversity, candidates_limit=depth)
            request |= {
                "prefetch": [stage],
                "query": models.NearestQuery(nearest=dense_vector, mmr=mmr),
                "using": DENSE,
            }
        elif query.mode is SearchMode.HYBRID:
            request |= {"prefetch": [dense, keywords], "query": fusion}
        elif query.mode is SearchMode.SPARSE:
            request |= {"query": keyword_vector, "using": SPARSE, "search_params": sparse_params}
        else:
            request |= {
                "query": dense_vector,
                "using": DENSE,
                "search_params": dense_params,
                "score_threshold": query.threshold,
            }
        found = await self.client.query_points(self.collection, **request)
        candidates = [
            (chunk(p.payload or {}), float(p.score), _dense_of(p) if vectors else None)
            for p in found.points
        ]
        return ranking.finish(candidates, query)

    async def delete_document(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        document_id: str,
        keep_version: int | None = None,
    ) -> int:
        """Remove a document's points (all, or all but ``keep_version``); return how many."""
        must = [
            *_scope(tenant_id, knowledge_base_id),
            models.FieldCondition(key=DOCUMENT, match=models.MatchValue(value=document_id)),
        ]
        must_not: list[models.Condition] = []
        if keep_version is not None:
            must_not.append(
                models.FieldCondition(key=VERSION, match=models.MatchValue(value=keep_version))
            )
        selector = models.Filter(must=must, must_not=must_not)
        counted = await self.client.count(self.collection, count_filter=selector, exact=True)
        if counted.count:
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )
        return int(counted.count)

    async def delete_scope(self, tenant_id: str, knowledge_base_id: str) -> int:
        """Remove every point of a knowledge base; return how many."""
        selector = models.Filter(must=_scope(tenant_id, knowledge_base_id))
        counted = await self.client.count(self.collection, count_filter=selector, exact=True)
        if counted.count:
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )
        return int(counted.count)

    async def publish(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Unstage the version's chunks, then delete the document's other versions (see the
        module docstring); return how many chunks were deleted."""
        document = [*_scope(tenant_id, knowledge_base_id), _match(DOCUMENT, document_id)]
        staged = models.Filter(must=[*document, _match(VERSION, version), _match(STAGED, True)])
        await self.client.delete_payload(
            self.collection,
            keys=[STAGED],
            points=models.FilterSelector(filter=staged),
            wait=True,
        )
        others = models.Filter(must=document, must_not=[_match(VERSION, version)])
        return await self._delete(others)

    async def discard(
        self, tenant_id: str, knowledge_base_id: str, document_id: str, version: int
    ) -> int:
        """Remove the version's chunks that are still staged; return how many."""
        document = [*_scope(tenant_id, knowledge_base_id), _match(DOCUMENT, document_id)]
        return await self._delete(
            models.Filter(must=[*document, _match(VERSION, version), _match(STAGED, True)])
        )

    async def _delete(self, selector: models.Filter) -> int:
        counted = await self.client.count(self.collection, count_filter=selector, exact=True)
        if counted.count:
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )
        return int(counted.count)

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of a knowledge base, searchable ones only."""
        scope = _searchable(tenant_id, knowledge_base_id)
        chunks = (await self.client.count(self.collection, count_filter=scope, exact=True)).count
        documents = await self.client.facet(
            self.collection, key=DOCUMENT, facet_filter=scope, limit=1_000_000, exact=True
        )
        return int(chunks), len(documents.hits)

    async def close(self) -> None:
        await self.client.close()


def _dense_of(point: models.ScoredPoint) -> list[float] | None:
    vector: Any = point.vector
    found = vector.get(DENSE) if isinstance(vector, dict) else None
    return [float(x) for x in found] if isinstance(found, list) else None
