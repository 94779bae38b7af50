"""Gateway settings, read from the environment (see the README's table)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from parley_runtime.settings import ProcessSettings

DEV_SECRET = "parley-development-secret-change-me"


class Settings(ProcessSettings):
    """The public HTTP API's listener, peers, identity and limits."""

    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535)
    conversation_addr: str = "127.0.0.1:50061"
    llm_router_addr: str = "127.0.0.1:50062"
    ingest_addr: str = "127.0.0.1:50064"
    parley_env: Literal["development", "production"] = "development"
    auth_secret: str = Field(DEV_SECRET, description="HMAC key of the bearer tokens (HS256).")
    auth_issuer: str = "parley"
    request_timeout_seconds: float = Field(10.0, gt=0, description="Deadline of unary calls.")
    stream_timeout_seconds: float = Field(300.0, gt=0, description="Deadline of a streamed turn.")
    sse_keep_alive_seconds: float = Field(
        15.0, gt=0, description="Quiet time after which a stream sends a keep-alive comment."
    )
    max_message_chars: int = Field(32_000, gt=0)
    max_document_bytes: int = Field(20 * 1024 * 1024, gt=0)
    max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest request body, except a document upload's."
    )
    max_document_body_bytes: int = Field(
        64 * 1024 * 1024, gt=0, description="Largest body of a document upload (JSON)."
    )

    @model_validator(mode="after")
    def _no_dev_secret_in_production(self) -> Settings:
        if self.parley_env == "production" and (
            self.auth_secret == DEV_SECRET or len(self.auth_secret) < 32
        ):
            raise ValueError("AUTH_SECRET must be set to 32 or more characters in production")
        return self

    @model_validator(mode="after")
    def _limits_reachable(self) -> Settings:
        # JSON may escape every character of a message as \uXXXX (6 bytes), a character
        # outside the BMP as two of them (12 bytes).
        if self.max_body_bytes < 12 * self.max_message_chars + 1024:
            raise ValueError(
                "MAX_BODY_BYTES must be at least 12 * MAX_MESSAGE_CHARS + 1024, "
                "or a message at its limit cannot be sent"
            )
        if self.max_document_body_bytes < self.max_document_bytes + 1024:
            raise ValueError(
                "MAX_DOCUMENT_BODY_BYTES must exceed MAX_DOCUMENT_BYTES by 1024 or more, "
                "or a document at its limit cannot be sent"
            )
        return self
