"""Embed: texts to vectors through an OpenAI-compatible provider or the local model.

The local model (all-MiniLM-L6-v2, shipped by a package, run on the CPU in a worker thread)
is loaded on first use only, so a router that never embeds never pays for it, and one copy
serves every reload of the routes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from parley_llm_router.config import RoutesConfig
from parley_llm_router.providers.base import Embedder, Provider
from parley_llm_router.providers.failures import ProviderFailure
from parley_llm_router.tokens import estimate_text

if TYPE_CHECKING:
    from parley_embeddings import LocalEmbedder
from parley_runtime.errors import FailedPrecondition, InvalidArgument

MAX_INPUTS = 256
MAX_INPUT_CHARS = 32_000
LOCAL_MODEL = "all-MiniLM-L6-v2"
TIMEOUT_SECONDS = 30.0


@cache
def _local() -> LocalEmbedder:
    # Imported here: onnxruntime's start time and memory are paid only when used.
    from parley_embeddings import LocalEmbedder

    return LocalEmbedder()


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    """An embedding alias: the provider and model behind it, and its input price."""

    alias: str
    provider: str
    model: str
    price_input: float = 0.0


@dataclass(frozen=True, slots=True)
class Embedded:
    """The vectors of one Embed call, in input order, with their usage."""

    vectors: list[list[float]]
    model: str
    input_tokens: int
    cost_usd: float
    estimated: bool


def embedding_models(config: RoutesConfig) -> tuple[dict[str, EmbeddingModel], str]:
    if not config.embedding_models:
        return {"local": EmbeddingModel("local", "local", LOCAL_MODEL)}, "local"
    return (
        {
            alias: EmbeddingModel(alias, e.provider, e.model, e.price.input)
            for alias, e in config.embedding_models.items()
        },
        config.default_embedding_model,
    )


def check_inputs(inputs: list[str]) -> None:
    if not inputs:
        raise InvalidArgument("inputs: at least one text", code="empty_inputs")
    if len(inputs) > MAX_INPUTS:
        raise InvalidArgument(
            f"inputs: at most {MAX_INPUTS} texts per call", code="too_many_inputs"
        )
    for index, text in enumerate(inputs):
        if not text.strip():
            raise InvalidArgument(f"inputs[{index}]: must not be empty", code="empty_input")
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidArgument(
                f"inputs[{index}]: at most {MAX_INPUT_CHARS} characters", code="input_too_long"
            )


async def embed(
    model: EmbeddingModel,
    provider: Provider | None,
    inputs: list[str],
    timeout: float = TIMEOUT_SECONDS,
) -> Embedded:
    """Vectors for ``inputs`` through ``provider``, or the local model when the alias names
    it (or its provider is gone)."""
    if model.provider == "local" or provider is None:
        vectors = await _local().embed(inputs)
        tokens = sum(estimate_text(t) for t in inputs)
        return Embedded(vectors, LOCAL_MODEL, tokens, 0.0, estimated=True)
    if not isinstance(provider, Embedder):
        raise FailedPrecondition(
            f"embedding model {model.alias!r} has no embeddings provider", code="no_embeddings"
        )
    try:
        vectors, tokens = await provider.embed(model.model, inputs, timeout)
    except ProviderFailure as failure:
        raise failure.error() from None
    return Embedded(vectors, model.model, tokens, tokens * model.price_input / 1e6, estimated=False)
