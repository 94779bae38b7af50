"""llm-router settings, read from the environment (see the README's table)."""

from __future__ import annotations

from pydantic import Field

from parley_runtime.settings import ServiceSettings


class Settings(ServiceSettings):
    """Providers, routes and timeouts of the router."""

    grpc_port: int = Field(50062, ge=0, le=65535)
    default_model: str = Field("default", description="Alias used when a request names none.")
    openai_api_key: str | None = Field(None, description="Enables the OpenAI provider.")
    openai_base_url: str | None = Field(
        None,
        description="An OpenAI-compatible server (vLLM, Ollama...); enables the provider "
        "even without a key.",
    )
    openai_model: str = Field("gpt-4o-mini", description="Model behind the default alias.")
    local_token_delay_ms: float = Field(
        8.0, ge=0, description="Pause between the local provider's tokens, for a readable stream."
    )
    connect_timeout_seconds: float = Field(5.0, gt=0)
    first_token_timeout_seconds: float = Field(30.0, gt=0)
    total_timeout_seconds: float = Field(300.0, gt=0)
