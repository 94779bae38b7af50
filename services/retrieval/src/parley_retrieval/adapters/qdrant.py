"""Chunks as Qdrant points, in one collection shared by every tenant.

Each point carries ``tenant_id`` and ``knowledge_base_id`` in its payload (indexed, the
tenant one as Qdrant's tenant key), and every query and deletion filters on both: a tenant
never reads or removes another's points. Point ids are deterministic (uuid5 of tenant,
knowledge base and chunk id), so indexing the same chunk again overwrites it.

The same code runs against a Qdrant server (``QDRANT_URL``) or embedded Qdrant (a folder, or
memory); embedded Qdrant ignores payload indexes.
"""

from __future__ import annotations

import uuid
from typing import Any

from qdrant_client import AsyncQdrantClient, models

from parley_retrieval.chunks import Hit, MetadataFilter, StoredChunk

NAMESPACE = uuid.UUID("6f1c7a52-4a1f-4c43-9d4e-1d8f0c5e3b21")
DENSE = "dense"


def point_id(tenant_id: str, knowledge_base_id: str, chunk_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{tenant_id}\x1f{knowledge_base_id}\x1f{chunk_id}"))


def _scope(tenant_id: str, knowledge_base_id: str) -> list[models.Condition]:
    return [
        models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id)),
        models.FieldCondition(
            key="knowledge_base_id", match=models.MatchValue(value=knowledge_base_id)
        ),
    ]


class QdrantChunks:
    """:class:`~parley_retrieval.chunks.ChunkStore` on Qdrant (see the module docstring)."""

    def __init__(
        self, client: AsyncQdrantClient, collection: str, dimensions: int, *, server: bool
    ) -> None:
        self.client = client
        self.collection = collection
        self.dimensions = dimensions
        self.server = server

    async def ensure_collection(self) -> None:
        if await self.client.collection_exists(self.collection):
            return
        await self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE: models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE)
            },
        )
        if not self.server:
            return  # embedded Qdrant has no payload indexes
        for field, tenant in (
            ("tenant_id", True),
            ("knowledge_base_id", False),
            ("document_id", False),
        ):
            await self.client.create_payload_index(
                self.collection,
                field,
                models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=tenant),
            )

    async def upsert(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        chunks: list[StoredChunk],
        vectors: list[list[float]],
    ) -> None:
        points = [
            models.PointStruct(
                id=point_id(tenant_id, knowledge_base_id, chunk.chunk_id),
                vector={DENSE: vector},
                payload={
                    "tenant_id": tenant_id,
                    "knowledge_base_id": knowledge_base_id,
                    "document_id": chunk.document_id,
                    "document_version": chunk.document_version,
                    "chunk_id": chunk.chunk_id,
                    "text": chunk.text,
                    "title": chunk.title,
                    "source_uri": chunk.source_uri,
                    "position": chunk.position,
                    "metadata": chunk.metadata,
                },
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        await self.client.upsert(self.collection, points=points, wait=True)

    async def search(
        self,
        tenant_id: str,
        knowledge_base_id: str,
        vector: list[float],
        limit: int,
        threshold: float | None,
        filters: list[MetadataFilter],
    ) -> list[Hit]:
        conditions = [_condition(f) for f in filters]
        found = await self.client.query_points(
            self.collection,
            query=vector,
            using=DENSE,
            query_filter=models.Filter(must=[*_scope(tenant_id, knowledge_base_id), *conditions]),
            limit=limit,
            score_threshold=threshold,
            with_payload=True,
        )
        return [Hit(_chunk(p.payload or {}), float(p.score)) for p in found.points]

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
            models.FieldCondition(key="document_id", match=models.MatchValue(value=document_id)),
        ]
        must_not: list[models.Condition] = []
        if keep_version is not None:
            must_not.append(
                models.FieldCondition(
                    key="document_version", match=models.MatchValue(value=keep_version)
                )
            )
        selector = models.Filter(must=must, must_not=must_not)
        counted = await self.client.count(self.collection, count_filter=selector, exact=True)
        if counted.count:
            await self.client.delete(
                self.collection, points_selector=models.FilterSelector(filter=selector), wait=True
            )
        return int(counted.count)

    async def stats(self, tenant_id: str, knowledge_base_id: str) -> tuple[int, int]:
        """(chunks, documents) of a knowledge base."""
        scope = models.Filter(must=_scope(tenant_id, knowledge_base_id))
        chunks = (await self.client.count(self.collection, count_filter=scope, exact=True)).count
        documents: set[str] = set()
        offset: Any = None
        while True:
            points, offset = await self.client.scroll(
                self.collection,
                scroll_filter=scope,
                limit=1024,
                offset=offset,
                with_payload=["document_id"],
                with_vectors=False,
            )
            documents.update(str((p.payload or {}).get("document_id")) for p in points)
            if offset is None:
                break
        return int(chunks), len(documents)

    async def close(self) -> None:
        await self.client.close()


def _chunk(payload: dict[str, Any]) -> StoredChunk:
    return StoredChunk(
        chunk_id=str(payload.get("chunk_id", "")),
        document_id=str(payload.get("document_id", "")),
        document_version=int(payload.get("document_version", 0)),
        text=str(payload.get("text", "")),
        title=str(payload.get("title", "")),
        source_uri=str(payload.get("source_uri", "")),
        position=int(payload.get("position", 0)),
        metadata={str(k): str(v) for k, v in (payload.get("metadata") or {}).items()},
    )


def _condition(condition: MetadataFilter) -> models.Condition:
    """A filter on ``document_id`` or on a metadata key, matching any of its values."""
    key, values = condition.key, list(condition.values)
    field = "document_id" if key == "document_id" else f"metadata.{key}"
    if len(values) == 1:
        return models.FieldCondition(key=field, match=models.MatchValue(value=values[0]))
    return models.FieldCondition(key=field, match=models.MatchAny(any=values))
