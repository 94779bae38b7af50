"""conversation settings, read from the environment (see the README's table)."""

from __future__ import annotations

from pydantic import Field

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Storage, peers and the limits of a turn."""

    grpc_port: int = Field(50061, ge=0, le=65535)
    database_url: str = "sqlite:///.parley/conversation.db"
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    llm_router_addr: str = "127.0.0.1:50062"
    retrieval_addr: str = "127.0.0.1:50063"
    max_message_chars: int = Field(32_000, gt=0)
    context_token_budget: int = Field(
        6000, gt=500, description="Tokens of system prompt, passages and history per turn."
    )
    retrieval_top_k: int = Field(5, ge=1, le=50)
    retrieval_timeout_seconds: float = Field(5.0, gt=0)
    turn_timeout_seconds: float = Field(300.0, gt=0, description="Deadline of the model call.")
