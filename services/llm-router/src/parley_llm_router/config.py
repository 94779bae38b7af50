"""The routes file: providers, model aliases and their candidates, as validated data.

``ROUTES_FILE`` points at a YAML file of this shape (every field but the names has a
default; see the README for a full example)::

    default_model: default
    providers:
      openai:    {type: openai, api_key_env: OPENAI_API_KEY}
      claude:    {type: anthropic, api_key_env: ANTHROPIC_API_KEY}
      vllm:      {type: openai_compatible, base_url: "http://vllm:8000/v1"}
      azure:     {type: azure_openai, base_url: "https://x.openai.azure.com",
                  api_version: "2024-10-21", api_key_env: AZURE_OPENAI_API_KEY}
    models:
      default:
        strategy: priority          # priority | weighted | latency
        candidates:
          - {provider: openai, model: gpt-4o-mini, price: {input: 0.15, output: 0.6}}
          - {provider: claude, model: claude-haiku-4-5, max_concurrency: 50}

Keys are never written in the file: a provider names the environment variable that holds
its key. Without a file, the routes come from OPENAI_* and ANTHROPIC_* variables
(:func:`from_environment`). A file that fails validation is rejected as a whole with one
line naming the fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class ConfigError(ValueError):
    """The routes file is unreadable or invalid; the message names the fault."""


class ProviderType(StrEnum):
    """The wire protocol a provider speaks."""

    OPENAI = "openai"
    OPENAI_COMPATIBLE = "openai_compatible"
    AZURE_OPENAI = "azure_openai"
    ANTHROPIC = "anthropic"
    LOCAL = "local"


class Strategy(StrEnum):
    """How the candidates of an alias are ordered per request (see ``routing.order``)."""

    PRIORITY = "priority"
    WEIGHTED = "weighted"
    LATENCY = "latency"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderConfig(_Strict):
    """One entry under ``providers``: its type, endpoint and the variable holding its key."""

    type: ProviderType
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="Variable holding the key.")
    api_version: str | None = Field(None, description="Azure OpenAI's API version.")

    @field_validator("api_version", mode="before")
    @classmethod
    def _version_text(cls, value: object) -> object:
        # YAML reads an unquoted 2024-10-21 as a date; it means the version string.
        return value.isoformat() if isinstance(value, date) else value

    @model_validator(mode="after")
    def _complete(self) -> ProviderConfig:
        needs_url = (ProviderType.OPENAI_COMPATIBLE, ProviderType.AZURE_OPENAI)
        if self.type in needs_url and not self.base_url:
            raise ValueError(f"a provider of type {self.type} needs base_url")
        if self.type == ProviderType.AZURE_OPENAI:
            if not self.api_version:
                raise ValueError("a provider of type azure_openai needs api_version")
            if (self.base_url or "").rstrip("/").endswith("/openai"):
                raise ValueError(
                    "base_url of an azure_openai provider is the resource endpoint "
                    "(https://NAME.openai.azure.com), without /openai"
                )
        elif self.api_version:
            raise ValueError(
                f"api_version is for providers of type azure_openai, not {self.type.value}"
            )
        return self


class Price(_Strict):
    """US dollars per million tokens."""

    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


class TimeoutsConfig(_Strict):
    """Seconds. ``between_tokens`` bounds the silence inside a stream."""

    connect: float = Field(5.0, gt=0)
    first_token: float = Field(30.0, gt=0)
    between_tokens: float = Field(30.0, gt=0)
    total: float = Field(300.0, gt=0)


class CandidateConfig(_Strict):
    """One candidate of an alias: a provider and model with its limits and prices."""

    provider: str
    model: str
    weight: float = Field(1.0, gt=0, description="Share of traffic with strategy weighted.")
    # A platform of one router replica serves 1,000 concurrent streams by default.
    max_concurrency: int = Field(1024, ge=1, description="Calls in flight at once.")
    queue_timeout: float = Field(
        1.0, ge=0, description="Seconds to wait for a free slot before moving on."
    )
    timeouts: TimeoutsConfig = TimeoutsConfig()
    price: Price = Price()
    context_window: int = Field(128_000, gt=0)
    max_output_tokens: int = Field(16_384, gt=0)
    max_attempts: int = Field(2, ge=1, le=5, description="Tries, counting the first.")


class ModelConfig(_Strict):
    """One alias under ``models``: its strategy and candidates."""

    strategy: Strategy = Strategy.PRIORITY
    candidates: tuple[CandidateConfig, ...] = Field(min_length=1)


class EmbeddingModelConfig(_Strict):
    """One alias under ``embedding_models``."""

    provider: str
    model: str
    price: Price = Price()


class RoutesConfig(_Strict):
    """A whole routes file, its cross-references checked."""

    default_model: str = "default"
    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig] = Field(min_length=1)
    embedding_models: dict[str, EmbeddingModelConfig] = Field(default_factory=dict)
    # Without embedding_models, "local" (the packaged MiniLM model) is the only one.
    default_embedding_model: str = "local"

    @model_validator(mode="after")
    def _references(self) -> RoutesConfig:
        if self.default_model not in self.models:
            raise ValueError(f"default_model {self.default_model!r} is not under models")
        for alias, model in self.models.items():
            for index, candidate in enumerate(model.candidates):
                if candidate.provider not in self.providers:
                    raise ValueError(
                        f"models.{alias}.candidates[{index}].provider "
                        f"{candidate.provider!r} is not under providers"
                    )
        if self.embedding_models and self.default_embedding_model not in self.embedding_models:
            raise ValueError(
                f"default_embedding_model {self.default_embedding_model!r} is not under "
                "embedding_models"
            )
        for alias, embedding in self.embedding_models.items():
            if embedding.provider not in self.providers:
                raise ValueError(
                    f"embedding_models.{alias}.provider {embedding.provider!r} is not under "
                    "providers"
                )
            if self.providers[embedding.provider].type == ProviderType.ANTHROPIC:
                raise ValueError(f"embedding_models.{alias}: Anthropic serves no embeddings")
        return self


def parse(text: str, source: str = "routes file") -> RoutesConfig:
    """Validate YAML text; ConfigError with the path of the first fault otherwise."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return RoutesConfig.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{source}: {where}: {first['msg']}") from None


