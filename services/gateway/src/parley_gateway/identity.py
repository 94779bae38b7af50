"""Which credential a caller sent, and whose it is: API keys, OIDC tokens, development tokens.

:class:`Identity` is opened once at startup (the gateway's database, migrated when
``DB_AUTO_MIGRATE`` is on; the OIDC keys in ``AUTH_MODE=oidc``) and answers
:meth:`Identity.authenticate` for every request. A JWT costs no database query; an API key
costs one per ``API_KEY_CACHE_SECONDS`` per replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from parley_gateway import apikeys
from parley_gateway.apikeys import ApiKeys, ApiKeyStore
from parley_gateway.auth import verify_token
from parley_gateway.oidc import ClaimNames, Jwks, OidcVerifier
from parley_gateway.settings import Settings
from parley_runtime import db
from parley_runtime.context import Principal

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version_gateway"


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A caller: its principal, and the id of the API key it used, if it used one."""

    principal: Principal
    api_key_id: str | None = None


class Identity:
    """Turns a bearer credential into an :class:`Authenticated` caller."""

    def __init__(self, settings: Settings, keys: ApiKeys, oidc: OidcVerifier | None) -> None:
        self.settings = settings
        self.keys = keys
        self.oidc = oidc

    @classmethod
    async def open(cls, settings: Settings) -> Identity:
        if settings.db_auto_migrate:
            await db.upgrade(MIGRATIONS, settings.database_url, VERSION_TABLE)
        engine = db.create_engine(settings.database_url)
        keys = ApiKeys(
            ApiKeyStore(engine),
            settings.api_key_cache_seconds,
            settings.api_key_last_used_seconds,
            lookup_timeout=settings.request_timeout_seconds,
        )
        oidc = None
        if settings.auth_mode == "oidc":
            jwks = Jwks(
                settings.oidc_issuer,
                settings.oidc_jwks_url,
                max_age=settings.oidc_jwks_cache_seconds,
                min_refresh=settings.oidc_jwks_refresh_min_seconds,
                timeout=settings.oidc_http_timeout_seconds,
            )
            oidc = OidcVerifier(
                jwks,
                audience=settings.oidc_audience,
                claims=ClaimNames(
                    settings.oidc_tenant_claim, settings.oidc_user_claim, settings.oidc_scopes_claim
                ),
                leeway=settings.oidc_leeway_seconds,
                max_lifetime=settings.auth_max_token_lifetime_seconds,
            )
        return cls(settings, keys, oidc)

    async def authenticate(self, credential: str) -> Authenticated:
        """The caller ``credential`` proves, else :class:`Unauthenticated` saying why."""
        if apikeys.is_api_key(credential):
            principal, key_id = await self.keys.authenticate(credential)
            return Authenticated(principal, key_id)
        if self.oidc is not None:
            return Authenticated(await self.oidc.verify(credential))
        settings = self.settings
        return Authenticated(
            verify_token(
                credential,
                settings.auth_secret,
                settings.auth_issuer,
                settings.auth_max_token_lifetime_seconds,
            )
        )

    async def close(self) -> None:
        await self.keys.close()
        await self.keys.store.engine.dispose()
