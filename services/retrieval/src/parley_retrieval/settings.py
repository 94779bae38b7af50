"""retrieval settings, read from the environment (see the table in services/retrieval/README.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Where vectors live and which model makes them."""

    grpc_port: int = Field(50063, ge=0, le=65535)
    qdrant_url: str | None = Field(None, description="A Qdrant server; unset means embedded.")
    qdrant_path: str = Field(
        ".parley/qdrant", description="The embedded engine's folder, or :memory:"
    )
    qdrant_api_key: str | None = None
    qdrant_collection: str = Field(
        "parley_chunks",
        pattern=r"^[A-Za-z0-9_-]{1,100}$",
        description="Prefix of the collections' names, one per embedding model and dimension.",
    )
    memory_collection: str = Field(
        "parley_memories",
        pattern=r"^[A-Za-z0-9_-]{1,100}$",
        description="Prefix of the names of users' memory collections, apart from knowledge "
        "bases, one per embedding model and dimension.",
    )
    search_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="The mode of a search whose request names none."
    )
    hybrid_dense_weight: float = Field(
        0.5, ge=0, le=1, description="The dense ranking's weight in a hybrid fusion."
    )
    hybrid_rrf_k: int = Field(60, ge=1, le=1000, description="Reciprocal rank fusion's k.")
    # Tuned on real embeddings: recall@10 against exact search 0.995 or more, within a tenant
    # holding half the points too (bench/results/2026-12-04-retrieval-search.md).
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construct: int = Field(200, ge=4, le=1000)
    hnsw_ef: int = Field(256, ge=1, le=4096, description="Candidates an HNSW search explores.")
    index_after_points: int = Field(
        5000, ge=100, description="Embedded: unindexed chunks that start an HNSW index build."
    )
    embeddings_provider: Literal["local", "openai"] = "local"
    embeddings_base_url: str | None = None
    embeddings_api_key: str | None = None
    embeddings_model: str = "text-embedding-3-small"
    embeddings_dimensions: int = Field(1536, gt=0)
    embeddings_threads: int = Field(2, ge=1, le=64)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> Settings:
        if self.embeddings_provider == "openai" and not self.embeddings_base_url:
            raise ValueError("EMBEDDINGS_BASE_URL is required when EMBEDDINGS_PROVIDER=openai")
        return self

    @model_validator(mode="after")
    def _memories_apart(self) -> Settings:
        if self.memory_collection == self.qdrant_collection:
            raise ValueError("MEMORY_COLLECTION must differ from QDRANT_COLLECTION")
        return self
