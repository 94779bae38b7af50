"""OIDC bearer tokens (``AUTH_MODE=oidc``) against an identity provider on loopback: keys made
here (RSA and EC P-256), a discovery document and a JWKS served over real HTTP, tokens signed
as a provider signs them, and every way a token can be wrong."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from parley_gateway.auth import issue_token
from parley_gateway.settings import Settings

from .conftest import Api, Fakes

ErrorOf = Callable[[httpx.Response, int, str], dict[str, Any]]
AUDIENCE = "parley-api"


@dataclass
class SigningKey:
    """A private key of the provider, and how its JWKS entry names it."""

    kid: str
    algorithm: str
    private: Any

    @classmethod
    def rsa(cls, kid: str) -> SigningKey:
        return cls(kid, "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    @classmethod
    def ec(cls, kid: str) -> SigningKey:
        return cls(kid, "ES256", ec.generate_private_key(ec.SECP256R1()))

    def jwk(self) -> dict[str, Any]:
        codec = RSAAlgorithm if self.algorithm == "RS256" else ECAlgorithm
        entry: dict[str, Any] = codec.to_jwk(self.private.public_key(), as_dict=True)
        return {**entry, "kid": self.kid, "use": "sig", "alg": self.algorithm}

    def public_pem(self) -> bytes:
        return bytes(
            self.private.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )


@dataclass
class Provider:
    """An identity provider on a loopback port: ``/.well-known/openid-configuration`` and
    ``/jwks`` (the ``published`` keys), counting the requests each path gets."""

    published: list[SigningKey] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)
    issuer: str = ""

    def token(self, key: SigningKey, *, kid: str | None = "", **claims: Any) -> str:
        """A token signed with ``key``; a claim set to None is left out."""
        now = int(time.time())
        body = {
            "iss": self.issuer,
            "aud": AUDIENCE,
            "sub": "ann",
            "tenant": "acme",
            "scope": "read chat",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        body = {name: value for name, value in body.items() if value is not None}
        headers = {} if kid is None else {"kid": kid or key.kid}
        return jwt.encode(body, key.private, algorithm=key.algorithm, headers=headers)


@contextmanager
def serving(provider: Provider) -> Iterator[Provider]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            provider.hits[self.path] += 1
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": provider.issuer, "jwks_uri": f"{provider.issuer}/jwks"}
            elif self.path == "/jwks":
                body = {"keys": [key.jwk() for key in provider.published]}
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    provider.issuer = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield provider
    finally:
        server.shutdown()
        server.server_close()


RSA_KEY = SigningKey.rsa("rsa-1")
EC_KEY = SigningKey.ec("ec-1")


@pytest.fixture
def provider() -> Iterator[Provider]:
    with serving(Provider(published=[RSA_KEY, EC_KEY])) as running:
        yield running


@asynccontextmanager
async def oidc_gateway(
    api: Api, provider: Provider, **settings: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Fakes]]:
    async with api(
        auth_mode="oidc",
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        **settings,
    ) as (client, fakes):
        del client.headers["Authorization"]
        yield client, fakes


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def handmade(header: dict[str, Any], claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A JWT put together by hand, as an attacker would: PyJWT refuses to make these."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def claims_of(provider: Provider) -> dict[str, Any]:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": AUDIENCE, "sub": "ann", "tenant": "acme",
            "scope": "read chat", "iat": now, "exp": now + 600}  # fmt: skip


async def test_tokens_signed_by_the_providers_rsa_and_ec_keys_are_accepted(
    api: Api, provider: Provider
) -> None:
    async with oidc_gateway(api, provider) as (client, fakes):
        for key in (RSA_KEY, EC_KEY):
            response = await client.get("/v1/conversations", headers=bearer(provider.token(key)))
            assert response.status_code == 200, response.text
        assert [call.method for call in fakes.calls] == ["ListConversations"] * 2
        # The keys came from the issuer's discovery document, fetched once.
        assert provider.hits == {"/.well-known/openid-configuration": 1, "/jwks": 1}


@pytest.mark.parametrize(
    ("claims", "code", "says"),
    [
        ({"iss": "https://evil.example"}, "invalid_token", "issuer"),
        ({"aud": "another-api"}, "invalid_token", "audience"),
        ({"aud": None}, "invalid_token", "not valid"),
        ({"exp": int(time.time()) - 120}, "token_expired", "expired"),
        ({"exp": None}, "invalid_token", "not valid"),
        ({"nbf": int(time.time()) + 600}, "token_not_yet_valid", "not valid yet"),
        ({"exp": int(time.time()) + 3 * 86_400}, "token_lifetime_too_long", "86400"),
        ({"tenant": None}, "invalid_token", "tenant"),
        ({"sub": "has space"}, "invalid_token", "printable"),
    ],
)
async def test_a_token_with_wrong_claims_is_refused(
    api: Api, provider: Provider, error_of: ErrorOf, claims: dict[str, Any], code: str, says: str
) -> None:
    async with oidc_gateway(api, provider) as (client, fakes):
        token = provider.token(RSA_KEY, **claims)
        error = error_of(await client.get("/v1/conversations", headers=bearer(token)), 401, code)
        assert says in error["message"]
        assert fakes.calls == []


async def test_small_clock_skew_is_tolerated(api: Api, provider: Provider) -> None:
    async with oidc_gateway(api, provider, oidc_leeway_seconds=30) as (client, _):
        now = int(time.time())
        skewed = provider.token(RSA_KEY, exp=now - 10, nbf=now + 10, iat=now + 10)
        assert (await client.get("/v1/conversations", headers=bearer(skewed))).status_code == 200


async def test_a_token_signed_by_an_unknown_key_is_refused_and_refetches_rarely(
    api: Api, provider: Provider, error_of: ErrorOf
) -> None:
    stranger = SigningKey.rsa("rsa-1")  # the provider's key id, another key
    ghost = SigningKey.rsa("ghost")
    async with oidc_gateway(api, provider, oidc_jwks_refresh_min_seconds=60) as (client, _):
        good = await client.get("/v1/conversations", headers=bearer(provider.token(RSA_KEY)))
        assert good.status_code == 200
        for _ in range(5):
            for key in (stranger, ghost):
                token = provider.token(key)
                response = await client.get("/v1/conversations", headers=bearer(token))
                error_of(response, 401, "invalid_token")
        # Tokens with made-up key ids do not make the gateway hammer the provider.
        assert provider.hits["/jwks"] == 1


async def test_a_rotated_key_is_picked_up_without_a_restart(
    api: Api, provider: Provider, error_of: ErrorOf
) -> None:
    provider.published = [RSA_KEY]
    rotated = SigningKey.rsa("rsa-2")
    async with oidc_gateway(api, provider, oidc_jwks_refresh_min_seconds=0.2) as (client, _):
        before = await client.get("/v1/conversations", headers=bearer(provider.token(RSA_KEY)))
        assert before.status_code == 200
        provider.published = [rotated]  # the provider rotates: the old key is withdrawn
        await asyncio.sleep(0.3)
        after = await client.get("/v1/conversations", headers=bearer(provider.token(rotated)))
        assert after.status_code == 200, after.text
        assert provider.hits["/jwks"] == 2
        await asyncio.sleep(0.3)
        # A new token signed with the withdrawn key is refused.
        old = provider.token(RSA_KEY, jti="fresh")
        error_of(await client.get("/v1/conversations", headers=bearer(old)), 401, "invalid_token")


async def test_alg_none_and_hs256_tokens_are_refused(
    api: Api, provider: Provider, error_of: ErrorOf
) -> None:
    claims = claims_of(provider)
    unsigned = handmade({"alg": "none", "typ": "JWT", "kid": "rsa-1"}, claims, lambda _: b"")
    # The classic confusion: HMAC keyed with the provider's public key, which anyone has.
    confused = handmade(
        {"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
        claims,
        lambda data: hmac.new(RSA_KEY.public_pem(), data, hashlib.sha256).digest(),
    )
    development = issue_token(Settings().auth_secret, "parley", tenant="acme", user="ann")
    # RS256 in the header, the EC key's id: the algorithm must match the key.
    mismatched = handmade(
        {"alg": "RS256", "typ": "JWT", "kid": "ec-1"},
        claims,
        lambda data: jwt.get_algorithm_by_name("RS256").sign(data, RSA_KEY.private),
    )
    async with oidc_gateway(api, provider) as (client, fakes):
        for token in (unsigned, confused, development, mismatched):
            response = await client.get("/v1/conversations", headers=bearer(token))
            error_of(response, 401, "invalid_token")
        assert fakes.calls == []


async def test_a_provider_that_cannot_be_reached_is_a_503(api: Api, error_of: ErrorOf) -> None:
    with serving(Provider(published=[RSA_KEY])) as gone:
        issuer = gone.issuer
    token = Provider(issuer=issuer).token(RSA_KEY)
    down = Provider(issuer=issuer)
    async with oidc_gateway(api, down, oidc_http_timeout_seconds=1) as (client, _):
        response = await client.get("/v1/conversations", headers=bearer(token))
        error_of(response, 503, "identity_provider_unavailable")
        assert response.headers["retry-after"]


async def test_tenant_user_and_scopes_come_from_the_configured_claims(
    api: Api, provider: Provider, error_of: ErrorOf
) -> None:
    settings = {
        "oidc_tenant_claim": "org.id",
        "oidc_user_claim": "email",
        "oidc_scopes_claim": "https://parley.example/scopes",
        "oidc_jwks_url": f"{provider.issuer}/jwks",
    }
    async with oidc_gateway(api, provider, **settings) as (client, _):
        admin = provider.token(
            EC_KEY,
            org={"id": "globex"},
            email="ann@globex.example",
            tenant="acme",
            scope="read",
            **{"https://parley.example/scopes": ["admin", "read"]},
        )
        made = await client.post(
            "/v1/admin/api-keys", json={"name": "k", "scopes": ["read"]}, headers=bearer(admin)
        )
        assert made.status_code == 201, made.text
        assert made.json()["created_by"] == "ann@globex.example"
        # The key belongs to globex (the nested claim), not acme (the ``tenant`` claim).
        acme_admin = provider.token(
            EC_KEY,
            org={"id": "acme"},
            email="bob@acme.example",
            **{"https://parley.example/scopes": "admin read"},
        )
        listed = await client.get("/v1/admin/api-keys", headers=bearer(acme_admin))
        assert listed.json()["api_keys"] == []
        reader = provider.token(
            EC_KEY,
            org={"id": "globex"},
            email="c@globex.example",
            **{"https://parley.example/scopes": ["read"]},
        )
        error_of(
            await client.get("/v1/admin/api-keys", headers=bearer(reader)), 403, "missing_scope"
        )
        # The JWKS URL was given: no discovery.
        assert provider.hits["/.well-known/openid-configuration"] == 0


async def test_oidc_mode_needs_an_issuer_and_an_audience() -> None:
    with pytest.raises(ValueError, match="OIDC_ISSUER and OIDC_AUDIENCE"):
        Settings(auth_mode="oidc", oidc_issuer="https://id.example")
    with pytest.raises(ValueError, match="OIDC_JWKS_URL is needed"):
        Settings(auth_mode="oidc", oidc_issuer="acme-idp", oidc_audience=AUDIENCE)
    with pytest.raises(ValueError, match="OIDC_JWKS_URL must be"):
        Settings(
            auth_mode="oidc",
            oidc_issuer="https://id.example",
            oidc_audience=AUDIENCE,
            oidc_jwks_url="file:///etc/passwd",
        )
    with pytest.raises(ValueError, match="https"):
        Settings(
            auth_mode="oidc",
            oidc_issuer="http://id.example",
            oidc_audience=AUDIENCE,
            parley_env="production",
        )
    # In production an OIDC gateway needs no AUTH_SECRET: it accepts no development tokens.
    Settings(
        auth_mode="oidc",
        oidc_issuer="https://id.example",
        oidc_audience=AUDIENCE,
        parley_env="production",
    )
