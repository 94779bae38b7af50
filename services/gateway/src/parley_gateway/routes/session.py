"""Who the caller is (``GET /v1/me``), and the development sign-in of the chat page.

``POST /v1/dev/sign-in`` hands out a development token for any tenant and user, signed with
``AUTH_SECRET``, as ``parley-gateway token`` does on the command line. It answers only when
``DEV_SIGN_IN`` is on, which ``make run`` sets and which settings refuse in production or with
OIDC; otherwise it is a 404 saying so. It is left out of the OpenAPI document: it is no part of
a deployed API.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from parley_gateway.auth import (
    DEFAULT_SCOPES,
    DEFAULT_TTL_SECONDS,
    PRINCIPAL_ID_PATTERN,
    PUBLIC,
    issue_token,
    require,
)
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.limits.http import RATE_LIMITED
from parley_gateway.settings import Settings
from parley_runtime.context import Principal
from parley_runtime.errors import NotFound

router = APIRouter(prefix="/v1", tags=["session"], route_class=CappedRoute)


class DevSignInBody(BaseModel):
    """The tenant and user a development token is for."""

    model_config = ConfigDict(extra="forbid")

    tenant: str = Field(pattern=PRINCIPAL_ID_PATTERN)
    user: str = Field(pattern=PRINCIPAL_ID_PATTERN)


@router.post("/dev/sign-in", include_in_schema=False, dependencies=[PUBLIC])
async def dev_sign_in(body: DevSignInBody, request: Request) -> dict[str, Any]:
    """A development token for ``tenant`` and ``user``, with the default scopes."""
    settings: Settings = request.app.state.settings
    if not settings.dev_sign_in:
        raise NotFound(
            "the development sign-in is off (DEV_SIGN_IN); sign in with a bearer token",
            code="dev_sign_in_off",
        )
    token = issue_token(
        settings.auth_secret, settings.auth_issuer, tenant=body.tenant, user=body.user
    )
    return {
        "token": token,
        "token_type": "Bearer",
        "expires_in": DEFAULT_TTL_SECONDS,
        "tenant_id": body.tenant,
        "user_id": body.user,
        "scopes": list(DEFAULT_SCOPES),
    }


@router.get("/me", responses=responses(401, 403, 429, 500, 503), dependencies=[RATE_LIMITED])
async def whoami(request: Request, caller: Annotated[Principal, require("read")]) -> dict[str, Any]:
    """The caller as the gateway knows them: tenant, user, scopes, and the kind of credential
    (``api_key`` or ``token``)."""
    api_key = getattr(request.state, "api_key_id", None)
    return {
        "tenant_id": caller.tenant_id,
        "user_id": caller.user_id,
        "scopes": sorted(caller.scopes),
        "credential": "api_key" if api_key else "token",
    }
