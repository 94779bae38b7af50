"""The engine: what one version of the routes produced (route table, provider clients, token
counters, embedding models). Built by :mod:`parley_llm_router.reload`; plain data, no I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from parley_llm_router.embeddings import EmbeddingModel
from parley_llm_router.messages import Message, Tool
from parley_llm_router.providers.base import Provider
from parley_llm_router.routing import Route, RouteTable
from parley_llm_router.tokens import TokenCounter
from parley_runtime.errors import InvalidArgument


@dataclass(frozen=True)
class Engine:
    """What one version of the routes produced: the table, providers and token counters.

    Swapped whole when the routes file changes; requests in flight keep the one they began
    with.
    """

    routes: RouteTable
    providers: Mapping[str, Provider]
    counters: Mapping[str, TokenCounter]
    embedding_models: Mapping[str, EmbeddingModel] = field(default_factory=dict)
    default_embedding_model: str = "local"

    def paced(self, route: Route, window: float) -> bool:
        """Whether every candidate of ``route`` sends its deltas at least ``window`` apart
        already (its provider reads the stream that seldom), so none need merging."""
        return all(self.providers[c.provider].pace >= window for c in route.candidates)

    def count_tokens(
        self, route: Route, messages: tuple[Message, ...], tools: tuple[Tool, ...]
    ) -> tuple[int, bool]:
        """Input tokens of a request with the tokenizer of the route's first candidate, and
        whether the count is an estimate."""
        return self.counters[route.candidates[0].provider].count_messages(messages, tools)

    def embedding_model(self, alias: str) -> EmbeddingModel:
        """The embedding model of ``alias`` (empty means the default); INVALID_ARGUMENT if
        unknown."""
        alias = alias or self.default_embedding_model
        model = self.embedding_models.get(alias)
        if model is None:
            valid = ", ".join(sorted(self.embedding_models))
            raise InvalidArgument(
                f"unknown embedding model {alias!r}; valid models: {valid}", code="unknown_model"
            )
        return model
