"""The caller's limits and what is left of them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from parley_gateway.auth import require
from parley_gateway.body_limit import CappedRoute
from parley_gateway.errors import responses
from parley_gateway.limits.http import RATE_LIMITED, api_key_id, limiter_of
from parley_runtime.context import Principal

router = APIRouter(prefix="/v1", tags=["limits"], route_class=CappedRoute)


class RateStanding(BaseModel):
    """A request rate and where it stands now."""

    limit: int = Field(description="Requests that may go at once.")
    per_period: int = Field(description="Requests per period, sustained.")
    period_seconds: float
    remaining: int = Field(description="Requests that may go now.")
    reset_seconds: int = Field(description="Seconds until the limit is whole again.")


class StreamsStanding(BaseModel):
    """Streamed answers that may be open at once, and those open now."""

    limit: int
    open: int


class QuotaStanding(BaseModel):
    """Tokens (prompt and answer) of a day or a month, UTC."""

    limit: int | None = Field(description="None: no quota, only counted.")
    used: int
    remaining: int | None
    resets_at: str = Field(description="When the period ends (ISO 8601, UTC).")


class Limits(BaseModel):
    """Every limit of the caller: rates per route class (``chat``, ``documents``, ``reads``) and
    subject (``api_key`` when the caller used one, ``user``, ``tenant``; None is unlimited),
    concurrent streams, and token quotas per day and month."""

    tier: str
    rates: dict[str, dict[str, RateStanding | None]]
    streams: dict[str, StreamsStanding | None]
    tokens: dict[str, dict[str, QuotaStanding]]


_RATE = {"limit": 120, "per_period": 120, "period_seconds": 60.0, "remaining": 117,
         "reset_seconds": 2}  # fmt: skip
_QUOTA = {"limit": 200000, "used": 5120, "remaining": 194880,
          "resets_at": "2026-03-02T00:00:00Z"}  # fmt: skip
EXAMPLE: dict[str, Any] = {
    "tier": "standard",
    "rates": {
        "chat": {"user": _RATE, "tenant": {**_RATE, "limit": 1200, "per_period": 1200}},
        "documents": {"user": _RATE, "tenant": None},
        "reads": {"user": {**_RATE, "limit": 1200, "per_period": 1200}, "tenant": None},
    },
    "streams": {"user": {"limit": 32, "open": 1}, "tenant": {"limit": 512, "open": 14}},
    "tokens": {
        "user": {"day": _QUOTA, "month": {**_QUOTA, "limit": None, "remaining": None}},
        "tenant": {"day": {**_QUOTA, "limit": None, "remaining": None}, "month": _QUOTA},
    },
}


@router.get(
    "/limits",
    response_model=Limits,
    dependencies=[RATE_LIMITED],
    responses={
        200: {"content": {"application/json": {"example": EXAMPLE}}},
        **responses(401, 403, 429, 500, 503),
    },
)
async def get_limits(
    request: Request, caller: Annotated[Principal, require("read")]
) -> dict[str, Any]:
    """The caller's tier, its request rates, concurrent streams and token quotas, and what is
    left of each now. Reading them uses nothing but one request of the ``reads`` class."""
    return await limiter_of(request).snapshot(caller, api_key_id(request))