def load(path: Path) -> RoutesConfig:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    return parse(text, str(path))


LOCAL_MODEL = "extractive-v1"
LOCAL_CANDIDATE = CandidateConfig(
    provider="local", model=LOCAL_MODEL, context_window=1_000_000, max_output_tokens=4096
)


def from_environment(
    env: Mapping[str, str | None],
    *,
    default_model: str = "default",
    openai_model: str = "gpt-4o-mini",
    anthropic_model: str = "claude-haiku-4-5",
) -> RoutesConfig:
    """Routes when no file is given: ``local`` always, then what the keys enable.

    ``default`` is OpenAI (or the OpenAI-compatible server of OPENAI_BASE_URL) when
    configured, with Anthropic as its fallback when ANTHROPIC_API_KEY is set too; Anthropic
    alone when only it is configured; the local provider otherwise.
    """
    providers: dict[str, ProviderConfig] = {"local": ProviderConfig(type=ProviderType.LOCAL)}
    models: dict[str, ModelConfig] = {"local": ModelConfig(candidates=(LOCAL_CANDIDATE,))}
    chain: list[CandidateConfig] = []
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        kind = (
            ProviderType.OPENAI
            if not env.get("OPENAI_BASE_URL")
            else (ProviderType.OPENAI_COMPATIBLE)
        )
        providers["openai"] = ProviderConfig(
            type=kind, base_url=env.get("OPENAI_BASE_URL"), api_key_env="OPENAI_API_KEY"
        )
        openai = CandidateConfig(provider="openai", model=openai_model)
        models["openai"] = ModelConfig(candidates=(openai,))
        chain.append(openai)
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_BASE_URL"):
        providers["anthropic"] = ProviderConfig(
            type=ProviderType.ANTHROPIC,
            base_url=env.get("ANTHROPIC_BASE_URL"),
            api_key_env="ANTHROPIC_API_KEY",
        )
        claude = CandidateConfig(provider="anthropic", model=anthropic_model)
        models["anthropic"] = ModelConfig(candidates=(claude,))
        chain.append(claude)
    models[default_model] = ModelConfig(candidates=tuple(chain) or (LOCAL_CANDIDATE,))
    return RoutesConfig(default_model=default_model, providers=providers, models=models)
