"""ingest settings, read from the environment (see the table in services/ingest/README.md)."""

from __future__ import annotations

import socket

from pydantic import Field, ValidationInfo, field_validator

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Storage, the retrieval peer, limits, chunking and the job worker."""

    grpc_port: int = Field(50064, ge=0, le=65535)
    database_url: str = Field(
        "sqlite:///.parley/ingest.db", description="Documents, their bytes and jobs."
    )
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    retrieval_addr: str = Field("127.0.0.1:50063", description="Where chunks are indexed.")
    max_document_bytes: int = Field(
        20 * 1024 * 1024, gt=0, description="Larger uploads are refused (RESOURCE_EXHAUSTED)."
    )
    # Retrieval refuses chunks over 20,000 characters; a chunk never exceeds this size.
    chunk_size_chars: int = Field(1200, ge=200, le=20_000, description="Longest chunk.")
    chunk_overlap_chars: int = Field(
        150, ge=0, description="Tail of a chunk repeated at the start of the next."
    )
    worker_concurrency: int = Field(2, ge=1, le=64, description="Jobs processed at once.")
    index_timeout_seconds: float = Field(60.0, gt=0, description="Deadline of one indexing call.")
    job_lease_seconds: float = Field(
        30.0,
        ge=1,
        le=3600,
        description="How long a running job's worker may go silent before any replica takes "
        "the job over; renewed every third of it.",
    )
    job_max_attempts: int = Field(
        5,
        ge=1,
        le=100,
        description="Attempts a job gets (passing failures, and workers that died) before it "
        "fails.",
    )
    job_retry_seconds: float = Field(
        2.0,
        gt=0,
        le=300,
        description="Wait before a job's second attempt; doubled for each one after.",
    )
    replica_id: str = Field(
        "",
        max_length=200,
        description="This replica's name on the jobs it runs; empty means host:port, which a "
        "restarted process keeps, so it takes its predecessor's jobs back at start.",
    )

    @field_validator("chunk_overlap_chars")
    @classmethod
    def _overlap_below_half_the_size(cls, overlap: int, info: ValidationInfo) -> int:
        # A field validator (not a model one) so the start-up error names the variable.
        size = info.data.get("chunk_size_chars")
        if size is not None and overlap >= size // 2:
            raise ValueError(f"must be less than half of CHUNK_SIZE_CHARS ({size})")
        return overlap

    @property
    def worker(self) -> str:
        """The name this replica writes on the jobs it runs."""
        return self.replica_id or f"{socket.gethostname()}:{self.grpc_port}"
