"""Per-request context that crosses service boundaries: principal, request id, deadline.

The gRPC server (around every method it serves) and the gateway's middleware set these context
variables; the channels of ``grpc_client.channel`` read them to propagate the same values to
the next hop. Nothing else should pass them around by hand.
"""

from __future__ import annotations

import functools
import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from parley_runtime.errors import Unauthenticated

# Metadata keys (gRPC metadata keys must be lower case).
TENANT_KEY = "parley-tenant-id"
USER_KEY = "parley-user-id"
SCOPES_KEY = "parley-scopes"
REQUEST_ID_KEY = "x-request-id"
# Initial metadata of a streamed call that the server has taken (llm-router's StreamChat).
ACCEPTED = ("parley-accepted", "1")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for. Tenancy is always taken from here, never from a body."""

    tenant_id: str
    user_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def to_metadata(self) -> list[tuple[str, str]]:
        return [
            (TENANT_KEY, self.tenant_id),
            (USER_KEY, self.user_id),
            (SCOPES_KEY, " ".join(sorted(self.scopes))),
        ]

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> Principal | None:
        tenant = metadata.get(TENANT_KEY)
        user = metadata.get(USER_KEY)
        if not tenant or not user:
            return None
        return _principal(tenant, user, metadata.get(SCOPES_KEY, ""))


# A principal is immutable: the same caller's calls share one instead of building it anew.
@functools.lru_cache(maxsize=4096)
def _principal(tenant_id: str, user_id: str, scopes: str) -> Principal:
    return Principal(tenant_id, user_id, frozenset(s for s in scopes.split() if s))


@functools.lru_cache(maxsize=4096)
def principal_metadata(principal: Principal) -> tuple[tuple[str, str], ...]:
    """``principal.to_metadata()``, built once per principal: every outgoing call sends it."""
    return tuple(principal.to_metadata())


principal_var: ContextVar[Principal | None] = ContextVar("parley_principal", default=None)
request_id_var: ContextVar[str | None] = ContextVar("parley_request_id", default=None)
# Absolute deadline on the time.monotonic() clock, or None when the caller set none.
deadline_var: ContextVar[float | None] = ContextVar("parley_deadline", default=None)


def current_principal() -> Principal:
    """The principal of the request being served; raises if there is none."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("no principal in the request metadata", code="missing_principal")
    return principal


def remaining_seconds() -> float | None:
    """Seconds left before the current request's deadline, or None when it has none."""
    deadline = deadline_var.get()
    return None if deadline is None else deadline - time.monotonic()
