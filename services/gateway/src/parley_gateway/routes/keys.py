"""A tenant's API keys, managed by its admins (the ``admin`` scope).

The tenant is always the admin's own; another tenant's key is a 404, as an unknown one is.
The key itself is in the answer to its creation only; lists and reads show its ``prefix``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from fastapi import APIRouter, Query, Request, Response
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from parley_gateway.apikeys import ApiKey, ApiKeys
from parley_gateway.auth import PRINCIPAL_ID_PATTERN, SCOPES, require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.inputs import PageToken, ResourceId, Text
from parley_gateway.limits.http import RATE_LIMITED
from parley_runtime.context import Principal
from parley_runtime.errors import InvalidArgument, NotFound, PermissionDenied
from parley_runtime.pagination import decode_cursor, encode_cursor
from parley_runtime.timestamps import utcnow

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], route_class=CappedRoute, dependencies=[RATE_LIMITED]
)
Admin = Annotated[Principal, require("admin")]
Scope = Literal["read", "chat", "documents", "usage", "admin"]
assert set(get_args(Scope)) == set(SCOPES), "the scopes a key may have are all the scopes"


class CreateApiKeyBody(BaseModel):
    """A new API key of the admin's tenant."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "nightly document sync", "scopes": ["read", "documents"]},
                {
                    "name": "support bot",
                    "scopes": ["chat", "read"],
                    "user_id": "support-bot",
                    "expires_at": "2030-01-01T00:00:00Z",
                },
            ]
        },
    )

    name: Text = Field(min_length=1, max_length=200, description="What the key is for.")
    scopes: list[Scope] = Field(
        min_length=1, max_length=5, description="What the key may do; scopes the admin holds."
    )
    user_id: str | None = Field(
        None,
        pattern=PRINCIPAL_ID_PATTERN,
        description="The user the key acts as; the admin when left out.",
    )
    expires_at: AwareDatetime | None = Field(
        None, description="When the key stops working (with its time zone); never when null."
    )


def _keys(request: Request) -> ApiKeys:
    keys: ApiKeys = request.app.state.identity.keys
    return keys


def _stamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": key.prefix,
        "scopes": list(key.scopes),
        "user_id": key.user_id,
        "created_by": key.created_by,
        "created_at": _stamp(key.created_at),
        "expires_at": _stamp(key.expires_at),
        "last_used_at": _stamp(key.last_used_at),
        "revoked_at": _stamp(key.revoked_at),
    }


@router.post(
    "/api-keys",
    status_code=201,
    responses=responses(400, 401, 403, 413, 422, 429, 500, 503),
)
async def create_api_key(body: CreateApiKeyBody, request: Request, admin: Admin) -> dict[str, Any]:
    """Make an API key; the answer's ``key`` is the only time it is shown."""
    not_held = sorted(set(body.scopes) - admin.scopes)
    if not_held:
        raise PermissionDenied(
            f"body.scopes: a key cannot have scopes its creator lacks: {', '.join(not_held)}",
            code="scope_not_held",
        )
    if body.expires_at is not None and body.expires_at <= utcnow():
        raise InvalidArgument("body.expires_at: must be in the future", code="invalid_expiry")
    created, key = await _keys(request).store.create(
        tenant_id=admin.tenant_id,
        user_id=body.user_id or admin.user_id,
        name=body.name,
        scopes=body.scopes,
        created_by=admin.user_id,
        expires_at=body.expires_at,
    )
    return {**_view(created), "key": key}


@router.get("/api-keys", responses=responses(401, 403, 422, 429, 500, 503))
async def list_api_keys(
    request: Request,
    admin: Admin,
    page_size: Annotated[int, Query(ge=1, le=100)] = 50,
    page_token: PageToken = "",
) -> dict[str, Any]:
    """The tenant's API keys, newest first, revoked ones included; never the keys themselves."""
    after = str(decode_cursor(page_token, 1)[0]) if page_token else None
    found = await _keys(request).store.page(admin.tenant_id, page_size + 1, after)
    more = len(found) > page_size
    page = found[:page_size]
    return {
        "api_keys": [_view(key) for key in page],
        "next_page_token": encode_cursor(page[-1].id) if more else None,
    }


@router.get("/api-keys/{key_id}", responses=responses(401, 403, 404, 422, 429, 500, 503))
async def get_api_key(key_id: ResourceId, request: Request, admin: Admin) -> dict[str, Any]:
    """One of the tenant's API keys."""
    found = await _keys(request).store.get(admin.tenant_id, key_id)
    if found is None:
        raise NotFound("no such API key", code="api_key_not_found")
    return _view(found)


@router.delete(
    "/api-keys/{key_id}", status_code=204, responses=responses(401, 403, 404, 422, 429, 500, 503)
)
async def revoke_api_key(key_id: ResourceId, request: Request, admin: Admin) -> Response:
    """Revoke an API key: refused at once by this replica, by every replica within
    ``API_KEY_CACHE_SECONDS``. Revoking it again changes nothing."""
    keys = _keys(request)
    revoked = await keys.store.revoke(admin.tenant_id, key_id)
    if revoked is None:
        raise NotFound("no such API key", code="api_key_not_found")
    keys.forget(revoked.prefix)
    return Response(status_code=204)
