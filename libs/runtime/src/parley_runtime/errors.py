"""Domain errors with stable codes, and their translation to and from gRPC status.

Services raise these; the gRPC server's wrapping of every method turns them into a gRPC status
once, carrying the stable code in the trailing metadata key ``parley-error-code``. Clients turn an
``grpc.aio.AioRpcError`` back into the same error with :func:`from_rpc_error`, so the gateway can
build its public envelope without parsing messages.

Which failures are worth sending again is decided here once, for every hop
(:data:`RETRYABLE_STATUSES`): the gateway's ``Retry-After``, conversation's ``retryable`` flag
on a failed turn and llm-router's on a failed stream all read :attr:`ParleyError.retryable`.
"""

from __future__ import annotations

from typing import ClassVar

import grpc

ERROR_CODE_KEY = "parley-error-code"
RETRY_AFTER_KEY = "parley-retry-after"

# A dependency that is down, slow or saturated may serve the same request later; a request
# that is wrong, unknown or forbidden will fail the same way again.
RETRYABLE_STATUSES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)


def is_retryable(status: grpc.StatusCode) -> bool:
    """Whether a request that failed with ``status`` may succeed if sent again unchanged."""
    return status in RETRYABLE_STATUSES


class ParleyError(Exception):
    """Base of every error a Parley service reports on purpose.

    ``code`` is a stable snake_case string clients may branch on; ``message`` is safe to show
    to a client (no secrets, provider bodies or stack traces).
    """

    status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL
    default_code: ClassVar[str] = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again (:func:`is_retryable`)."""
        return is_retryable(self.status)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class InvalidArgument(ParleyError):
    """The request is malformed or breaks a documented limit."""

    status = grpc.StatusCode.INVALID_ARGUMENT
    default_code = "invalid_argument"


class NotFound(ParleyError):
    """The named thing does not exist for this principal."""

    status = grpc.StatusCode.NOT_FOUND
    default_code = "not_found"


class AlreadyExists(ParleyError):
    status = grpc.StatusCode.ALREADY_EXISTS
    default_code = "already_exists"


class FailedPrecondition(ParleyError):
    """The request is valid but the system is not in a state to do it."""

    status = grpc.StatusCode.FAILED_PRECONDITION
    default_code = "failed_precondition"


class Unauthenticated(ParleyError):
    status = grpc.StatusCode.UNAUTHENTICATED
    default_code = "unauthenticated"


class PermissionDenied(ParleyError):
    status = grpc.StatusCode.PERMISSION_DENIED
    default_code = "permission_denied"


class ResourceExhausted(ParleyError):
    """A rate limit, quota or size limit was reached."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_code = "resource_exhausted"


class Unavailable(ParleyError):
    """A dependency cannot serve now; retrying later may work."""

    status = grpc.StatusCode.UNAVAILABLE
    default_code = "unavailable"


class DeadlineExceeded(ParleyError):
    status = grpc.StatusCode.DEADLINE_EXCEEDED
    default_code = "deadline_exceeded"


class Cancelled(ParleyError):
    status = grpc.StatusCode.CANCELLED
    default_code = "cancelled"


class Unimplemented(ParleyError):
    """The contract has this call, but this version of the service does not serve it."""

    status = grpc.StatusCode.UNIMPLEMENTED
    default_code = "not_implemented"


class Internal(ParleyError):
    """A bug or an unexpected failure; the message stays generic."""


_BY_STATUS: dict[grpc.StatusCode, type[ParleyError]] = {
    cls.status: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
        Unimplemented,
        Internal,
    )
}


def trailing_metadata(error: ParleyError) -> tuple[tuple[str, str], ...]:
    """The metadata that carries an error's stable code (and retry hint) across gRPC."""
    items = [(ERROR_CODE_KEY, error.code)]
    if error.retry_after is not None:
        items.append((RETRY_AFTER_KEY, f"{error.retry_after:g}"))
    return tuple(items)


def from_rpc_error(error: grpc.RpcError) -> ParleyError:
    """Rebuild the domain error a peer raised from the gRPC status it sent."""
    status = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    metadata: dict[str, str] = {}
    if hasattr(error, "trailing_metadata"):
        for key, value in error.trailing_metadata() or ():
            metadata[key] = value if isinstance(value, str) else value.decode()
    cls = _BY_STATUS.get(status, Internal)
    code = metadata.get(ERROR_CODE_KEY)
    retry_after = float(metadata[RETRY_AFTER_KEY]) if RETRY_AFTER_KEY in metadata else None
    if code is None:
        # Not raised on purpose by a Parley service: transport failure or peer bug.
        if status == grpc.StatusCode.UNAVAILABLE:
            return Unavailable("an internal service is unavailable", code="service_unavailable")
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceeded("an internal service did not answer in time")
        if status == grpc.StatusCode.CANCELLED:
            return Cancelled("the request was cancelled")
        if cls is Internal:
            return Internal("internal error")
    return cls(details or cls.default_code, code=code, retry_after=retry_after)
