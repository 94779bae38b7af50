"""OIDC bearer tokens (``AUTH_MODE=oidc``): JWTs an identity provider signed with RS256 or
ES256, checked against the keys it publishes.

- Keys come from ``OIDC_JWKS_URL``, or from the ``jwks_uri`` of the issuer's discovery
  document (``<OIDC_ISSUER>/.well-known/openid-configuration``). They are kept for
  ``OIDC_JWKS_CACHE_SECONDS``; a token signed by a key not among them refetches them, at most
  every ``OIDC_JWKS_REFRESH_MIN_SECONDS``, so a provider's key rotation needs no restart and
  tokens with made-up key ids cannot make the gateway hammer the provider. When a refetch
  fails, the keys already known stay in use.
- Only RS256 and ES256 are accepted, and only with a key of that algorithm: ``none`` and
  HS256 (whose "key" would be public) are refused before any key is looked up.
- ``iss``, ``aud`` and ``exp`` are required, ``nbf`` and ``iat`` checked when present, all
  with ``OIDC_LEEWAY_SECONDS`` of clock skew; a token valid for longer than
  ``AUTH_MAX_TOKEN_LIFETIME_SECONDS`` from now is refused.
- Tenant, user and scopes come from the claims ``OIDC_TENANT_CLAIM``, ``OIDC_USER_CLAIM`` and
  ``OIDC_SCOPES_CLAIM``: a claim name is looked up as it is, then as a dotted path into nested
  objects (``org.id``); scopes are a space-separated string or a list of strings.

A verified token is remembered (up to five minutes, never past its expiry): a client sends the
same token with every request, and its signature is checked once.

The keys are fetched with the standard library in a worker thread: a fetch is rare, and the
gateway carries no HTTP client of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

import jwt

from parley_gateway.auth import principal_of
from parley_runtime.context import Principal
from parley_runtime.errors import Unauthenticated, Unavailable

log = logging.getLogger("parley.gateway")

ALGORITHMS = ("RS256", "ES256")
# A JWKS document or discovery document larger than this is refused.
MAX_DOCUMENT_BYTES = 1024 * 1024
# How long a verified token is trusted without checking its signature again.
VERIFIED_SECONDS = 300.0
_VERIFIED_ENTRIES = 4096


def _get_json(url: str, timeout: float) -> Any:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json", "User-Agent": "parley-gateway"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        body = response.read(MAX_DOCUMENT_BYTES + 1)
    if len(body) > MAX_DOCUMENT_BYTES:
        raise ValueError(f"{url}: the document is larger than {MAX_DOCUMENT_BYTES} bytes")
    return json.loads(body)


def _http_url(url: str) -> str:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {url!r}")
    return url


def signing_keys(document: Any) -> dict[str | None, jwt.PyJWK]:
    """The keys of a JWKS document that may sign tokens here, by ``kid``: RSA and EC P-256
    keys for signatures; others (encryption keys, HMAC secrets, other curves) are skipped."""
    keys: dict[str | None, jwt.PyJWK] = {}
    entries = document.get("keys") if isinstance(document, dict) else None
    for data in entries if isinstance(entries, list) else []:
        if not isinstance(data, dict) or data.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(data)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            log.debug(
                "a JWKS key that cannot sign here was skipped", extra={"kid": data.get("kid")}
            )
            continue
        if key.algorithm_name in ALGORITHMS:
            kid = data.get("kid")
            keys[kid if isinstance(kid, str) else None] = key
    return keys


class Jwks:
    """The issuer's signing keys, fetched on first use and kept (see the module docstring)."""

    def __init__(
        self,
        issuer: str,
        url: str = "",
        *,
        max_age: float = 600.0,
        min_refresh: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.issuer = issuer
        self.url = _http_url(url) if url else ""
        self.max_age = max_age
        self.min_refresh = min_refresh
        self.timeout = timeout
        self._keys: dict[str | None, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK:
        """The key named ``kid`` (a token without one: the only key there is)."""
        if self._keys is None or time.monotonic() - self._fetched_at > self.max_age:
            await self._refresh()
        found = self._pick(kid)
        if found is None and self._keys is not None:
            await self._refresh()  # a rotation, perhaps
            found = self._pick(kid)
        if self._keys is None:
            raise Unavailable(
                "the identity provider's keys cannot be fetched",
                code="identity_provider_unavailable",
                retry_after=self.min_refresh,
            )
        if found is None:
            raise Unauthenticated(
                "the bearer token is signed by an unknown key", code="invalid_token"
            )
        return found

    def _pick(self, kid: str | None) -> jwt.PyJWK | None:
        keys = self._keys or {}
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        return keys.get(kid)

    async def _refresh(self) -> None:
        """Fetch the keys, unless some request did since this one asked, or any did within
        ``min_refresh`` seconds. A failure keeps the keys already known."""
        asked = time.monotonic()
        async with self._lock:
            if self._attempted_at >= asked or asked - self._attempted_at < self.min_refresh:
                return
            self._attempted_at = time.monotonic()
            try:
                keys = signing_keys(await asyncio.to_thread(self._fetch))
            except (OSError, ValueError) as error:
                log.warning(
                    "the identity provider's keys could not be fetched",
                    extra={"error": str(error)[:300]},
                )
                return
            self._keys, self._fetched_at = keys, time.monotonic()

    def _fetch(self) -> Any:
        if not self.url:
            discovery = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
            document = _get_json(_http_url(discovery), self.timeout)
            if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                raise ValueError(f"{discovery} names another issuer")
            self.url = _http_url(str(document.get("jwks_uri", "")))
        return _get_json(self.url, self.timeout)


def claim(claims: dict[str, Any], name: str) -> Any:
    """The claim ``name``, or the value at its dotted path; None when absent."""
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


@dataclass(frozen=True, slots=True)
class ClaimNames:
    """Which claims hold the tenant, the user and the scopes."""

    tenant: str = "tenant"
    user: str = "sub"
    scopes: str = "scope"


@dataclass(frozen=True, slots=True)
class _Verified:
    principal: Principal
    expires: float
    trusted_until: float


class OidcVerifier:
    """Checks OIDC bearer tokens and turns their claims into a principal."""

    def __init__(
        self,
        jwks: Jwks,
        *,
        audience: str,
        claims: ClaimNames,
        leeway: float,
        max_lifetime: float,
    ) -> None:
        self.jwks = jwks
        self.audience = audience
        self.claims = claims
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self._verified: dict[str, _Verified] = {}

    async def verify(self, token: str) -> Principal:
        """The principal of a valid ``token``, else :class:`Unauthenticated` saying why."""
        now = time.time()
        verified = self._verified.get(token)
        if verified is not None and verified.trusted_until > now:
            if verified.expires + self.leeway <= now:
                raise Unauthenticated("the bearer token has expired", code="token_expired")
            return verified.principal
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not valid", code="invalid_token") from None
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in ALGORITHMS:
            raise Unauthenticated(
                f"bearer tokens must be signed with {' or '.join(ALGORITHMS)}",
                code="invalid_token",
            )
        if kid is not None and not isinstance(kid, str):
            raise Unauthenticated("the bearer token is not valid", code="invalid_token")
        key = await self.jwks.key(kid)
        if key.algorithm_name != algorithm:
            raise Unauthenticated(
                "the bearer token's algorithm does not match its key", code="invalid_token"
            )
        claims = self._decode(token, key, algorithm)
        expires = float(claims["exp"])
        if expires - now > self.max_lifetime + self.leeway:
            raise Unauthenticated(
                f"the bearer token is valid for more than {self.max_lifetime:.0f} seconds",
                code="token_lifetime_too_long",
            )
        scopes = claim(claims, self.claims.scopes)
        if isinstance(scopes, str):
            scopes = scopes.split()
        elif not isinstance(scopes, list):
            scopes = []
        principal = principal_of(
            claim(claims, self.claims.tenant),
            claim(claims, self.claims.user),
            frozenset(s for s in scopes if isinstance(s, str) and s),
        )
        if len(self._verified) >= _VERIFIED_ENTRIES:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = _Verified(
            principal, expires, min(expires + self.leeway, now + VERIFIED_SECONDS)
        )
        return principal

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.jwks.issuer,
                leeway=self.leeway,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the bearer token has expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated(
                "the bearer token is not valid yet", code="token_not_yet_valid"
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated(
                "the bearer token is meant for another audience", code="invalid_token"
            ) from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated(
                "the bearer token comes from an issuer this API does not trust",
                code="invalid_token",
            ) from None
        except jwt.InvalidTokenError:
            raise Unauthenticated("the bearer token is not valid", code="invalid_token") from None
        return claims
