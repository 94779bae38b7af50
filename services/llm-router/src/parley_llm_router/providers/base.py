"""What every provider implements, and how provider failures are classified."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import ModuleType
from typing import Protocol, runtime_checkable

import httpx2

from parley_llm_router.messages import ChatRequest, ProviderEvent


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt limits, in seconds: connecting, the first token, the whole answer, and
    the silence allowed between two tokens."""

    connect: float
    first_token: float
    total: float
    between_tokens: float = 30.0


class FailureKind(StrEnum):
    """Why a provider call failed; decides retry, fallback and the public code."""

    RATE_LIMITED = "provider_rate_limited"
    OVERLOADED = "provider_overloaded"
    UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "provider_timeout"
    CONNECTION = "provider_connection_failed"
    AUTH = "provider_auth_failed"
    BAD_REQUEST = "provider_rejected_request"
    STREAM_BROKEN = "provider_stream_broken"


RETRYABLE = {
    FailureKind.RATE_LIMITED,
    FailureKind.OVERLOADED,
    FailureKind.UNAVAILABLE,
    FailureKind.TIMEOUT,
    FailureKind.CONNECTION,
    FailureKind.STREAM_BROKEN,
}


class ProviderFailure(Exception):
    """A provider call failed. ``message`` is safe to show: no keys, no provider bodies."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


def classify_status(status: int) -> FailureKind:
    """Map an HTTP status from a provider onto a failure kind."""
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status == 529:
        return FailureKind.OVERLOADED
    if status in (408,):
        return FailureKind.TIMEOUT
    if status == 409 or status >= 500:
        return FailureKind.UNAVAILABLE
    return FailureKind.BAD_REQUEST


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` hint of a response, in seconds (numeric form only)."""
    value = headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def failure_from_sdk(error: Exception, sdk: ModuleType) -> ProviderFailure:
    """Translate an ``openai`` or ``anthropic`` SDK exception (both share one shape).

    The provider's response body is never copied into the message: it may echo the prompt
    or key material.
    """
    if isinstance(error, sdk.APITimeoutError):
        return ProviderFailure(FailureKind.TIMEOUT, "the provider did not answer in time")
    if isinstance(error, sdk.APIConnectionError):
        return ProviderFailure(FailureKind.CONNECTION, "the provider could not be reached")
    if isinstance(error, sdk.APIStatusError):
        status = int(error.status_code)
        return ProviderFailure(
            classify_status(status),
            f"the provider answered HTTP {status}",
            status=status,
            retry_after=retry_after_seconds(error.response.headers),
        )
    if isinstance(error, (httpx2.TransportError, sdk.APIError)):
        return ProviderFailure(FailureKind.STREAM_BROKEN, "the provider's stream broke")
    raise error


def failure_mid_stream(error: Exception, sdk: ModuleType) -> ProviderFailure:
    """A failure while reading a stream that had started: a lost connection is a broken
    stream, not a provider that cannot be reached."""
    failure = failure_from_sdk(error, sdk)
    if failure.kind == FailureKind.CONNECTION:
        return ProviderFailure(
            FailureKind.STREAM_BROKEN, "the provider's stream broke", status=failure.status
        )
    return failure


class Provider(Protocol):
    """A source of chat completions.

    ``stream`` yields text and tool-call deltas then exactly one ``Finish``; it raises
    :class:`ProviderFailure` for any failure, and closes its HTTP stream when the consumer
    stops iterating (cancellation reaches the provider's socket).
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
