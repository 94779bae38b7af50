"""What every provider implements, and how provider failures are classified."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from parley_llm_router.messages import ChatRequest, ProviderEvent


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-attempt limits, in seconds."""

    connect: float
    first_token: float
    total: float


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


class Provider(Protocol):
    """A source of chat completions.

    ``stream`` yields text and tool-call deltas then exactly one ``Finish``; it raises
    :class:`ProviderFailure` for any failure, and closes its HTTP stream when the consumer
    stops iterating (cancellation reaches the provider's socket).
    """

    name: str

    def stream(
        self, model: str, request: ChatRequest, timeouts: Timeouts
    ) -> AsyncIterator[ProviderEvent]: ...
