"""Bearer-token identity: who is calling, for which tenant, with which scopes.

Tokens are JWTs signed with HS256 under ``AUTH_SECRET``; claims ``sub`` (user), ``tenant``
and ``scope`` (space-separated). ``parley-gateway token`` issues one. Full OIDC comes later;
the principal built here is what every service down the line trusts.
"""

from __future__ import annotations

import functools
import time

import jwt
from fastapi import Request

from parley_runtime.context import Principal, principal_var
from parley_runtime.errors import Unauthenticated

DEFAULT_SCOPES = ("chat", "documents")


def issue_token(
    secret: str,
    issuer: str,
    *,
    tenant: str,
    user: str,
    scopes: tuple[str, ...] = DEFAULT_SCOPES,
    ttl_seconds: int = 86_400,
) -> str:
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


def verify_token(token: str, secret: str, issuer: str) -> Principal:
    """The principal of a valid ``token``, else :class:`Unauthenticated` saying why."""
    principal, expires = _verified(token, secret, issuer)
    if expires <= time.time():
        raise Unauthenticated("the bearer token has expired", code="token_expired")
    return principal


# A client sends the same token with every request: its signature and claims are checked
# once, its expiry on every use. Failures are not cached.
@functools.lru_cache(maxsize=4096)
def _verified(token: str, secret: str, issuer: str) -> tuple[Principal, int]:
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
    tenant, user = claims.get("tenant"), claims.get("sub")
    if not isinstance(tenant, str) or not tenant or not isinstance(user, str) or not user:
        raise Unauthenticated("the bearer token names no tenant or user", code="invalid_token")
    scopes = frozenset(str(claims.get("scope", "")).split())
    return Principal(tenant_id=tenant, user_id=user, scopes=scopes), int(claims["exp"])


async def authenticate(request: Request) -> Principal:
    """FastAPI dependency: the caller's principal, also set for outgoing gRPC calls."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send 'Authorization: Bearer <token>'", code="missing_credentials")
    settings = request.app.state.settings
    principal = verify_token(token.strip(), settings.auth_secret, settings.auth_issuer)
    principal_var.set(principal)
    return principal
