"""What every provider implements: the streaming chat protocol, its per-attempt limits, and
the optional embeddings protocol. How calls fail is :mod:`.failures`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from parley_llm_router.messages import ChatRequest, ProviderEvent


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt limits, in seconds: connecting, the first token, the whole answer, and
    the silence allowed between two tokens."""

    connect: float
    first_token: float
    total: float
    between_tokens: float = 30.0


class Provider(Protocol):
    """A source of chat completions.

    ``stream`` yields text and tool-call deltas then exactly one ``Finish``; it raises
    :class:`~parley_llm_router.providers.failures.ProviderFailure` for any failure, and
    closes its HTTP stream when the consumer stops iterating (cancellation reaches the
    provider's socket).
    """

    name: str
    # The shortest time between two deltas of one stream after the first (0: as they come).
    pace: float

    def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]: ...


@runtime_checkable
class Embedder(Protocol):
    """A provider that also serves an embeddings API."""

    async def embed(
        self, model: str, texts: list[str], timeout: float
    ) -> tuple[list[list[float]], int]: ...
