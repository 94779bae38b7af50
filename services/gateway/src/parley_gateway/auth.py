"""Who is calling, for which tenant, with which scopes: the HTTP side of identity.

Every request but ``/healthz`` and ``/readyz`` sends ``Authorization: Bearer <credential>``,
one of:

- an API key, ``pk_...`` (apikeys.py), made by a tenant's admin;
- with ``AUTH_MODE=oidc``, a JWT of the identity provider (oidc.py);
- with ``AUTH_MODE=dev`` (the default), a JWT signed with HS256 under ``AUTH_SECRET``, claims
  ``sub`` (user), ``tenant`` and ``scope`` (space-separated); ``parley-gateway token`` issues
  one. Its signature and claims are checked once, its expiry on every use.

Either kind of JWT valid for more than ``AUTH_MAX_TOKEN_LIFETIME_SECONDS`` from now is refused.
:class:`parley_gateway.identity.Identity` tells which credential is which.

Each route declares the scope it needs with :func:`require` (``caller: Annotated[Principal,
require("chat")]``): a caller without it gets 403 ``missing_scope`` naming it. The scopes are
:data:`SCOPES`; the principal built here is what every service down the line trusts.
"""

from __future__ import annotations

import functools
import re
import time
from typing import TYPE_CHECKING, Annotated, Any

import jwt
from fastapi import Depends, Security
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from starlette.requests import HTTPConnection

from parley_runtime.context import Principal, principal_var
from parley_runtime.errors import PermissionDenied, Unauthenticated

if TYPE_CHECKING:
    from parley_gateway.identity import Identity

# read: every GET of conversations, messages, documents, jobs and models; chat: create,
# change, delete conversations and send messages; documents: add and delete documents;
# usage: usage and cost reports; admin: the tenant's API keys.
SCOPES = ("read", "chat", "documents", "usage", "admin")
DEFAULT_SCOPES = ("read", "chat", "documents", "usage")
DEFAULT_TTL_SECONDS = 3600
DEFAULT_MAX_LIFETIME_SECONDS = 86_400
# What a tenant or user id may be: it travels in gRPC metadata (printable ASCII) and logs.
PRINCIPAL_ID_PATTERN = r"^[\x21-\x7e]{1,128}$"
PRINCIPAL_ID = re.compile(PRINCIPAL_ID_PATTERN)


def principal_of(tenant: object, user: object, scopes: frozenset[str]) -> Principal:
    """A principal from a credential's claims, or :class:`Unauthenticated` when the tenant or
    user is missing or not an id (1 to 128 printable ASCII characters, no space)."""
    if not isinstance(tenant, str) or not isinstance(user, str) or not tenant or not user:
        raise Unauthenticated("the bearer token names no tenant or user", code="invalid_token")
    if not PRINCIPAL_ID.fullmatch(tenant) or not PRINCIPAL_ID.fullmatch(user):
        raise Unauthenticated(
            "the bearer token's tenant and user must be 1 to 128 printable ASCII characters",
            code="invalid_token",
        )
    return Principal(tenant_id=tenant, user_id=user, scopes=scopes)


def issue_token(
    secret: str,
    issuer: str,
    *,
    tenant: str,
    user: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
) -> str:
    """A development token (HS256 under ``secret``)."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "sub": user,
        "tenant": tenant,
        "scope": " ".join(scopes),
        "iat": now,
        "exp": now + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def verify_token(
    token: str,
    secret: str,
    issuer: str,
    max_lifetime: float = DEFAULT_MAX_LIFETIME_SECONDS,
) -> Principal:
    """The principal of a valid development ``token``, else :class:`Unauthenticated` saying
    why."""
    principal, expires = _verified(token, secret, issuer, max_lifetime)
    if expires <= time.time():
        raise Unauthenticated("the bearer token has expired", code="token_expired")
    return principal


# A client sends the same token with every request: its signature and claims are checked
# once, its expiry on every use. Failures are not cached.
@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str, issuer: str, max_lifetime: float) -> tuple[Principal, int]:
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            issuer=issuer,
            options={"require": ["exp", "sub", "iss"]},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("the bearer token has expired", code="token_expired") from None
    except jwt.InvalidTokenError:
        raise Unauthenticated("the bearer token is not valid", code="invalid_token") from None
    if claims["exp"] - time.time() > max_lifetime:
        raise Unauthenticated(
            f"the bearer token is valid for more than {max_lifetime:.0f} seconds",
            code="token_lifetime_too_long",
        )
    scopes = frozenset(str(claims.get("scope", "")).split())
    return principal_of(claims.get("tenant"), claims.get("sub"), scopes), int(claims["exp"])


class BearerCredential(SecurityBase):
    """The credential of ``Authorization: Bearer <credential>``, None when there is none; in
    OpenAPI, the ``bearer`` security scheme that lists each route's scope."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel(
            bearerFormat="JWT, or an API key (pk_...)",
            description="An OIDC token, an API key, or (AUTH_MODE=dev) a development token.",
        )
        self.scheme_name = "bearer"

    async def __call__(self, connection: HTTPConnection) -> str | None:
        scheme, _, credential = connection.headers.get("authorization", "").partition(" ")
        credential = credential.strip()
        return credential if scheme.lower() == "bearer" and credential else None


bearer = BearerCredential()


async def identify(connection: HTTPConnection, credential: str) -> Principal:
    """The principal of ``credential``, recorded for the rest of the request: on
    ``connection.state`` (``principal``, and ``api_key_id`` when the credential was an API
    key, else None) and for outgoing gRPC calls. For a WebSocket, call it at the handshake."""
    identity: Identity = connection.app.state.identity
    found = await identity.authenticate(credential)
    connection.state.principal = found.principal
    connection.state.api_key_id = found.api_key_id
    principal_var.set(found.principal)
    return found.principal


async def authenticate(
    connection: HTTPConnection, credential: Annotated[str | None, Depends(bearer)]
) -> Principal:
    """FastAPI dependency: the caller's principal (once per request)."""
    known: Principal | None = getattr(connection.state, "principal", None)
    if known is not None:
        return known
    if credential is None:
        raise Unauthenticated("send 'Authorization: Bearer <token>'", code="missing_credentials")
    return await identify(connection, credential)


class RequiredScope:
    """A dependency that lets a caller through only with ``scope``: 403 ``missing_scope``
    naming it, else the caller's principal."""

    def __init__(self, scope: str) -> None:
        if scope not in SCOPES:
            raise ValueError(f"unknown scope {scope!r}")
        self.scope = scope

    async def __call__(self, principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        if self.scope not in principal.scopes:
            raise PermissionDenied(
                f"this request needs the '{self.scope}' scope", code="missing_scope"
            )
        return principal


@functools.cache
def require(scope: str) -> Any:
    """The dependency of a route that needs ``scope`` (one of :data:`SCOPES`); it also lists
    the scope in the route's OpenAPI security requirement."""
    return Security(RequiredScope(scope), scopes=[scope])


class Anyone:
    """The mark of a route open without credentials (``dependencies=[PUBLIC]``): liveness,
    readiness, the answer to an unknown path. It checks nothing; it makes the choice visible,
    and the test that every route declares a scope accepts it instead of one."""

    async def __call__(self) -> None:
        return None


PUBLIC = Depends(Anyone())
