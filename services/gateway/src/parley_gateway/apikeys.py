"""API keys: credentials for servers and integrations, kept by the gateway.

A key reads ``pk_<prefix>_<secret>`` (12 and 40 characters of ``A-Z a-z 0-9``, about 71 and
238 random bits) and is sent as ``Authorization: Bearer pk_...``, as OpenAI's SDKs send theirs.
It is shown once, when it is made: the table holds its prefix, to find it, and the SHA-256 of
the whole key, to check it (a slow hash adds nothing for a key this random), compared in
constant time. Each key belongs to one tenant, acts as one user with a subset of the scopes
of the admin who made it, and may expire; revoking it stamps ``revoked_at``.

:class:`ApiKeys` authenticates a key. A replica trusts what it looked up for
``API_KEY_CACHE_SECONDS`` (unknown prefixes too, so random keys cost no query each), so a
revocation reaches every replica within that time and at once on the one that revoked it.
``last_used_at`` is written in the background at most every ``API_KEY_LAST_USED_SECONDS`` per
key, never on the request's path.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import re
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Row, Table, and_, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from parley_gateway.tables import ApiKeyRow
from parley_runtime.context import Principal
from parley_runtime.errors import Unauthenticated, Unavailable
from parley_runtime.ids import new_id
from parley_runtime.timestamps import aware, utcnow

log = logging.getLogger("parley.gateway")

KEY_MARK = "pk_"
_ALPHABET = string.ascii_letters + string.digits
PREFIX_LENGTH = 12
SECRET_LENGTH = 40
_KEY = re.compile(rf"pk_([A-Za-z0-9]{{{PREFIX_LENGTH}}})_[A-Za-z0-9]{{{SECRET_LENGTH}}}")
# Lookups a replica remembers; past this the oldest are forgotten.
_CACHE_ENTRIES = 10_000
_TABLE = cast(Table, ApiKeyRow.__table__)


def is_api_key(credential: str) -> bool:
    """Whether a bearer credential is meant as an API key (not a JWT)."""
    return credential.startswith(KEY_MARK)


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def digest(key: str) -> str:
    """What the table holds of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key as an admin sees it: everything but the key."""

    id: str
    tenant_id: str
    user_id: str
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


def _api_key(row: Row[tuple[object, ...]]) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        tenant_id=m["tenant_id"],
        user_id=m["user_id"],
        name=m["name"],
        prefix=KEY_MARK + m["prefix"],
        scopes=tuple(m["scopes"].split()),
        created_by=m["created_by"],
        created_at=aware(m["created_at"]),
        expires_at=aware(m["expires_at"]) if m["expires_at"] else None,
        last_used_at=aware(m["last_used_at"]) if m["last_used_at"] else None,
        revoked_at=aware(m["revoked_at"]) if m["revoked_at"] else None,
    )


class ApiKeyStore:
    """The ``api_keys`` table. Every call an admin makes names the tenant; only
    :meth:`find`, which authenticates, looks a key up by its prefix alone."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        *,
        tenant_id: str,
        user_id: str,
        name: str,
        scopes: Sequence[str],
        created_by: str,
        expires_at: datetime | None,
    ) -> tuple[ApiKey, str]:
        """A new key and the key itself, the only time it is known."""
        for _ in range(3):
            prefix, secret = _random(PREFIX_LENGTH), _random(SECRET_LENGTH)
            key = f"{KEY_MARK}{prefix}_{secret}"
            values = {
                "id": new_id("key"),
                "tenant_id": tenant_id,
                "user_id": user_id,
                "name": name,
                "prefix": prefix,
                "secret_hash": digest(key),
                "scopes": " ".join(sorted(set(scopes))),
                "created_by": created_by,
                "created_at": utcnow(),
                "expires_at": expires_at,
                "last_used_at": None,
                "revoked_at": None,
            }
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(_TABLE.insert().values(**values))
            except IntegrityError:  # a prefix drawn twice: draw again
                continue
            return await self._get(tenant_id, str(values["id"])), key
        raise RuntimeError("could not draw an unused API key prefix")

    async def page(self, tenant_id: str, size: int, after: str | None) -> list[ApiKey]:
        """Up to ``size`` keys of the tenant, newest first (ids sort by time), after ``after``."""
        query = select(_TABLE).where(_TABLE.c.tenant_id == tenant_id)
        if after is not None:
            query = query.where(_TABLE.c.id < after)
        query = query.order_by(_TABLE.c.id.desc()).limit(size)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_api_key(row) for row in rows]

    async def get(self, tenant_id: str, key_id: str) -> ApiKey | None:
        query = select(_TABLE).where(_TABLE.c.tenant_id == tenant_id, _TABLE.c.id == key_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else _api_key(row)

    async def _get(self, tenant_id: str, key_id: str) -> ApiKey:
        found = await self.get(tenant_id, key_id)
        assert found is not None
        return found

    async def revoke(self, tenant_id: str, key_id: str) -> ApiKey | None:
        """Revoke the tenant's key (once: a second revocation keeps the first time)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_TABLE)
                .where(
                    _TABLE.c.tenant_id == tenant_id,
                    _TABLE.c.id == key_id,
                    _TABLE.c.revoked_at.is_(None),
                )
                .values(revoked_at=utcnow())
            )
        return await self.get(tenant_id, key_id)

    async def revoke_user(self, tenant_id: str, user_id: str) -> list[str]:
        """Revoke every key of the tenant that acts as ``user_id``; the prefixes of those
        revoked now (keys revoked before keep their time)."""
        live = and_(
            _TABLE.c.tenant_id == tenant_id,
            _TABLE.c.user_id == user_id,
            _TABLE.c.revoked_at.is_(None),
        )
        async with self.engine.begin() as conn:
            prefixes = list((await conn.execute(select(_TABLE.c.prefix).where(live))).scalars())
            if prefixes:
                await conn.execute(update(_TABLE).where(live).values(revoked_at=utcnow()))
        return prefixes

    async def find(self, prefix: str) -> tuple[ApiKey, str] | None:
        """The key with ``prefix`` (without ``pk_``) and its hash, whatever its tenant."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(_TABLE).where(_TABLE.c.prefix == prefix))).first()
        return None if row is None else (_api_key(row), row._mapping["secret_hash"])

    async def touch(self, key_id: str, every: float) -> None:
        """Stamp ``last_used_at``, unless some replica did within ``every`` seconds."""
        now = utcnow()
        stale = now - timedelta(seconds=every)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(_TABLE)
                .where(
                    and_(
                        _TABLE.c.id == key_id,
                        or_(_TABLE.c.last_used_at.is_(None), _TABLE.c.last_used_at <= stale),
                    )
                )
                .values(last_used_at=now)
            )


