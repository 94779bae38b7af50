"""conversation settings, read from the environment (see the README's table)."""

from __future__ import annotations

import os
import socket
from typing import Literal

from pydantic import Field, field_validator, model_validator

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Storage, peers and the limits of a turn."""

    grpc_port: int = Field(50061, ge=0, le=65535)
    database_url: str = "sqlite:///.parley/conversation.db"
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    llm_router_addr: str = "127.0.0.1:50062"
    retrieval_addr: str = "127.0.0.1:50063"
    model_aliases_ttl_seconds: float = Field(
        5.0, ge=0, description="How long llm-router's list of model aliases is kept."
    )
    model_check_timeout_seconds: float = Field(
        2.0,
        gt=0,
        description="How long a send waits for llm-router to list its models before it is "
        "refused as unavailable.",
    )
    max_message_chars: int = Field(32_000, gt=0)
    context_token_budget: int = Field(
        6000, gt=500, description="Tokens of system prompt, passages and history per turn."
    )
    retrieval_top_k: int = Field(5, ge=1, le=50)
    retrieval_mode: Literal["dense", "sparse", "hybrid"] = Field(
        "hybrid", description="How retrieval ranks a turn's passages."
    )
    retrieval_score_threshold: float | None = Field(
        0.2,
        ge=-1,
        le=1,
        description="Passages less similar to the question than this (cosine) are left out; "
        "unset keeps every passage found.",
    )
    retrieval_timeout_seconds: float = Field(5.0, gt=0)
    turn_timeout_seconds: float = Field(300.0, gt=0, description="Deadline of the model call.")
    turn_flush_seconds: float = Field(
        0.5, gt=0, description="How often a streaming answer's text so far is saved."
    )
    turn_lease_seconds: float = Field(
        30.0,
        gt=0,
        description="How long an answer in progress may go unsaved before any replica closes "
        "it as interrupted; renewed every third of it.",
    )
    replica_id: str = Field(
        "",
        max_length=200,
        description="This replica's name on the answers it writes; empty means host:port, "
        "which a restarted process keeps, so it closes its predecessor's answers at start.",
    )

    @field_validator("retrieval_score_threshold", mode="before")
    @classmethod
    def _no_threshold(cls, value: object) -> object:
        """``RETRIEVAL_SCORE_THRESHOLD=`` (empty) or ``none``: no threshold."""
        if isinstance(value, str) and value.strip().lower() in ("", "none"):
            return None
        return value

    @model_validator(mode="after")
    def _lease_outlives_saves(self) -> Settings:
        if self.turn_lease_seconds < 3 * self.turn_flush_seconds:
            raise ValueError("TURN_LEASE_SECONDS must be at least three times TURN_FLUSH_SECONDS")
        return self

    @property
    def owner(self) -> str:
        """The name this replica writes on its answers in progress."""
        if self.replica_id:
            return self.replica_id
        # A port chosen by the system is not kept across restarts: name the process instead,
        # so two such replicas never take each other's answers for their own.
        port = self.grpc_port or f"pid{os.getpid()}"
        return f"{socket.gethostname()}:{port}"
