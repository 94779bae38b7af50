"""llm-router settings, read from the environment (see the README's table)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Routes, providers, shared state and the ledger of the router."""

    grpc_port: int = Field(50062, ge=0, le=65535)
    routes_file: Path | None = Field(
        None, description="YAML routes file; unset means routes from the provider variables."
    )
    routes_reload_seconds: float = Field(2.0, gt=0, description="How often the file is checked.")
    default_model: str = Field("default", description="Alias used when a request names none.")
    openai_api_key: str | None = Field(None, description="Enables the OpenAI provider.")
    openai_base_url: str | None = Field(
        None, description="An OpenAI-compatible server (vLLM, Ollama...); no key needed."
    )
    openai_model: str = Field("gpt-4o-mini", description="Model of the default OpenAI route.")
    anthropic_api_key: str | None = Field(None, description="Enables the Anthropic provider.")
    anthropic_base_url: str | None = None
    anthropic_model: str = Field("claude-haiku-4-5", description="Model of the Anthropic route.")
    local_token_delay_ms: float = Field(
        8.0, ge=0, description="Pause between the local provider's tokens, for a readable stream."
    )
    stream_coalesce_ms: float = Field(
        100.0,
        ge=0,
        le=1000,
        description="Deltas within this time of the previous message leave as one; 0: each alone.",
    )
    redis_url: str | None = Field(
        None, description="Shares breakers and the response cache between replicas."
    )
    cache_ttl_seconds: float = Field(3600.0, gt=0)
    breaker_consecutive_failures: int = Field(5, ge=1, description="Failures in a row that open.")
    breaker_error_rate: float = Field(0.5, gt=0, le=1, description="Failure share that opens.")
    breaker_window_seconds: float = Field(30.0, gt=0)
    breaker_min_requests: int = Field(
        20, ge=1, description="Calls in the window before the rate counts."
    )
    breaker_cooldown_seconds: float = Field(15.0, gt=0, description="Open time before a probe.")
    database_url: str = Field(
        "sqlite:///.parley/llm-router.db", description="The usage ledger's database."
    )
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
