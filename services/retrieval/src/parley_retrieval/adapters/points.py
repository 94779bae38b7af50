"""A chunk as a Qdrant point, the same in both stores (the embedded engine and a server).

A point's id is deterministic (uuid5 of tenant, knowledge base and chunk id), so indexing the
same chunk again overwrites it. Its payload carries ``tenant_id`` and ``knowledge_base_id``,
both indexed as keywords (the tenant one as the tenant key), and every read and deletion
filters on both. Beside the payload a point has two vectors: ``dense`` (the embedding,
cosine) and ``sparse`` (keywords, with the engine's IDF modifier).

A chunk of a version not yet published carries ``staged: true`` (indexed as a bool): every
search and count leaves such points out, and publishing the version removes the field. A
point without it is searchable, as every point written before staging existed is. Staging
never overwrites a searchable point: a chunk staged again once its version was published (a
job's retry whose first attempt got that far) leaves the searchable one as it is, rather than
hiding it until the next publication.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from parley_retrieval.chunks import StoredChunk

NAMESPACE = uuid.UUID("6f1c7a52-4a1f-4c43-9d4e-1d8f0c5e3b21")
DENSE = "dense"
SPARSE = "sparse"
TENANT = "tenant_id"
KNOWLEDGE_BASE = "knowledge_base_id"
DOCUMENT = "document_id"
VERSION = "document_version"
STAGED = "staged"


def point_id(tenant_id: str, knowledge_base_id: str, chunk_id: str) -> str:
    return str(uuid.uuid5(NAMESPACE, f"{tenant_id}\x1f{knowledge_base_id}\x1f{chunk_id}"))


def collection_name(prefix: str, model: str, dimensions: int) -> str:
    """One collection per embedding model and dimension: vectors of two models never mix, and
    changing the model starts an empty collection beside the old one."""
    slug = re.sub(r"[^a-z0-9]+", "-", model.lower()).strip("-")
    return f"{prefix}-{slug}-{dimensions}"


def payload(
    tenant_id: str, knowledge_base_id: str, chunk: StoredChunk, staged: bool = False
) -> dict[str, Any]:
    fields: dict[str, Any] = {STAGED: True} if staged else {}
    return fields | {
        TENANT: tenant_id,
        KNOWLEDGE_BASE: knowledge_base_id,
        DOCUMENT: chunk.document_id,
        VERSION: chunk.document_version,
        "chunk_id": chunk.chunk_id,
        "text": chunk.text,
        "title": chunk.title,
        "source_uri": chunk.source_uri,
        "position": chunk.position,
        "metadata": chunk.metadata,
    }


def chunk(payload: dict[str, Any]) -> StoredChunk:
    return StoredChunk(
        chunk_id=str(payload.get("chunk_id", "")),
        document_id=str(payload.get(DOCUMENT, "")),
        document_version=int(payload.get(VERSION, 0)),
        text=str(payload.get("text", "")),
        title=str(payload.get("title", "")),
        source_uri=str(payload.get("source_uri", "")),
        position=int(payload.get("position", 0)),
        metadata={str(k): str(v) for k, v in (payload.get("metadata") or {}).items()},
    )


def field(key: str) -> str:
    """The payload field a filter's key names: ``document_id``, or a metadata key."""
    return DOCUMENT if key == DOCUMENT else f"metadata.{key}"