@dataclass(frozen=True, slots=True)
class _Known:
    """A looked-up key, as authentication needs it."""

    key: ApiKey
    secret_hash: str
    principal: Principal
    expires: float | None


class ApiKeys:
    """Authenticates API keys against the store, through a short per-replica cache."""

    def __init__(
        self,
        store: ApiKeyStore,
        cache_seconds: float,
        last_used_seconds: float,
        lookup_timeout: float = 5.0,
    ) -> None:
        self.store = store
        self.cache_seconds = cache_seconds
        self.last_used_seconds = last_used_seconds
        self.lookup_timeout = lookup_timeout
        self._cache: dict[str, tuple[float, _Known | None]] = {}
        self._loading: dict[str, asyncio.Future[_Known | None]] = {}
        # Bumped by forget(): a lookup that began before it does not refill the cache.
        self._epoch = 0
        self._touch_due: dict[str, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    async def authenticate(self, credential: str) -> tuple[Principal, str]:
        """The principal of a valid, live key, and the key's id; else
        :class:`Unauthenticated` saying why (nothing of the key in the message)."""
        match = _KEY.fullmatch(credential)
        if match is None:
            raise Unauthenticated("the API key is not valid", code="invalid_api_key")
        known = await self._lookup(match.group(1))
        if known is None or not hmac.compare_digest(known.secret_hash, digest(credential)):
            raise Unauthenticated("the API key is not valid", code="invalid_api_key")
        if known.key.revoked_at is not None:
            raise Unauthenticated("the API key has been revoked", code="api_key_revoked")
        if known.expires is not None and known.expires <= time.time():
            raise Unauthenticated("the API key has expired", code="api_key_expired")
        self._touch(known.key.id)
        return known.principal, known.key.id

    def forget(self, prefix: str) -> None:
        """Drop what this replica knows of a key (``pk_`` + prefix), after a change to it."""
        self._epoch += 1
        self._cache.pop(prefix.removeprefix(KEY_MARK), None)

    async def _lookup(self, prefix: str) -> _Known | None:
        cached = self._cache.get(prefix)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        # Concurrent requests with the same key share one query.
        loading = self._loading.get(prefix)
        if loading is None:
            loading = asyncio.ensure_future(self._load(prefix))
            self._loading[prefix] = loading
            loading.add_done_callback(functools.partial(self._loaded, prefix))
        return await asyncio.shield(loading)

    def _loaded(self, prefix: str, future: asyncio.Future[_Known | None]) -> None:
        self._loading.pop(prefix, None)
        if not future.cancelled():
            future.exception()  # retrieved, even when every waiter has gone

    async def _load(self, prefix: str) -> _Known | None:
        epoch = self._epoch
        try:
            async with asyncio.timeout(self.lookup_timeout):
                found = await self.store.find(prefix)
        except (SQLAlchemyError, OSError):  # TimeoutError is an OSError
            log.warning("API keys cannot be looked up", exc_info=True)
            raise Unavailable(
                "API keys cannot be checked now", code="identity_unavailable"
            ) from None
        known = None
        if found is not None:
            key, secret_hash = found
            known = _Known(
                key,
                secret_hash,
                Principal(key.tenant_id, key.user_id, frozenset(key.scopes)),
                key.expires_at.timestamp() if key.expires_at else None,
            )
        if self.cache_seconds > 0 and epoch == self._epoch:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[prefix] = (time.monotonic() + self.cache_seconds, known)
        return known

    def _touch(self, key_id: str) -> None:
        now = time.monotonic()
        if self._touch_due.get(key_id, 0.0) > now:
            return
        if len(self._touch_due) >= _CACHE_ENTRIES:
            self._touch_due.clear()
        self._touch_due[key_id] = now + self.last_used_seconds
        task = asyncio.create_task(self._write_last_used(key_id))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _write_last_used(self, key_id: str) -> None:
        try:
            await self.store.touch(key_id, self.last_used_seconds)
        except (SQLAlchemyError, OSError):
            log.warning("could not record an API key's use", extra={"api_key_id": key_id})

    async def close(self) -> None:
        """Let the last ``last_used_at`` writes finish (briefly)."""
        if self._touches:
            await asyncio.wait(self._touches, timeout=2.0)
