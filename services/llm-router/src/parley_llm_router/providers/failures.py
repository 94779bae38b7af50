"""How a provider call fails, and what the router reports for each failure.

Every provider raises :class:`ProviderFailure` and nothing else; its :class:`FailureKind` is
the public code, and :data:`REPORTED_AS` names the error the router reports for it::

    ProviderFailure(kind)               reported as        retried, falls back, counts against
    ├── RATE_LIMITED   (429)            Unavailable        the breaker
    ├── OVERLOADED     (529)            Unavailable
    ├── UNAVAILABLE    (409, 5xx)       Unavailable
    ├── TIMEOUT        (408, timeouts)  Unavailable
    ├── CONNECTION     (unreachable)    Unavailable
    ├── STREAM_BROKEN  (cut, malformed) Unavailable
    ├── AUTH           (401, 403)       FailedPrecondition  never retried, breaker untouched
    └── BAD_REQUEST    (other 4xx)      FailedPrecondition

Whether a failure is worth another try is the runtime's one rule
(:func:`parley_runtime.errors.is_retryable` on the reported error's status): the router's own
retries and fallback before the first token, the breakers, and the ``retryable`` flag of a
stream that broke after it all read :attr:`ProviderFailure.retryable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import ModuleType

import httpx2

from parley_runtime.errors import (
    FailedPrecondition,
    ParleyError,
    Unavailable,
    is_retryable,
)


class FailureKind(StrEnum):
    """Why a provider call failed; its value is the public error code."""

    RATE_LIMITED = "provider_rate_limited"
    OVERLOADED = "provider_overloaded"
    UNAVAILABLE = "provider_unavailable"
    TIMEOUT = "provider_timeout"
    CONNECTION = "provider_connection_failed"
    AUTH = "provider_auth_failed"
    BAD_REQUEST = "provider_rejected_request"
    STREAM_BROKEN = "provider_stream_broken"


# The error the router reports for each kind (see the module docstring).
REPORTED_AS: Mapping[FailureKind, type[ParleyError]] = {
    FailureKind.RATE_LIMITED: Unavailable,
    FailureKind.OVERLOADED: Unavailable,
    FailureKind.UNAVAILABLE: Unavailable,
    FailureKind.TIMEOUT: Unavailable,
    FailureKind.CONNECTION: Unavailable,
    FailureKind.STREAM_BROKEN: Unavailable,
    FailureKind.AUTH: FailedPrecondition,
    FailureKind.BAD_REQUEST: FailedPrecondition,
}

_RETRYABLE = frozenset(kind for kind, error in REPORTED_AS.items() if is_retryable(error.status))


def retryable(kind: FailureKind) -> bool:
    """Whether a call that failed this way may succeed if made again."""
    return kind in _RETRYABLE


def reported(kind: FailureKind, message: str, retry_after: float | None = None) -> ParleyError:
    """The error the router reports for a failure of this kind, its code the kind's."""
    return REPORTED_AS[kind](message, code=kind.value, retry_after=retry_after)


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
        return self.kind in _RETRYABLE

    def error(self) -> ParleyError:
        """The error the router reports for this failure."""
        return reported(self.kind, self.message, self.retry_after)


def classify_status(status: int) -> FailureKind:
    """Map an HTTP status from a provider onto a failure kind."""
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status == 529:
        return FailureKind.OVERLOADED
    if status == 408:
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
