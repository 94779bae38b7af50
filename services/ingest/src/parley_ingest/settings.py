"""ingest settings, read from the environment (see the README's table)."""

from __future__ import annotations

from pydantic import Field, model_validator

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Storage, the retrieval peer, limits, chunking and the job worker."""

    grpc_port: int = Field(50064, ge=0, le=65535)
    database_url: str = "sqlite:///.parley/ingest.db"
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    retrieval_addr: str = "127.0.0.1:50063"
    max_document_bytes: int = Field(20 * 1024 * 1024, gt=0)
    chunk_size_chars: int = Field(1200, ge=200, le=20_000)
    chunk_overlap_chars: int = Field(150, ge=0)
    worker_concurrency: int = Field(2, ge=1, le=64)
    index_timeout_seconds: float = Field(60.0, gt=0, description="Deadline of one indexing call.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> Settings:
        if self.chunk_overlap_chars >= self.chunk_size_chars // 2:
            raise ValueError("CHUNK_OVERLAP_CHARS must be less than half of CHUNK_SIZE_CHARS")
        return self
