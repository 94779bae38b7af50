"""Gateway settings, read from the environment (see the README's table)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from parley_gateway.browser import parse_origins
from parley_gateway.guardrails.policy import Policies
from parley_gateway.limits.policy import load_policy
from parley_runtime.settings import ProcessSettings

DEV_SECRET = "parley-development-secret-change-me"


class Settings(ProcessSettings):
    """The public HTTP API's listener, peers, identity and limits."""

    http_host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    http_port: int = Field(8080, ge=0, le=65535)
    conversation_addr: str = "127.0.0.1:50061"
    llm_router_addr: str = "127.0.0.1:50062"
    ingest_addr: str = "127.0.0.1:50064"
    retrieval_addr: str = Field("127.0.0.1:50063", description="Peer of the search route.")
    parley_env: Literal["development", "production"] = "development"
    auth_secret: str = Field(DEV_SECRET, description="HMAC key of the bearer tokens (HS256).")
    auth_issuer: str = "parley"
    dev_sign_in: bool = Field(
        False,
        description="The chat page's development sign-in (any tenant and user, no password); "
        "make run turns it on; refused in production and with OIDC.",
    )
    # Identity (auth.py, oidc.py, apikeys.py).
    auth_mode: Literal["dev", "oidc"] = Field(
        "dev", description="dev: HS256 tokens under AUTH_SECRET; oidc: the issuer's RS256/ES256."
    )
    auth_max_token_lifetime_seconds: int = Field(
        86_400, gt=0, description="A token whose exp is further ahead than this is refused."
    )
    oidc_issuer: str = Field("", description="iss of OIDC tokens (AUTH_MODE=oidc).")
    oidc_audience: str = Field("", description="aud OIDC tokens must name (AUTH_MODE=oidc).")
    oidc_jwks_url: str = Field("", description="The issuer's JWKS; empty: from its discovery.")
    oidc_tenant_claim: str = Field("tenant", min_length=1, description="Claim of the tenant.")
    oidc_user_claim: str = Field("sub", min_length=1, description="Claim of the user.")
    oidc_scopes_claim: str = Field("scope", min_length=1, description="Claim of the scopes.")
    oidc_leeway_seconds: float = Field(30.0, ge=0, le=300)
    oidc_jwks_cache_seconds: float = Field(600.0, gt=0, description="Keys are refetched after.")
    oidc_jwks_refresh_min_seconds: float = Field(
        30.0, ge=0, description="An unknown kid refetches the keys at most this often."
    )
    oidc_http_timeout_seconds: float = Field(5.0, gt=0)
    database_url: str = Field(
        "sqlite:///.parley/gateway.db", description="The gateway's own tables (API keys)."
    )
    db_auto_migrate: bool = Field(True, description="Apply migrations at start.")
    api_key_cache_seconds: float = Field(
        5.0, ge=0, description="How long a replica trusts an API key it looked up (revocation)."
    )
    api_key_last_used_seconds: float = Field(
        60.0, ge=0, description="last_used_at of a key is written at most this often."
    )
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
    # Browser safety (browser.py).
    cors_origins: str = Field(
        "",
        description="Origins (scheme://host[:port]) browsers may call the API from, separated "
        "by commas or spaces; * lets any origin read responses, without credentials.",
    )
    cors_max_age_seconds: int = Field(600, ge=0, le=86_400, description="Preflight cache.")
    hsts_max_age_seconds: int = Field(
        0, ge=0, description="Strict-Transport-Security max-age; 0 sends none (plain HTTP)."
    )
    # Guardrails (guardrails/).
    guardrails_file: str = Field("", description="YAML: per-tenant off/flag/block per guard.")
    guardrails_pii_hold_chars: int = Field(
        256, ge=16, le=4096, description="Most of a streamed answer held back for redaction."
    )
    moderation_url: str = Field("", description="An external classifier's URL; empty: none.")
    moderation_token: str = Field("", description="Bearer token sent to the classifier.")
    moderation_timeout_seconds: float = Field(2.0, gt=0, le=60)
    moderation_fail: Literal["open", "closed"] = Field(
        "open", description="When the classifier fails: let the text pass, or refuse it (503)."
    )
    # Limits and quotas (limits/).
    redis_url: str | None = Field(
        None, description="Redis shared by replicas (limits); unset: in-process counters."
    )
    limits_file: str = Field("", description="YAML: tiers of limits, and each tenant's tier.")
    limits_default_tier: str = Field("standard", description="The tier of unlisted tenants.")
    limits_on_redis_error: Literal["open", "closed"] = Field(
        "open", description="When Redis fails: let requests go unlimited, or refuse them (503)."
    )
    limits_key_prefix: str = Field("parley:limits:", min_length=1, description="Redis keys.")

    @field_validator("cors_origins")
    @classmethod
    def _origins_valid(cls, value: str) -> str:
        parse_origins(value)
        return value

    @field_validator("guardrails_file")
    @classmethod
    def _guardrails_file_valid(cls, value: str) -> str:
        Policies.load(value)
        return value

    @field_validator("moderation_url")
    @classmethod
    def _moderation_url_valid(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _no_dev_secret_in_production(self) -> Settings:
        if (
            self.auth_mode == "dev"
            and self.parley_env == "production"
            and (self.auth_secret == DEV_SECRET or len(self.auth_secret) < 32)
        ):
            raise ValueError("AUTH_SECRET must be set to 32 or more characters in production")
        return self

    @model_validator(mode="after")
    def _dev_sign_in_in_development_only(self) -> Settings:
        if self.dev_sign_in and (self.parley_env == "production" or self.auth_mode != "dev"):
            raise ValueError("DEV_SIGN_IN needs PARLEY_ENV=development and AUTH_MODE=dev")
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.auth_mode != "oidc":
            return self
        if not self.oidc_issuer or not self.oidc_audience:
            raise ValueError("AUTH_MODE=oidc needs OIDC_ISSUER and OIDC_AUDIENCE")
        web = ("http://", "https://")
        if self.oidc_jwks_url and not self.oidc_jwks_url.startswith(web):
            raise ValueError("OIDC_JWKS_URL must be an http(s):// URL")
        if not self.oidc_jwks_url and not self.oidc_issuer.startswith(web):
            raise ValueError("OIDC_JWKS_URL is needed when OIDC_ISSUER is not a URL to discover")
        if self.parley_env == "production":
            for name, url in (
                ("OIDC_ISSUER", self.oidc_issuer),
                ("OIDC_JWKS_URL", self.oidc_jwks_url),
            ):
                if url and not url.startswith("https://"):
                    raise ValueError(f"{name} must be an https:// URL in production")
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

    @model_validator(mode="after")
    def _limits_file_valid(self) -> Settings:
        load_policy(Path(self.limits_file) if self.limits_file else None, self.limits_default_tier)
        return self
