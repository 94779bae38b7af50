"""retrieval settings, read from the environment (see the table in services/retrieval/README.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Where vectors live and which model makes them."""

    grpc_port: int = Field(50063, ge=0, le=65535)
    qdrant_url: str | None = Field(None, description="A Qdrant server; unset means embedded.")
    qdrant_path: str = Field(".parley/qdrant", description="Embedded Qdrant's folder, or :memory:")
    qdrant_api_key: str | None = None
    qdrant_collection: str = "parley_chunks"
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
